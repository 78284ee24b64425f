"""The results table as Markdown / JSON, and the quality-vs-k figure."""

from __future__ import annotations

import math

import numpy as np

from .runner import EvalResult

COLUMNS = [("mae", "MAE", 4), ("rmse", "RMSE", 4), ("ndcg@3", "nDCG@3", 4), ("recall@10", "Recall@10", 4),
           ("t-recall@10", "Recall@10 (hits/min(10,R))", 4), ("ndcg@10", "nDCG@10", 4),
           ("adapt_ms_per_user", "adapt ms/user", 3)]


def markdown_table(result: EvalResult) -> str:
    """One row per (method, k); the best value of each metric at each k in bold."""
    t = result.table
    best = {}
    for col, _, _ in COLUMNS[:-1]:
        lower = col in ("mae", "rmse")
        best[col] = t.groupby("k")[col].transform("min" if lower else "max")
    lines = ["| method | k | " + " | ".join(name for _, name, _ in COLUMNS) + " |",
             "|---|---:|" + "---:|" * len(COLUMNS)]
    for i, row in t.iterrows():
        cells = []
        for col, _, digits in COLUMNS:
            v = row[col]
            text = "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"
            if col in best and not math.isnan(v) and abs(v - best[col][i]) < 1e-12:
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {row['method']} | {row['k']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def json_safe(obj):
    """``obj`` with every non-finite float as ``None`` (JSON has no NaN: a metric that is undefined
    for a method, e.g. MAE of a ranking-only one, is null)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def summary(result: EvalResult) -> dict:
    """The results as JSON-safe values (undefined metrics are null)."""
    return json_safe(_summary(result))


def _summary(result: EvalResult) -> dict:
    p = result.protocol
    return {
        "protocol": {"shots": list(p.shots), "seed": p.seed, "val_fraction": p.val_fraction,
                     "test_fraction": p.test_fraction, "min_query": p.min_query,
                     "relevance_threshold": p.relevance_threshold, "cutoff": p.cutoff},
        "split_digest": result.split.digest,
        "test_users": result.n_test_users,
        "evaluated_users": result.n_eligible,
        "fit_seconds": result.fit_seconds,
        "tuning": {k: ({kk: vv for kk, vv in t.items() if kk != "scores"} if t else None)
                   for k, t in result.tuning.items()},
        "seconds": result.seconds,
        "results": result.table.to_dict(orient="records"),
    }


def k_curve_figure(result: EvalResult):
    """MAE, nDCG@10 and Recall@10 against k, one line per method. A standalone figure: the
    caller's pyplot state and backend are left alone."""
    from matplotlib.figure import Figure

    t = result.table
    fig = Figure(figsize=(15, 4.2))
    axes = fig.subplots(1, 3)
    for ax, (col, name) in zip(axes, (("mae", "MAE (lower is better)"), ("ndcg@10", "nDCG@10, full catalogue"),
                                     ("recall@10", "Recall@10, full catalogue"))):
        for method, g in t.groupby("method", sort=False):
            style = "-" if method.startswith("hyper") else "--"
            ax.plot(g["k"], g[col], style, marker="o", label=method, linewidth=2 if method == "hyper" else 1.2)
        ax.set_xlabel("k (known interactions of the new user)")
        ax.set_title(name)
        ax.set_xticks(sorted(t["k"].unique()))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Cold-start quality vs k ({result.n_eligible} test users, split {result.split.digest[:8]})")
    fig.tight_layout()
    return fig
