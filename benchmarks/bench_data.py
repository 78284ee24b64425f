"""Data benchmarks: synthetic generation at scale, MovieLens import, validation of a large file.

Each measurement runs the real CLI in its own process; wall time is measured around it and peak
RSS is that process's own (``os.wait4``), so the numbers are what a user of the command sees.
Prints a Markdown table.

    python benchmarks/bench_data.py                       # 1M users x 10k items, 10M-row validation
    python benchmarks/bench_data.py --users 100000 --validate-rows 1000000   # quicker
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

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
ML100K = ROOT.parent / "shared" / "data" / "ml-100k"
CLI = [sys.executable, "-m", "recsys_hyper.cli"]


def measure(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one command."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{proc.stderr.read().decode()}")
    return wall, usage.ru_maxrss / 1024  # ru_maxrss is KiB on Linux


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--items", type=int, default=10_000)
    p.add_argument("--validate-rows", type=int, default=10_000_000)
    p.add_argument("--workdir", type=Path, default=None, help="scratch space (default: a temporary folder)")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-data-", dir=args.workdir))
    rows: list[tuple[str, str, float, float]] = []
    try:
        out = work / "synth"
        wall, rss = measure(CLI + ["data", "synth", "--preset", "scale", "--users", str(args.users),
                                   "--items", str(args.items), "--out", str(out), "--no-progress"])
        n = pq.read_metadata(out / "interactions.parquet").num_rows
        rows.append((f"data synth --users {args.users:,} --items {args.items:,}", f"{n:,} interactions", wall, rss))

        if (ML100K / "u.data").is_file():
            wall, rss = measure(CLI + ["data", "import-movielens", str(ML100K), "--out", str(work / "ml")])
            rows.append(("data import-movielens ml-100k", "100,000 interactions", wall, rss))
        else:
            print(f"(skipping the ML-100K import: {ML100K} is absent)", file=sys.stderr)

        big = work / "big"
        big.mkdir()
        _write_rows(args.validate_rows, big / "interactions.parquet")
        wall, rss = measure(CLI + ["data", "validate", str(big)])
        rows.append((f"data validate ({args.validate_rows:,}-row interactions)", f"{args.validate_rows:,} rows",
                     wall, rss))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{os.cpu_count()} cores, Python {sys.version.split()[0]}\n")
    print("| command | size | wall time (s) | peak RSS (MiB) |")
    print("|---|---|---:|---:|")
    for name, size, wall, rss in rows:
        print(f"| `{name}` | {size} | {wall:.1f} | {rss:,.0f} |")


def _write_rows(n_rows: int, path: Path) -> None:
    """A real synthetic interactions file of exactly ``n_rows`` rows, written in bounded memory."""
    src = path.parent.parent / "rows-src"
    users = max(1000, int(n_rows / 25))
    while True:
        subprocess.run(CLI + ["data", "synth", "--preset", "scale", "--users", str(users), "--out", str(src),
                              "--overwrite", "--no-progress"], check=True, stdout=subprocess.DEVNULL)
        f = pq.ParquetFile(src / "interactions.parquet")
        if f.metadata.num_rows >= n_rows:
            break
        users = int(users * 1.3 * n_rows / f.metadata.num_rows)
    with pq.ParquetWriter(path, f.schema_arrow) as w:
        left = n_rows
        for batch in f.iter_batches(batch_size=1_000_000):
            if left <= 0:
                break
            batch = batch.slice(0, min(left, batch.num_rows))
            w.write_batch(batch)
            left -= batch.num_rows
    shutil.rmtree(src)


if __name__ == "__main__":
    main()
