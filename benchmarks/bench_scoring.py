"""Batch-scoring benchmarks: throughput against a plain dot-product top-K scorer, end-to-end runs at
100k and 1M users (wall time, peak RSS), and Spark local[2] against the single process.

    python benchmarks/bench_scoring.py [--users 1000000] [--items 10000] [--top-k 100]

1. ``data synth`` generates the users (preset ``scale``); a model is meta-trained on the first
   20,000 of them (a few epochs: scoring cost does not depend on how well it is trained).
2. Throughput, compute only, on the same chunks of users: the hypernetwork scorer (heads emitted
   from each history, catalogue GEMM, seen items excluded, top K) against a dot-product scorer
   with d = 64 (user vectors looked up, catalogue GEMM, seen items excluded, top K).
3. ``recsys-hyper score`` end to end (read -> partition -> score -> write) on the first 100k users
   and on all users, each in its own process: wall time and peak RSS.
4. The same end to end against a dot-product job (d = 64: the same Parquet read, one GEMM per
   chunk, seen items excluded, top K, Parquet written), each in its own process.
5. ``score --engine spark`` on ``local[2]`` against the single-process scorer, at both sizes.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import torch

CLI = [sys.executable, "-m", "recsys_hyper.cli"]


def run_measured(args: list[str], env=None) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of a command in its own process. The peak is the child's
    own high-water mark (``VmHWM``, sampled until it exits): ``ru_maxrss`` of a child starts from
    the parent's resident size at fork, so it would floor every figure at this script's memory."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    peak_kib = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            line = next((x for x in status.read_text().splitlines() if x.startswith("VmHWM:")), "")
            peak_kib = max(peak_kib, int(line.split()[1])) if line else peak_kib
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{proc.stderr.read().decode()[-3000:]}")
    return wall, peak_kib / 1024


def synth_scale(out: Path, users: int, items: int) -> float:
    """Generate the synthetic ``scale`` preset into ``out`` (its own process); returns the seconds."""
    seconds, _ = run_measured(CLI + ["data", "synth", "--preset", "scale", "--users", str(users), "--items", str(items),
                                     "--out", str(out), "--no-progress"])
    return seconds


def subset(src: Path, dst: Path, n_users: int) -> None:
    """The first ``n_users`` users of a synthetic dataset (their ids are 1..N)."""
    dst.mkdir(parents=True)
    ds = pads.dataset(src / "interactions.parquet")
    pq.write_table(ds.to_table(filter=pads.field("user_id") <= n_users), dst / "interactions.parquet")
    users = pads.dataset(src / "users.parquet")
    pq.write_table(users.to_table(filter=pads.field("user_id") <= n_users), dst / "users.parquet")
    shutil.copy(src / "items.parquet", dst / "items.parquet")


def throughput(model_dir: Path, data: Path, top_k: int, chunk: int, max_users: int) -> tuple[float, float, int]:
    """(hypernetwork users/s, dot-product users/s, users) on the same in-memory chunks."""
    from recsys_hyper.data import Histories
    from recsys_hyper import HyperRecommender
    from recsys_hyper.scoring.core import ChunkScorer

    rec = HyperRecommender.load(model_dir)
    events = pads.dataset(data / "interactions.parquet").to_table(
        filter=pads.field("user_id") <= max_users).to_pandas()
    users = pd.read_parquet(data / "users.parquet")
    users = users[users["user_id"] <= max_users]
    h, _ = Histories.from_interactions(events, rec.item_map_)
    scorer = ChunkScorer(rec, top_k)
    N = len(rec.item_map_)
    rng = np.random.default_rng(0)
    user_vecs = torch.from_numpy(rng.normal(size=(len(h), 64)).astype(np.float32))
    item_vecs = torch.from_numpy(rng.normal(size=(N, 64)).astype(np.float32))
    chunks = [np.arange(s, min(len(h), s + chunk)) for s in range(0, len(h), chunk)]

    def dot_product(rows):
        sub = h.select(rows)
        scores = user_vecs[torch.from_numpy(rows)] @ item_vecs.T               # (B, N)
        owner = torch.from_numpy(np.repeat(np.arange(len(rows)), sub.lengths))
        scores[owner, torch.from_numpy(sub.items)] = float("-inf")
        top = scores.topk(top_k, dim=1)
        return top.indices.numpy(), top.values.numpy()

    def hyper(rows):
        return scorer.score_histories(h.select(rows), users)

    out = {}
    for name, fn in (("dot", dot_product), ("hyper", hyper)):
        fn(chunks[0])  # warm-up
        t0 = time.perf_counter()
        for rows in chunks:
            fn(rows)
        out[name] = len(h) / (time.perf_counter() - t0)
    return out["hyper"], out["dot"], len(h)


def dot_product_job(data: Path, out: Path, top_k: int, chunk: int, dim: int = 64) -> None:
    """The reference end-to-end scorer a team could write in an afternoon: read the histories'
    Parquet, look up a d = 64 vector per user, one GEMM per chunk against the catalogue, the seen
    items excluded, top K, Parquet out (user_id, item_id, score, rank). Run as its own process."""
    table = pq.read_table(data / "interactions.parquet", columns=["user_id", "item_id"])
    users = table.column("user_id").to_numpy()
    items = table.column("item_id").to_numpy()
    user_ids, u = np.unique(users, return_inverse=True)
    item_ids, i = np.unique(items, return_inverse=True)
    order = np.argsort(u, kind="stable")
    starts = np.searchsorted(u[order], np.arange(len(user_ids) + 1))
    seen = i[order]
    rng = np.random.default_rng(0)
    user_vecs = torch.from_numpy(rng.normal(size=(len(user_ids), dim)).astype(np.float32))
    item_vecs = torch.from_numpy(rng.normal(size=(len(item_ids), dim)).astype(np.float32))
    writer = None
    try:
        for lo in range(0, len(user_ids), chunk):
            hi = min(len(user_ids), lo + chunk)
            scores = user_vecs[lo:hi] @ item_vecs.T
            owner = np.repeat(np.arange(hi - lo), np.diff(starts[lo:hi + 1]))
            scores[torch.from_numpy(owner), torch.from_numpy(seen[starts[lo]:starts[hi]])] = float("-inf")
            top = scores.topk(top_k, dim=1)
            frame = pa.table({"user_id": np.repeat(user_ids[lo:hi], top_k),
                              "item_id": item_ids[top.indices.numpy().ravel()],
                              "score": top.values.numpy().ravel(),
                              "rank": np.tile(np.arange(1, top_k + 1, dtype=np.int32), hi - lo)})
            writer = writer or pq.ParquetWriter(out, frame.schema)
            writer.write_table(frame)
    finally:
        if writer is not None:
            writer.close()


def spark_seconds(data: Path, model_dir: Path, top_k: int, out: Path) -> tuple[float, dict]:
    """``recsys-hyper score --engine spark`` on ``local[2]``: end to end (JVM start included), and
    the run's manifest (its ``scoring_seconds``: reading, scoring and writing, after the checks)."""
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    wall, _ = run_measured(CLI + ["score", "--engine", "spark", "--spark-master", "local[2]", "--model",
                                  str(model_dir), "--data", str(data), "--top-k", str(top_k), "--out", str(out),
                                  "--date", "2026-11-22", "--no-progress"], env=env)
    return wall, scoring_manifest(out)


