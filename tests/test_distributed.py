"""Meta-training on several processes with PyTorch DDP (torchrun, gloo): same quality as one."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path


from recsys_hyper.data.synthetic import generate, preset

CONFIG = "[model]\ndim = 8\nhidden = 16\nz_dim = 16\n[train]\nepochs = 8\npatience = 8\nk_max = 5\nbatch_users = 32\n"


def _best(model_dir: Path) -> dict:
    meta = json.loads((model_dir / "model.json").read_text())["training"]
    return meta["history"][meta["best_epoch"]]


def test_two_processes_train_to_the_quality_of_one(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        torchrun = shutil.which("torchrun")
    assert torchrun, "torchrun comes with torch; it must be on the virtual environment's path"
    generate(preset("tiny", n_users=400, seed=12), tmp_path / "ds")
    (tmp_path / "c.toml").write_text(CONFIG)
    args = ["-m", "recsys_hyper.cli", "train", "--data", str(tmp_path / "ds"), "--config", str(tmp_path / "c.toml"),
            "--no-track", "--no-progress"]
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", *args, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "on 2 processes" in two.stdout
    a, b = _best(tmp_path / "one"), _best(tmp_path / "two")
    assert abs(a["val_mae"] - b["val_mae"]) < 0.03, (a["val_mae"], b["val_mae"])
    assert abs(a["val_ndcg10"] - b["val_ndcg10"]) < 0.05, (a["val_ndcg10"], b["val_ndcg10"])
    assert (tmp_path / "two" / "model.pt").is_file()
