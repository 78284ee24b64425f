"""The package installs what it uses: a built wheel declares every third-party module its code
imports (core, or the extra that needs it), carries its licence and type marker, and has one
version."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imported_modules(package: Path) -> dict[str, set[str]]:
    """Top-level third-party modules imported anywhere in the package -> the files importing them."""
    found: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                     else [])
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "recsys_hyper":
                    found.setdefault(top, set()).add(str(path.relative_to(package)))
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q",
                    "-w", str(out)], check=True, capture_output=True)
    (built,) = out.glob("recsys_hyper-*.whl")
    return built


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_wheel_declares_every_module_its_code_imports(wheel):
    import recsys_hyper

    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        names = z.namelist()
    assert re.search(r"^Version: (.+)$", meta, re.M).group(1) == recsys_hyper.__version__
    core, extras = set(), {}
    for line in re.findall(r"^Requires-Dist: (.+)$", meta, re.M):
        dist = _normal(re.match(r"[A-Za-z0-9_.\-]+", line).group(0))
        extra = re.search(r"extra == ['\"]([^'\"]+)['\"]", line)
        (extras.setdefault(extra.group(1), set()) if extra else core).add(dist)
    declared = core | set().union(*extras.values())
    providers = packages_distributions()
    missing = {}
    for module, files in _imported_modules(ROOT / "recsys_hyper").items():
        dists = {_normal(d) for d in providers.get(module, [module])}
        if not dists & declared:
            missing[module] = sorted(files)
    assert not missing, f"imported but not declared: {missing}"
    # the heavy optional parts stay out of the core
    assert not {"scikit-learn", "papermill", "nbconvert", "ipykernel", "pyspark", "pytest"} & core, core
    assert {"papermill", "nbformat", "nbconvert", "ipykernel", "scikit-learn"} <= extras["notebook"]
    assert "pyspark" in extras["spark"]
    # its licence, its type marker and the notebook ship in the wheel
    assert any(n.endswith("licenses/LICENSE") for n in names), names
    assert "recsys_hyper/py.typed" in names and "recsys_hyper/notebooks/cold_start_analysis.ipynb" in names


def test_evaluate_notebook_without_the_extra_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    """Not after minutes of evaluation with a traceback: at once, naming the extra."""
    import importlib.util

    from recsys_hyper.cli import main
    from recsys_hyper.data.synthetic import generate, preset

    generate(preset("tiny", n_users=60, seed=1), tmp_path / "ds")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "papermill" else real(name, *a))
    assert main(["evaluate", "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "ev"), "--notebook",
                 "--methods", "popularity", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--notebook needs the notebook extra (papermill not installed): pip install 'recsys-hyper[notebook]'" in err
    assert not (tmp_path / "ev").exists()
