"""Online adaptation, measured: how fast a served model answers for a new user it has never seen.

    python benchmarks/bench_serving.py [--users 3000] [--requests 200] [--batches 20]

1. A synthetic dataset (preset ``default``); a model is meta-trained on all but the last 300
   users and registered in a temporary MLflow store; the last 300 users are the new users.
2. ``mlflow models serve`` on the registered version (127.0.0.1, ``--env-manager local``, one
   worker). For new users with 0, 1, 5 and 20 events (their earliest): ``--requests`` requests of
   one user each, one after the other, then ``--batches`` requests of 100 users each; latency per
   request (p50 / p95 / p99) and requests (or users) per second, over HTTP, JSON in and out.
3. The same requests answered in-process by the library (``recommend_grouped``, what the pyfunc
   calls): the cost of the model alone, without HTTP and MLflow's input handling.
4. MeLU (the local-update baseline) adapting the same new users in-process, one at a time, on the
   same machine: its per-user adaptation time beside the hypernetwork's one forward pass.

Prints a Markdown table. Nothing is timed in the test suite (these machines are shared and noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import torch

SHOTS = (0, 1, 5, 20)
NEW_USERS = 300
TOP_K = 10


def percentiles(seconds: list[float]) -> tuple[float, float, float]:
    ms = np.array(seconds) * 1000
    return tuple(float(np.percentile(ms, q)) for q in (50, 95, 99))


def grouped_requests(events: pd.DataFrame, users: np.ndarray, k: int) -> pd.DataFrame:
    """One row per user: their ``k`` earliest events as lists (an empty history at k = 0)."""
    from recsys_hyper.data.frames import group_histories

    first = events[events["user_id"].isin(users)].sort_values(["user_id", "timestamp"]).groupby("user_id").head(k)
    grouped = group_histories(first) if len(first) else pd.DataFrame(
        {"user_id": [], "item_id": [], "rating": [], "timestamp": []})
    missing = np.setdiff1d(users, grouped["user_id"].to_numpy())
    empty = pd.DataFrame({"user_id": missing, "item_id": [[] for _ in missing], "rating": [[] for _ in missing],
                          "timestamp": [[] for _ in missing]})
    out = pd.concat([grouped, empty], ignore_index=True).astype({"user_id": "int64"})
    return out.set_index("user_id").loc[users].reset_index()


def post(port: int, frame: pd.DataFrame) -> None:
    body = json.dumps({"dataframe_split": json.loads(frame.to_json(orient="split", index=False)),
                       "params": {"k": TOP_K}}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        answer = json.loads(r.read())
    if len(answer["predictions"]) != len(frame):
        raise SystemExit(f"the server answered {len(answer['predictions'])} rows for {len(frame)} users")


def timed(call, frames: list[pd.DataFrame]) -> list[float]:
    call(frames[0])                                                      # warm-up, not counted
    out = []
    for frame in frames:
        t0 = time.perf_counter()
        call(frame)
        out.append(time.perf_counter() - t0)
    return out


def start_server(store: str, cwd: Path) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MLFLOW_TRACKING_URI": store,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m",
                             "models:/recsys-hyper@challenger", "--env-manager", "local", "-h", "127.0.0.1",
                             "-p", str(port), "--workers", "1"], env=env, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.time()
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                return proc, port
        except OSError:
            if proc.poll() is not None or time.time() - t0 > 180:
                raise SystemExit("mlflow models serve did not start:\n" + proc.stderr.read().decode()[-3000:])
            time.sleep(0.5)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--requests", type=int, default=200, help="single-user requests per k")
    p.add_argument("--batches", type=int, default=20, help="100-user requests per k")
    p.add_argument("--epochs", type=int, default=10)
    args = p.parse_args()

    from recsys_hyper import HyperRecommender, MeLU, load_dataset
    from recsys_hyper.cli import main as cli
    from recsys_hyper.data.dataset import Dataset
    from recsys_hyper.data.frames import explode_histories
    from recsys_hyper.data.synthetic import generate, preset
    from recsys_hyper.recommender import recommend_grouped

    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    store = f"sqlite:///{work / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = store
    os.chdir(work)
    generate(preset("default", n_users=args.users, seed=3), work / "all")
    ds = load_dataset(work / "all")
    new = np.sort(ds.interactions["user_id"].unique())[-NEW_USERS:]
    train = Dataset(ds.interactions[~ds.interactions["user_id"].isin(new)].reset_index(drop=True), ds.users,
                    ds.items, source=ds.source)
    from recsys_hyper.data import write_dataset

    write_dataset(train, work / "train")
    (work / "c.toml").write_text(f"[train]\nepochs = {args.epochs}\n")
    t0 = time.perf_counter()
    assert cli(["train", "--data", str(work / "train"), "--out", str(work / "model"), "--config",
                str(work / "c.toml"), "--no-progress"]) == 0
    train_s = time.perf_counter() - t0
    rec = HyperRecommender.load(work / "model")
    melu = MeLU(epochs=args.epochs).fit(train, progress=False)
    events = ds.interactions[ds.interactions["user_id"].isin(new)]
    rng = np.random.default_rng(0)

    def singles(k: int) -> list[pd.DataFrame]:
        eligible = new if k == 0 else new[np.isin(new, events.groupby("user_id").size().loc[lambda s: s >= k].index)]
        picks = rng.choice(eligible, args.requests)
        whole = grouped_requests(events, np.unique(picks), k).set_index("user_id")
        return [whole.loc[[u]].reset_index() for u in picks]

    def batches(k: int) -> list[pd.DataFrame]:
        return [grouped_requests(events, np.sort(rng.choice(new, 100, replace=False)), k)
                for _ in range(args.batches)]

    load = {k: (singles(k), batches(k)) for k in SHOTS}
    server, port = start_server(store, work)
    rows = []
    try:
        for k in SHOTS:
            one, many = load[k]
            http_one = timed(lambda f: post(port, f), one)
            http_many = timed(lambda f: post(port, f), many)
            lib_one = timed(lambda f: recommend_grouped(rec, f, k=TOP_K), one)
            lib_many = timed(lambda f: recommend_grouped(rec, f, k=TOP_K), many)
            melu_one = timed(lambda f: melu.recommend(explode_histories(f), k=TOP_K), one[:50])
            rows.append((k, http_one, http_many, lib_one, lib_many, melu_one))
    finally:
        server.terminate()
        server.wait(timeout=30)

    print(f"\n{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads); synthetic "
          f"{args.users:,} users x {len(ds.item_ids()):,} items; model trained on {args.users - NEW_USERS:,} users in "
          f"{train_s:.0f} s and registered; {NEW_USERS} new users; top {TOP_K}; `mlflow models serve` on 127.0.0.1 "
          f"(--env-manager local, 1 worker); {args.requests} one-user requests and {args.batches} requests of 100 "
          f"users per k; MeLU (local updates, {melu.params['local_steps']} steps) on 50 of the same users\n")
    print("| k | served, 1 user: p50 / p95 / p99 ms | served, 1 user: requests/s | served, 100 users: p50 / p95 / "
          "p99 ms | served, 100 users: users/s | library, 1 user: p50 / p99 ms | library, 100 users: p50 ms | "
          "MeLU, 1 user: p50 / p99 ms |")
    print("|---:|---|---:|---|---:|---|---:|---|")
    for k, h1, hm, l1, lm, m1 in rows:
        a, b, c = percentiles(h1)
        d, e, f = percentiles(hm)
        g, _, i = percentiles(l1)
        j, _, _ = percentiles(lm)
        m, _, o = percentiles(m1)
        print(f"| {k} | {a:.1f} / {b:.1f} / {c:.1f} | {len(h1) / sum(h1):,.0f} | {d:.1f} / {e:.1f} / {f:.1f} | "
              f"{100 * len(hm) / sum(hm):,.0f} | {g:.2f} / {i:.2f} | {j:.1f} | {m:.2f} / {o:.2f} |")


if __name__ == "__main__":
    main()
