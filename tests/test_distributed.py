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


SYNC_SCRIPT = r'''
import sys
import numpy as np
import torch
import torch.distributed as dist
from recsys_hyper import Config, ModelConfig, TrainConfig
from recsys_hyper.data import Histories, IdMap, load_dataset
from recsys_hyper.data.episodes import EpisodeSampler
from recsys_hyper.networks import HyperRecModel
from recsys_hyper.numerics.features import FeatureSpec, with_pad_row
from recsys_hyper.training import TrainingData, init_distributed
from recsys_hyper.training.distributed import data_parallel, exit_distributed
from recsys_hyper.training.loop import StepLoss

rank, world = init_distributed()
assert world == 2
ds = load_dataset(sys.argv[1])
items = IdMap.from_values(ds.item_ids())
h, _ = Histories.from_interactions(ds.interactions, items)
ispec, uspec = FeatureSpec.fit(ds.items, "item_id"), FeatureSpec.fit(ds.users, "user_id")
data = TrainingData(h, uspec.transform(ds.users, h.user_ids), torch.arange(len(items) + 1),
                    with_pad_row(ispec.transform(ds.items, items.values)), np.arange(len(h)), np.arange(0), False)
cfg = Config(model=ModelConfig(dim=8, hidden=16, z_dim=16), train=TrainConfig(k_max=5))
torch.manual_seed(0)                                     # the same initial weights on every rank
model = HyperRecModel(len(items), ispec, uspec, dim=8, hidden=16, z_dim=16, id_dropout=0.0, user_feature_dropout=0.0)
rows = np.arange(32)
sup, qry = EpisodeSampler(k_max=5).sample(h.select(rows), np.random.default_rng(0), k=3)
mine = np.arange(rank, 32, 2)                            # this rank's half of the batch
sup, qry, mine = sup.select(mine), qry.select(mine), rows[mine]

def flat_grad():
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

loss, _ = StepLoss(model, data, cfg)(mine, sup, qry)     # the local gradient, without DDP
loss.backward()
local = flat_grad().clone()
model.zero_grad(set_to_none=True)
step = data_parallel(StepLoss(model, data, cfg), find_unused_parameters=False)
loss, _ = step(mine, sup, qry)
loss.backward()
synced = flat_grad()
both = [torch.zeros_like(local) for _ in range(2)]
dist.all_gather(both, local)
assert torch.allclose(synced, (both[0] + both[1]) / 2, atol=1e-6), "DDP gradient is not the average of the ranks'"
assert not torch.allclose(synced, local, atol=1e-6), "the ranks' halves gave the same gradient: no test"
torch.optim.SGD(model.parameters(), lr=0.1).step()
params = torch.cat([p.detach().flatten() for p in model.parameters()])
gathered = [torch.zeros_like(params) for _ in range(2)]
dist.all_gather(gathered, params)
assert torch.equal(gathered[0], gathered[1]), "parameters differ across ranks after a step"
print(f"rank {rank}: synchronised", flush=True)
del step, loss
exit_distributed(0)        # how the command line ends a torchrun worker
'''


def test_ddp_averages_the_ranks_gradients_and_keeps_their_weights_equal(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    generate(preset("tiny", n_users=120, seed=4), tmp_path / "ds")
    (tmp_path / "sync.py").write_text(SYNC_SCRIPT)
    run = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(tmp_path / "sync.py"),
                          str(tmp_path / "ds")], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, f"stdout: {run.stdout[-1000:]}\nstderr: {run.stderr[-3000:]}"
    assert run.stdout.count("synchronised") == 2
