"""The cold-start analysis notebook: paired, output-free, and executed against a small real run."""

from __future__ import annotations

from pathlib import Path

import jupytext
import mlflow
import nbformat

from recsys_hyper.cli import main
from recsys_hyper.data.synthetic import generate, preset

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
FAST = "[model]\ndim = 8\nhidden = 16\nz_dim = 16\n[train]\nepochs = 3\nk_max = 5\n"


def test_the_pair_is_in_sync_and_has_no_outputs():
    py = jupytext.read(NOTEBOOKS / "cold_start_analysis.py")
    ipynb = nbformat.read(NOTEBOOKS / "cold_start_analysis.ipynb", as_version=4)
    assert [c.source for c in py.cells] == [c.source for c in ipynb.cells]
    assert all(not c.get("outputs") and not c.get("execution_count") for c in ipynb.cells if c.cell_type == "code")
    assert any("parameters" in c.metadata.get("tags", []) for c in ipynb.cells)


def test_the_notebook_runs_on_a_real_evaluation_and_draws_its_figures(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    generate(preset("tiny", n_users=300, seed=6), tmp_path / "ds")
    (tmp_path / "fast.toml").write_text(FAST)
    out = tmp_path / "eval"
    assert main(["evaluate", "--data", str(tmp_path / "ds"), "--methods", "popularity", "bias", "hyper",
                 "hyper-finetune", "--shots", "0", "1", "3", "5", "--config", str(tmp_path / "fast.toml"), "--out",
                 str(out), "--notebook", "--onboarding", "--no-progress"]) == 0
    executed = nbformat.read(out / "cold_start_analysis.ipynb", as_version=4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    # quality vs k, 3 segment figures (history, age group, gender), zero-shot vs finetune + latency, head map,
    # onboarding curves, the intervals' reliability
    assert len(figures) >= 8
    text = "".join(o.get("text", "") for o in outputs)
    assert "share inside the 50%, 80% and 90% intervals; largest miss" in text
    assert "removing the most-blamed event lowers" in text                    # the onboarding run was found
    example = executed.cells[-1].outputs
    assert any("after 5 interactions" in o.get("text", "") for o in example)
    assert any("because of" in o.get("data", {}).get("text/plain", "") for o in example)
    import pandas as pd

    assert pd.read_parquet(out / "example_user.parquet").groupby("known").size().tolist() == [10, 10, 10]
    html = (out / "cold_start_analysis.html").read_text()
    assert "Cold-start analysis" in html and "<img" in html
    # a report: no code (the executed notebook keeps it), no warnings
    assert "import tempfile" not in html and "def bootstrap" not in html and "Warning" not in html
    assert "import tempfile" in (out / "cold_start_analysis.ipynb").read_text()
    run = mlflow.search_runs(search_all_experiments=True, filter_string="tags.kind = 'cold-start-evaluation'").iloc[0]
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(run["run_id"])}
    assert "cold_start_analysis.html" in logged
