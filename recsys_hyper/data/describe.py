"""Summaries of a dataset: counts, history lengths, ratings, time range, features."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import schema as S
from .dataset import Dataset

QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)


def describe(ds: Dataset) -> dict:
    """A JSON-serialisable summary of ``ds``."""
    inter = ds.interactions
    per_user = inter.groupby(S.USER_ID, sort=False).size().to_numpy()
    per_item = inter.groupby(S.ITEM_ID, sort=False).size().to_numpy()
    n_users, n_items = len(ds.user_ids()), len(ds.item_ids())
    out: dict = {
        "source": ds.source,
        "feedback": "implicit" if ds.implicit else "explicit",
        "interactions": int(len(inter)),
        "users": int(n_users),
        "users_with_interactions": int(len(per_user)),
        "items": int(n_items),
        "items_with_interactions": int(len(per_item)),
        "density": float(len(inter) / max(1, len(per_user) * len(per_item))),
        "history_length": _quantiles(per_user),
        "item_popularity": _quantiles(per_item),
        "users_with_at_least": {str(k): int((per_user >= k).sum()) for k in (1, 5, 10, 20, 30, 50, 100)},
        "time_range": [str(pd.Timestamp(int(inter[S.TIMESTAMP].min()), unit="s")),
                       str(pd.Timestamp(int(inter[S.TIMESTAMP].max()), unit="s"))],
        "user_features": _features(ds.users, S.USER_ID),
        "item_features": _features(ds.items, S.ITEM_ID),
        "duplicates_dropped": int(ds.report.n_duplicates_dropped),
    }
    if not ds.implicit:
        r = inter[S.RATING]
        counts = r.value_counts().sort_index()
        out["rating"] = {"mean": float(r.mean()), "std": float(r.std(ddof=0)),
                         "distribution": {_fmt(k): int(v) for k, v in counts.items()} if len(counts) <= 20
                         else _quantiles(r.to_numpy())}
    return out


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _quantiles(values: np.ndarray) -> dict:
    q = np.quantile(values, QUANTILES)
    out = {("min" if p == 0 else "max" if p == 1 else f"p{int(p * 100)}"): float(v) for p, v in zip(QUANTILES, q)}
    out["mean"] = float(np.mean(values))
    return out


def _features(df: pd.DataFrame | None, id_column: str) -> dict:
    if df is None:
        return {}
    out = {}
    for col in df.columns:
        if col == id_column:
            continue
        s = df[col]
        if s.map(lambda v: isinstance(v, (list, np.ndarray))).any():
            flat = pd.Series([x for v in s.dropna() for x in v])
            out[col] = {"kind": "list<string>", "distinct": int(flat.nunique()), "missing": int(s.isna().sum())}
        elif pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            out[col] = {"kind": "number", "min": _num(s.min()), "max": _num(s.max()), "missing": int(s.isna().sum())}
        else:
            out[col] = {"kind": "category", "distinct": int(s.nunique()), "missing": int(s.isna().sum())}
    return out


def _num(x) -> float | None:
    return None if pd.isna(x) else float(x)


def format_description(d: dict) -> str:
    """The summary as aligned text for a terminal."""
    lines = [
        f"dataset        {d['source']}",
        f"feedback       {d['feedback']}",
        f"interactions   {d['interactions']:,}",
        f"users          {d['users']:,} ({d['users_with_interactions']:,} with interactions)",
        f"items          {d['items']:,} ({d['items_with_interactions']:,} with interactions)",
        f"density        {d['density']:.4%}",
        f"time range     {d['time_range'][0]} .. {d['time_range'][1]}",
    ]
    if d["duplicates_dropped"]:
        lines.append(f"duplicates     {d['duplicates_dropped']:,} (user, item) events dropped, latest kept")
    for title, key in (("history length", "history_length"), ("item popularity", "item_popularity")):
        q = d[key]
        lines.append(f"{title:<16}" + "  ".join(f"{k} {v:,.0f}" if k != "mean" else f"mean {v:,.1f}" for k, v in q.items()))
    lines.append("users with >= k " + "  ".join(f"{k}: {v:,}" for k, v in d["users_with_at_least"].items()))
    if "rating" in d:
        r = d["rating"]
        lines.append(f"rating         mean {r['mean']:.3f}  std {r['std']:.3f}")
        dist = r["distribution"]
        if "mean" not in dist:  # a histogram of distinct values
            total = sum(dist.values())
            for value, count in dist.items():
                bar = "#" * max(1, round(40 * count / total)) if count else ""
                lines.append(f"  {value:>6}  {count:>10,}  {count / total:6.1%}  {bar}")
    for title, key in (("user features", "user_features"), ("item features", "item_features")):
        feats = d[key]
        if not feats:
            lines.append(f"{title:<15}none")
            continue
        lines.append(title)
        for name, f in feats.items():
            detail = (f"{f['distinct']:,} distinct" if "distinct" in f else f"{f['min']} .. {f['max']}")
            missing = f", {f['missing']:,} missing" if f["missing"] else ""
            lines.append(f"  {name:<14}{f['kind']:<14}{detail}{missing}")
    return "\n".join(lines)
