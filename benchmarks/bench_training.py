"""Meta-training at scale: the same step budget on 100k and on 1M synthetic users, each in its own
process (``recsys-hyper train --max-steps N``): wall time, the training loop's own time and peak RSS.

    python benchmarks/bench_training.py [--users 1000000] [--items 10000] [--max-steps 300]

With a step budget the optimisation's cost should not depend on the number of users; what does
(reading the data, building the histories, fitting the item biases) is the rest of the wall time.
Then data-parallel training (PyTorch DDP under torchrun, gloo) on the first 20,000 users with 1
and 2 processes: episodes (users) per second of optimisation steps, validation excluded (a
step's cost does not depend on the number of users). Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scoring import CLI, run_measured, subset, synth_scale  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--items", type=int, default=10_000)
    p.add_argument("--small", type=int, default=100_000, help="users of the smaller run")
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--ddp-steps", type=int, default=200, help="steps of each DDP run (0: no DDP runs)")
    p.add_argument("--ddp-users", type=int, default=20_000)
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-train-", dir=args.workdir))
    results = []
    try:
        full = work / "full"
        t_synth = synth_scale(full, args.users, args.items)
        small = work / "small"
        subset(full, small, args.small)
        for data in (small, full):
            out = work / f"model-{data.name}"
            wall, rss = run_measured(CLI + ["train", "--data", str(data), "--out", str(out), "--max-steps",
                                            str(args.max_steps), "--no-track", "--no-progress"])
            training = json.loads((out / "model.json").read_text())["training"]
            results.append((pq.read_metadata(data / "users.parquet").num_rows,
                            pq.read_metadata(data / "interactions.parquet").num_rows, wall, training["seconds"], rss,
                            training["episodes"] / training["step_seconds"]))
            shutil.rmtree(out)
        ddp = []
        ddp_data = work / "ddp"
        subset(full, ddp_data, args.ddp_users)
        for processes in (1, 2) if args.ddp_steps else ():
            out = work / f"model-ddp{processes}"
            torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                        str(processes), "-m", "recsys_hyper.cli"]
            wall, rss = run_measured(torchrun + ["train", "--data", str(ddp_data), "--out", str(out), "--max-steps",
                                                 str(args.ddp_steps), "--epochs", "2", "--no-track", "--no-progress"])
            training = json.loads((out / "model.json").read_text())["training"]
            ddp.append((processes, training["steps"], training["step_seconds"],
                        training["episodes"] / training["step_seconds"], wall))
            shutil.rmtree(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads); synthetic users x "
          f"{args.items:,} items (generated in {t_synth:.0f} s); {args.max_steps} steps of 64 users\n")
    print("| users | interactions | wall time (s) | training loop (s) | rest (s) | episodes/s | peak RSS (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for users, rows, wall, loop, rss, eps in results:
        print(f"| {users:,} | {rows:,} | {wall:.0f} | {loop:.0f} | {wall - loop:.0f} | {eps:,.0f} | {rss:,.0f} |")
    (_, _, w0, l0, r0, e0), (_, _, w1, l1, r1, e1) = results
    print(f"\nlarge / small: wall {w1 / w0:.2f}x, training loop {l1 / l0:.2f}x, episodes/s {e1 / e0:.2f}x, "
          f"peak RSS {r1 / r0:.2f}x (target: RSS within 1.3x)")
    if ddp:
        print(f"\nDDP on {args.ddp_users:,} users ({args.ddp_steps} steps of 64 users in all, 2 epochs):\n")
        print("| processes | steps | step time (s) | episodes/s | wall time (s) |")
        print("|---:|---:|---:|---:|---:|")
        for processes, steps, seconds, eps, wall in ddp:
            print(f"| {processes} | {steps} | {seconds:.1f} | {eps:,.0f} | {wall:.0f} |")


if __name__ == "__main__":
    main()
