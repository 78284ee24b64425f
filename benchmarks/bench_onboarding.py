"""Onboarding and explanations, measured: the offline elicitation protocol and the faithfulness of
the explanations, on MovieLens 100K and the synthetic data.

For each dataset: the cold-start protocol's seeded user split (split seed 0); the hypernetwork
fitted on the training users (validation users for its early stopping and calibration). Then:

1. **The uncertainty weight of ``ask``, chosen on validation users**: the elicitation protocol on
   the validation users for each weight (0, 0.25, 0.5, 1); printed, so the shipped default can be
   checked against it (criterion: mean nDCG@10 after 1, 3, 5, 10 and 20 questions).
2. **The protocol on the cold-test users**, every strategy side by side (see
   :mod:`recsys_hyper.evaluation.onboarding`): nDCG@10, MAE and answers after 1, 3, 5, 10, 20
   questions, and the questions each strategy needs to reach chronological's quality after 10 events.
3. **Faithfulness** on the test users' first 20 events: the mean score drop of a recommended item
   when the most-blamed event is removed, against a random event.

Logged as an MLflow run per dataset (experiment ``recsys-hyper-cold-start``, kind
``onboarding-evaluation``) unless ``--no-track``; tables printed and written to ``--out``.

    python benchmarks/bench_onboarding.py                       # both datasets (~6 min on 2 cores)
    python benchmarks/bench_onboarding.py --datasets ml-100k --no-sweep
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import benchdata
from recsys_hyper.evaluation.onboarding import REPORTED
from recsys_hyper.evaluation.protocol import VALIDATION
from recsys_hyper.jobs.evaluate import run_onboarding_evaluation
WEIGHTS = (0.0, 0.25, 0.5, 1.0)


def dataset(name: str, work: Path):
    if name not in ("ml-100k", "synthetic"):
        sys.exit(f"unknown dataset {name!r}: ml-100k or synthetic")
    return benchdata.dataset(name, work, synthetic_preset="default")


def sweep_table(rows: list[dict]) -> str:
    t = pd.DataFrame(rows)
    head = "| uncertainty weight | " + " | ".join(f"nDCG@10 after {q}" for q in REPORTED) + " | mean | answered after 20 |"
    lines = [head, "|---:|" + "---:|" * (len(REPORTED) + 2)]
    for w, g in t.groupby("weight"):
        nd = [float(g.loc[g["questions"] == q, "ndcg@10"].iloc[0]) for q in REPORTED]
        ans = float(g.loc[g["questions"] == max(REPORTED), "answered"].iloc[0])
        lines.append(f"| {w:g} | " + " | ".join(f"{v:.4f}" for v in nd) + f" | {np.mean(nd):.4f} | {ans:.2f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["ml-100k", "synthetic"])
    p.add_argument("--out", default="artifacts/bench_onboarding", help="where the tables go")
    p.add_argument("--no-sweep", action="store_true", help="skip the validation sweep of the uncertainty weight")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            t0 = time.perf_counter()
            ds = dataset(name, Path(tmp))
            split, model = benchdata.fitted_on_split(ds)
            print(f"{name}: fitted in {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
            text += [f"## {name}", ""]
            if not args.no_sweep:
                rows = []
                for w in WEIGHTS:
                    res, _, _ = run_onboarding_evaluation(ds, split, model, track=False, users=VALIDATION,
                                                          progress=False, ask_kw={"uncertainty": w},
                                                          strategies=("model",))
                    rows += res.curve.assign(weight=w).to_dict("records")
                text += [f"Validation users ({res.users}): the uncertainty weight of ask", "", sweep_table(rows), ""]
            res, faith, run_id = run_onboarding_evaluation(ds, split, model, track=not args.no_track, progress=False)
            reach = res.to_reach.set_index("strategy")
            text += [f"Cold-test users ({res.users}); reference: chronological after {res.reference['questions']} "
                     f"events, nDCG@10 {res.reference['ndcg@10']:.4f}, MAE {res.reference['mae']:.4f}", "",
                     res.markdown("ndcg@10"), "", res.markdown("mae"), "", res.markdown("answered", digits=2), "",
                     "| strategy | questions to reach its nDCG@10 | questions to reach its MAE |", "|---|---:|---:|",
                     *[f"| {s} | {_q(r['questions_to_ndcg@10'])} | {_q(r['questions_to_mae'])} |"
                       for s, r in reach.iterrows()], "",
                     f"Faithfulness ({faith['pairs']:,} recommendations of {faith['users']} users, top 10 each): "
                     f"removing the most-blamed event lowers the score by {faith['drop_top']:.4f} on average, a random "
                     f"event by {faith['drop_random']:.4f}; the first drop is larger for "
                     f"{100 * faith['top_beats_random']:.1f}% of the recommendations.", "",
                     f"({time.perf_counter() - t0:.0f}s" + (f"; MLflow run {run_id})" if run_id else ")"), ""]
            print("\n".join(text[-40:]), file=sys.stderr, flush=True)
            (out / "onboarding.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


def _q(v: float) -> str:
    return "not within 20" if v != v else f"{int(v)}"


if __name__ == "__main__":
    main()
