"""The results table as Markdown / JSON, and the quality-vs-k figure."""

from __future__ import annotations

import math

import numpy as np

from ..numerics.intervals import REPORTED
from .runner import EvalResult

COLUMNS = [("mae", "MAE", 4), ("rmse", "RMSE", 4), ("ndcg@3", "nDCG@3", 4), ("recall@10", "Recall@10", 4),
           ("t-recall@10", "Recall@10 (hits/min(10,R))", 4), ("ndcg@10", "nDCG@10", 4),
           ("catalogue@10", "catalogue@10", 3), ("adapt_ms_per_user", "adapt ms/user", 3)]


def markdown_table(result: EvalResult) -> str:
    """One row per (method, k); the best value of each metric at each k in bold."""
    t = result.table
    best = {}
    for col, _, _ in COLUMNS[:-2]:                       # quality: not the catalogue share, not the latency
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


def coverage_table(result: EvalResult) -> str:
    """The prediction intervals' coverage of the query ratings at the reported levels, per method
    and k (empty when no method gives intervals)."""
    c = result.coverage
    if c.empty:
        return ""
    c = c[c["level"].isin(REPORTED)]
    head = " | ".join(f"{level:.0%} covered | width" for level in REPORTED)
    lines = ["Prediction intervals: share of the query ratings inside (each rated pair once), and mean width", "",
             f"| method | k | {head} | pairs |", "|---|---:|" + "---:|---:|" * len(REPORTED) + "---:|"]
    for (method, k), g in c.groupby(["method", "k"], sort=False):
        g = g.set_index("level")
        cells = " | ".join(f"{100 * g.at[level, 'covered']:.1f}% | {g.at[level, 'mean_width']:.2f}" for level in REPORTED)
        lines.append(f"| {method} | {k} | {cells} | {int(g['pairs'].iloc[0]):,} |")
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
        "interval_coverage": result.coverage.to_dict(orient="records"),
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


def reliability_figure(coverage):
    """The prediction intervals' reliability: left, the share of query ratings inside the interval
    against its nominal level, one line per (method, k), the diagonal and a +-3 point band; right,
    the mean width. ``coverage``: :attr:`EvalResult.coverage` (or its ``coverage.parquet``). A
    standalone figure: the caller's pyplot state and backend are left alone."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5))
    axes = fig.subplots(1, 2)
    axes[0].plot([0, 1], [0, 1], color="black", linewidth=0.8)
    axes[0].fill_between([0, 1], [-0.03, 0.97], [0.03, 1.03], color="grey", alpha=0.2, label="+-3 points")
    for method, g in coverage.groupby("method", sort=False):
        colours = colormaps["viridis"](np.linspace(0, 0.9, g["k"].nunique()))
        for colour, (k, gk) in zip(colours, g.groupby("k")):
            for ax, col in zip(axes, ("covered", "mean_width")):
                ax.plot(gk["level"], gk[col], marker=".", color=colour, label=f"{method}, k = {k}")
    axes[0].set(xlabel="nominal level", ylabel="share of the query ratings inside", xlim=(0, 1), ylim=(0, 1),
                title=f"reliability ({coverage['pairs'].max():,} rated pairs per k)")
    axes[1].set(xlabel="nominal level", ylabel="mean interval width (rating points)", title="interval width")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig
