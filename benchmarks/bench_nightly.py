"""The nightly pipeline at scale: a first night (full training) and a second (warm start) on a
synthetic landing folder of N users, each night in its own process as `make run` runs it.

    python benchmarks/bench_nightly.py [--users 1000000] [--items 10000] [--first-max-steps 6000]

The landing folder holds the synthetic `scale` preset's events cut by time into two daily
partitions (the first carries 70% of them, the backlog). Each night runs every step (validate,
merge, split, train, evaluate, gate, score, cohort, cold_start_eval) against its own MLflow store;
the table gives each step's wall time and the night process's peak RSS when the step ended (a
high-water mark: the step where it jumps is the one that needed the memory). Targets on 2 cores
at 1M users: warm-start training <= 20 minutes, the whole night <= 45 minutes, peak RSS <= 6 GiB;
a first full training <= 60 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scoring import CLI  # noqa: E402

STEPS = ("validate", "merge", "split", "train", "evaluate", "gate", "score", "cohort", "cold_start_eval")
END_DATE = "2026-11-22"


def run_measured(args: list[str], env: dict, log: Path) -> tuple[float, float]:
    """Run a command in its own process (its output to ``log``): wall seconds and peak RSS in MiB."""
    import subprocess
    import time

    t0 = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{log.read_text()[-3000:]}")
    return time.perf_counter() - t0, usage.ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--items", type=int, default=10_000)
    p.add_argument("--first-max-steps", type=int, default=6000, help="the first night's training budget")
    p.add_argument("--warm-max-steps", type=int, default=2000, help="the second night's (warm start)")
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-nightly-", dir=args.workdir))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    try:
        landing = work / "landing"
        t_landing, rss_landing = run_measured(
            CLI + ["pipeline", "synth-landing", "--preset", "scale", "--users", str(args.users), "--items",
                   str(args.items), "--days", "2", "--end-date", END_DATE, "--out", str(landing)], env, work / "log.txt")
        dates = sorted(d.name.split("=", 1)[1] for d in (landing / "events").iterdir())
        nights = []
        for date in dates:
            wall, rss = run_measured(CLI + ["pipeline", "nightly", "--date", date, "--landing", str(landing), "--work",
                                            str(work / "nightly"), "--first-max-steps", str(args.first_max_steps),
                                            "--warm-max-steps", str(args.warm_max_steps), "--no-progress"], env,
                                        work / "log.txt")
            state = json.loads((work / "nightly" / "state" / f"date={date}.json").read_text())["done"]
            nights.append((date, wall, rss, state))
            steps = ", ".join(f"{k} {v['seconds']:.0f} s / {v['peak_rss_mib']:,.0f} MiB" for k, v in state.items()
                              if "seconds" in v)
            print(f"night {date}: {wall:.0f} s, peak RSS {rss:,.0f} MiB ({steps})", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    events = nights[0][3]["merge"]["interactions"]
    print(f"\n{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads); synthetic landing: "
          f"{args.users:,} users x {args.items:,} items, {nights[-1][3]['merge']['interactions']:,} events in two "
          f"daily partitions (generated in {t_landing:.0f} s, peak RSS {rss_landing:,.0f} MiB); first night's "
          f"training budget {args.first_max_steps:,} steps, warm start {args.warm_max_steps:,} steps\n")
    head = "| step | " + " | ".join(f"{'first' if i == 0 else 'warm'} night {d}: s | peak RSS (MiB)"
                                    for i, (d, *_) in enumerate(nights)) + " |"
    print(head)
    print("|---|" + "---:|---:|" * len(nights))
    for step in STEPS:
        cells = []
        for _, _, _, state in nights:
            s = state.get(step, {})
            cells += [f"{s.get('seconds', float('nan')):,.0f}", f"{s.get('peak_rss_mib', float('nan')):,.0f}"]
        print(f"| {step} | " + " | ".join(cells) + " |")
    print("| **whole night** (process) | " + " | ".join(f"**{wall:,.0f}** | **{rss:,.0f}**"
                                                         for _, wall, rss, _ in nights) + " |")
    first, warm = nights[0][3], nights[-1][3]
    print(f"\nfirst night: {events:,} events merged; training {first['train']['seconds'] / 60:.1f} min (target <= 60), "
          f"night {nights[0][1] / 60:.1f} min")
    print(f"warm night: training {warm['train']['seconds'] / 60:.1f} min (target <= 20), night "
          f"{nights[-1][1] / 60:.1f} min (target <= 45), peak RSS {nights[-1][2] / 1024:.2f} GiB (target <= 6)")


if __name__ == "__main__":
    main()