def scoring_manifest(out: Path) -> dict:
    import json

    return json.loads((out / "recommendations" / "date=2026-11-22" / "_manifest.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--items", type=int, default=10_000)
    p.add_argument("--top-k", type=int, default=100)
    p.add_argument("--chunk-users", type=int, default=4096)
    p.add_argument("--throughput-users", type=int, default=200_000, help="users in the compute-only comparison")
    p.add_argument("--small", type=int, default=100_000, help="users of the smaller end-to-end run")
    p.add_argument("--no-spark", action="store_true")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--dot-product-job", nargs=2, type=Path, metavar=("DATA", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.dot_product_job:
        dot_product_job(*args.dot_product_job, args.top_k, args.chunk_users)
        return

    work = Path(tempfile.mkdtemp(prefix="bench-score-", dir=args.workdir))
    rows = []
    try:
        full = work / "full"
        t_synth = synth_scale(full, args.users, args.items)
        n_rows = pq.read_metadata(full / "interactions.parquet").num_rows
        subset(full, work / "train", 20_000)
        (work / "c.toml").write_text("[train]\nepochs = 4\n")
        t_train, _ = run_measured(CLI + ["train", "--data", str(work / "train"), "--out", str(work / "model"),
                                         "--config", str(work / "c.toml"), "--no-track", "--no-progress"])
        small = work / "small"
        subset(full, small, args.small)

        hyper_ups, dot_ups, n_tp = throughput(work / "model", full, args.top_k, args.chunk_users,
                                              args.throughput_users)
        rows.append(("throughput, compute only (users/s)", f"{n_tp:,} users, chunks of {args.chunk_users}",
                     f"hypernetwork {hyper_ups:,.0f}; dot product (d = 64) {dot_ups:,.0f}; ratio "
                     f"{hyper_ups / dot_ups:.0%}", ">= 50% of the dot product"))

        results, manifests = {}, {}
        for name, data in (("small", small), ("full", full)):
            out = work / f"out-{name}"
            wall, rss = run_measured(CLI + ["score", "--model", str(work / "model"), "--data", str(data), "--top-k",
                                            str(args.top_k), "--out", str(out), "--date", "2026-11-22",
                                            "--chunk-users", str(args.chunk_users), "--no-progress"])
            n_users = pq.read_metadata(data / "users.parquet").num_rows
            n_recs = sum(pq.read_metadata(f).num_rows for f in
                         (out / "recommendations" / "date=2026-11-22").glob("*.parquet"))
            results[name] = (n_users, wall, rss, n_recs)
            manifests[name] = scoring_manifest(out)
            shutil.rmtree(out)
        for name in ("small", "full"):
            n_users, wall, rss, n_recs = results[name]
            rows.append((f"`recsys-hyper score`, end to end, {n_users:,} users", f"{n_recs:,} recommendations",
                         f"{wall:.0f} s ({n_users / wall:,.0f} users/s), peak RSS {rss:,.0f} MiB",
                         "< 15 min, < 2 GiB" if name == "full" else ""))
        for name, data in (("small", small), ("full", full)):
            wall, rss = run_measured([sys.executable, __file__, "--dot-product-job", str(data),
                                      str(work / "dot.parquet"), "--top-k", str(args.top_k),
                                      "--chunk-users", str(args.chunk_users)])
            n_users = results[name][0]
            rows.append((f"end to end, {n_users:,} users: `score` / dot product (d = 64, the same read, "
                         f"GEMM, exclusion, top K, write)", "",
                         f"{results[name][1]:.0f} s / {wall:.0f} s = **{wall / results[name][1]:.2f}x** "
                         f"(dot product peak RSS {rss:,.0f} MiB)", ">= 0.8x"))
        (_, _, rss_s, _), (_, _, rss_f, _) = results["small"], results["full"]
        rows.append(("peak RSS, full / small", "", f"{rss_f / rss_s:.2f}", "within 1.20"))
        if not args.no_spark:
            for name, data in (("small", small), ("full", full)):
                t_spark, spark_manifest = spark_seconds(data, work / "model", args.top_k, work / "out-spark")
                shutil.rmtree(work / "out-spark")
                n_users = results[name][0]
                one = n_users / manifests[name]["scoring_seconds"]
                two = n_users / spark_manifest["scoring_seconds"]
                # both on the machine's 2 cores: Spark's two tasks, the one process's torch threads and writer
                rows.append((f"`score --engine spark` on local[2] vs one process, {n_users:,} users",
                             "end to end; users/s scoring (after the checks), both on 2 cores",
                             f"Spark {t_spark:.0f} s, {two:,.0f} users/s; one process {results[name][1]:.0f} s, "
                             f"{one:,.0f} users/s: **{two / one:.2f}x** per core",
                             ">= 0.5x one process per core"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads); synthetic "
          f"{args.users:,} users x {args.items:,} items ({n_rows:,} interactions, generated in {t_synth:.0f} s); "
          f"model trained on 20,000 users in {t_train:.0f} s; top {args.top_k}, seen items excluded\n")
    print("| benchmark | size | result | target |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
