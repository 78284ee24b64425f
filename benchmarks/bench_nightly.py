"""The nightly pipeline at scale: a first night (full training) and a second (warm start) on a
synthetic landing folder of N users, each night in its own process as `make run` runs it.

    python benchmarks/bench_nightly.py [--users 1000000] [--items 10000] [--first-max-steps 6000]
        [--engine local,spark] [--train-users N] [--spark-master 'local[2]']

The landing folder holds the synthetic `scale` preset's events cut by time into two daily
partitions (the first carries 70% of them, the backlog). Each night runs every step (validate,
merge, split, train, evaluate, gate, score, cohort, cold_start_eval) against its own MLflow store;
the table gives each step's wall time and the night process's peak RSS when the step ended (a
high-water mark: the step where it jumps is the one that needed the memory). Targets on 2 cores
at 1M users: warm-start training <= 20 minutes, the whole night <= 45 minutes, peak RSS <= 6 GiB;
a first full training <= 60 minutes.

``--engine local,spark`` runs both nights on each engine (each with its own work folder and
store, on the same landing), the table side by side; ``--train-users N`` trains (and fits the
cold-start baselines) on a seeded sample of N users. For the Spark engine, the peak RSS is the
driver's Python process (Spark's JVM is bounded by ``spark.driver.memory``).
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
    p.add_argument("--engine", default="local", help="local, spark, or local,spark: each engine's nights")
    p.add_argument("--train-users", type=int, default=None, help="train on a seeded sample of N users")
    p.add_argument("--spark-master", default="local[2]")
    p.add_argument("--config", type=Path, default=None, help="the hypernetwork's config (as for train)")
    p.add_argument("--nights", type=int, default=2, help="run the first N nights (1: the first night alone)")
    args = p.parse_args()
    engines = args.engine.split(",")

    work = Path(tempfile.mkdtemp(prefix="bench-nightly-", dir=args.workdir))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    try:
        landing = work / "landing"
        t_landing, rss_landing = run_measured(
            CLI + ["pipeline", "synth-landing", "--preset", "scale", "--users", str(args.users), "--items",
                   str(args.items), "--days", "2", "--end-date", END_DATE, "--out", str(landing)], env, work / "log.txt")
        dates = sorted(d.name.split("=", 1)[1] for d in (landing / "events").iterdir())[:args.nights]
        nights = []
        for engine in engines:
            out = work / f"nightly-{engine}"
            night_env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{work / f'mlflow-{engine}.db'}"}
            for date in dates:
                wall, rss = run_measured(
                    CLI + ["pipeline", "nightly", "--date", date, "--landing", str(landing), "--work", str(out),
                           "--first-max-steps", str(args.first_max_steps), "--warm-max-steps",
                           str(args.warm_max_steps), "--no-progress", "--engine", engine]
                    + (["--spark-master", args.spark_master] if engine == "spark" else [])
                    + (["--train-users", str(args.train_users)] if args.train_users else [])
                    + (["--config", str(args.config.resolve())] if args.config else []), night_env,
                    work / "log.txt")
                state = json.loads((out / "state" / f"date={date}.json").read_text())["done"]
                nights.append((f"{engine} {date}", wall, rss, state))
                steps = ", ".join(f"{k} {v['seconds']:.0f} s / {v['peak_rss_mib']:,.0f} MiB"
                                  for k, v in state.items() if "seconds" in v)
                print(f"{engine} night {date}: {wall:.0f} s, peak RSS {rss:,.0f} MiB ({steps})", file=sys.stderr,
                      flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads); synthetic landing: "
          f"{args.users:,} users x {args.items:,} items, {nights[-1][3]['merge']['interactions']:,} events in two "
          f"daily partitions (generated in {t_landing:.0f} s, peak RSS {rss_landing:,.0f} MiB); first night's "
          f"training budget {args.first_max_steps:,} steps, warm start {args.warm_max_steps:,} steps"
          + (f"; training sample {args.train_users:,} users" if args.train_users else "")
          + (f"; config {args.config.name}" if args.config else "") + "\n")
    head = "| step | " + " | ".join(f"{d}: s | peak RSS (MiB)" for d, *_ in nights) + " |"
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
    for n in range(0, len(nights), len(dates)):
        (name, wall0, rss0, first), (_, wall1, rss1, warm) = nights[n], nights[n + len(dates) - 1]
        print(f"\n{name.split()[0]}: first night: {first['merge']['interactions']:,} events merged; training "
              f"{first['train']['seconds'] / 60:.1f} min (target <= 60), night {wall0 / 60:.1f} min, peak RSS "
              f"{rss0 / 1024:.2f} GiB"
              + (f"; warm night: training {warm['train']['seconds'] / 60:.1f} min (target <= 20), night "
                 f"{wall1 / 60:.1f} min (target <= 45), peak RSS {rss1 / 1024:.2f} GiB (target <= 6)"
                 if len(dates) > 1 else ""))
    if len(engines) == 2:
        per = len(dates)
        ratio = sum(w for _, w, _, _ in nights[per:]) / sum(w for _, w, _, _ in nights[:per])
        rss = max(r for _, _, r, _ in nights[per:]) / max(r for _, _, r, _ in nights[:per])
        print(f"{engines[1]} / {engines[0]}, {per} night(s): wall time {ratio:.2f}x, peak RSS {rss:.2f}x")


if __name__ == "__main__":
    main()
