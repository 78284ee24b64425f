"""Measuring episodes: the one procedure every figure of a method on users comes from.

Adapt each user from their support set, rate their query items (clipped to the rating scale),
rank the whole catalogue with the support items excluded, and compute the metrics of
:mod:`.metrics` per user. Training's validation, the tuning of every method (baselines, the
hypernetwork's calibration and its EASE term, MeLU's early stopping), the cold-start evaluation
and the nightly's gate all call :func:`measure_episode`; only how they average differs (over pairs
or users, per episode then over k), and :class:`EpisodeMeasure` has each.

What is measured is anything with the hooks of a fitted model on catalogue indices (see
:class:`~recsys_hyper.recommender.base.Indexed`): ``adapt(support, **kw) -> state``,
``rate(state, rows, items) -> (P,)``, ``rank(state, rows) -> (B, N)``, and the attributes
``rating_range`` (``None`` for implicit data) and ``implicit``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd
import torch

from ..data import schema as S
from ..data.episodes import Episode, Histories
from .metrics import catalogue_shown, mean_absolute_error, ndcg_at_k, ndcg_graded, per_user_errors, recall_at_k
from .scores import exclude_seen, finish_predictions, membership


class Measurable(Protocol):
    """What :func:`measure_episode` needs of a fitted model (histories in catalogue indices)."""

    rating_range: tuple | None
    implicit: bool

    def adapt(self, h: Histories, **kwargs): ...

    def rate(self, adapted, rows: torch.Tensor, items: torch.Tensor) -> torch.Tensor: ...

    def rank(self, adapted, rows: np.ndarray) -> torch.Tensor: ...


@dataclass
class EpisodeMeasure:
    """One model on one episode. ``per_user``: metric name -> (B,) values (NaN where undefined: a
    ranking metric of a user with no relevant query item, a rating error of a user with no
    scoreable pair); ``predicted`` / ``actual`` / ``owner``: the query pairs (``predicted`` on the
    rating scale, NaN where the model cannot score the item; ``None`` when not rated)."""

    user_ids: np.ndarray
    n_query: np.ndarray
    n_relevant: np.ndarray
    owner: np.ndarray
    actual: np.ndarray
    predicted: np.ndarray | None = None
    per_user: dict = field(default_factory=dict)
    adapt_seconds: float = 0.0
    #: the share of the catalogue in some ranked user's top ``cutoff`` (NaN when not ranked)
    catalogue_coverage: float = float("nan")

    @property
    def pair_mae(self) -> float:
        """MAE over the scoreable query pairs (every pair weighs the same)."""
        return mean_absolute_error(self.predicted, self.actual)

    def mean(self, metric: str, missing: float | None = None) -> float:
        """The mean over users of a per-user metric; users where it is undefined are left out, or
        count as ``missing`` when given."""
        values = self.per_user[metric]
        if missing is not None:
            return float(np.nan_to_num(values, nan=missing).mean()) if len(values) else float("nan")
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    def frame(self) -> pd.DataFrame:
        """One row per user: ``user_id, n_query, n_relevant`` and every per-user metric."""
        return pd.DataFrame({S.USER_ID: self.user_ids, "n_query": self.n_query, "n_relevant": self.n_relevant,
                             **self.per_user})


def measure_episode(model: Measurable, support: Histories, query: Histories, *, rate: bool = True,
                    rank: bool = True, per_user: bool = True, threshold: float = 4.0, cutoff: int = 10,
                    graded_k: int = 3, rank_users: str = "all", chunk: int = 512, repeats: int = 1,
                    **adapt_kwargs) -> EpisodeMeasure:
    """Measure ``model`` on one episode (``support`` and ``query`` list the same users).

    ``rate``: the query pairs' predictions (clipped to the rating scale) and, with ``per_user``,
    each user's MAE, RMSE and nDCG@``graded_k`` among their query items. ``rank``: Recall@``cutoff`` (both conventions) and nDCG@``cutoff`` over the whole
    catalogue with the support items excluded, relevant = query items rated >= ``threshold`` (every
    query item for implicit data); ``rank_users``: "all" users, or only those with a relevant item
    (the others are undefined either way), ranked ``chunk`` users at a time (memory bounded by
    users x catalogue). ``repeats``: adapt that many times and keep the median wall time (the
    adaptation latency; one call of a few ms is noisy)."""
    B = len(support)
    times, adapted = [], None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        adapted = model.adapt(support, **adapt_kwargs)
        times.append(time.perf_counter() - t0)
    owner = query.owners()
    actual = query.ratings.astype(np.float64)
    positive = np.ones(len(actual), dtype=bool) if model.implicit else actual >= threshold
    relevant_items = query.mask(positive)
    out = EpisodeMeasure(support.user_ids, query.lengths, relevant_items.lengths, owner, actual,
                         adapt_seconds=float(np.median(times)))
    if rate:
        with torch.no_grad():
            pred = model.rate(adapted, torch.from_numpy(owner), torch.from_numpy(query.items)).numpy()
        out.predicted = finish_predictions(pred, model.rating_range)
        if per_user:
            out.per_user["mae"], out.per_user["rmse"] = per_user_errors(out.predicted, actual, owner, B)
            out.per_user[f"ndcg@{graded_k}"] = ndcg_graded(out.predicted, actual, owner, B, k=graded_k)
    if rank:
        has = out.n_relevant > 0
        recall, t_recall, ndcg = np.full(B, np.nan), np.full(B, np.nan), np.full(B, np.nan)
        ranked = np.arange(B) if rank_users == "all" else np.flatnonzero(has)
        shown = None
        for start in range(0, len(ranked), chunk):
            rows = ranked[start:start + chunk]
            with torch.no_grad():
                scores = exclude_seen(model.rank(adapted, rows).clone(), support.select(rows))     # (b, N)
            hits = membership(relevant_items.select(rows), scores.shape[1])
            if rank_users == "all":                  # the catalogue's coverage is every user's lists
                shown = catalogue_shown(scores, cutoff, shown)
            recall[rows] = recall_at_k(scores, hits, cutoff).numpy()
            t_recall[rows] = recall_at_k(scores, hits, cutoff, truncated=True).numpy()
            ndcg[rows] = ndcg_at_k(scores, hits, cutoff).numpy()
        for values in (recall, t_recall, ndcg):
            values[~has] = np.nan
        if shown is not None:
            out.catalogue_coverage = float(shown.float().mean())
        out.per_user.update({f"recall@{cutoff}": recall, f"t-recall@{cutoff}": t_recall, f"ndcg@{cutoff}": ndcg})
    return out


def user_errors(model: Measurable, episodes: list[Episode], **adapt_kwargs) -> dict[int, np.ndarray]:
    """Each user's MAE over their query pairs, per episode (k -> (users,); NaN for a user with no
    scoreable pair): what every rating method is tuned on, as the evaluation reports it (a mean over
    users, each user weighing the same however many ratings they have)."""
    out = {}
    for e in episodes:
        m = measure_episode(model, e.support, e.query, rank=False, per_user=False, **adapt_kwargs)
        out[e.k] = per_user_errors(m.predicted, m.actual, m.owner, len(e.query))[0]
    return out


def mean_of_users(errors: dict[int, list[np.ndarray] | np.ndarray]) -> float:
    """The mean over k of the mean over users of a per-user figure (k -> (users,) values, or a
    list of such arrays to pool: the folds of a cross-fit); users where it is undefined left out."""
    values = []
    for parts in errors.values():
        v = np.concatenate(parts) if isinstance(parts, list) else np.asarray(parts)
        if np.isfinite(v).any():
            values.append(float(np.nanmean(v)))
    return float(np.mean(values)) if values else float("nan")


def mean_mae(model: Measurable, episodes: list[Episode], **adapt_kwargs) -> float:
    """The mean over episodes (one per k) of the mean over users of their MAE
    (:func:`user_errors`): what the tuning of every rating method minimises."""
    return mean_of_users(user_errors(model, episodes, **adapt_kwargs))


def mean_ndcg(model: Measurable, episodes: list[Episode], threshold: float = 4.0, cutoff: int = 10) -> float:
    """The mean over episodes (one per k) of the users' full-catalogue nDCG@``cutoff`` (users with
    a relevant query item): what the tuning of every ranking method maximises."""
    values = []
    for e in episodes:
        m = measure_episode(model, e.support, e.query, rate=False, threshold=threshold, cutoff=cutoff,
                            rank_users="relevant", chunk=1024)
        if (m.n_relevant > 0).any():
            values.append(m.mean(f"ndcg@{cutoff}"))
    return float(np.mean(values)) if values else float("nan")
