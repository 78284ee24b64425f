"""Runs the cold-start protocol for many methods on one split, in one process.

For every method: fit on the training users (validation users for its own early stopping and
hyper-parameters), then for every k: adapt each eligible test user from their k earliest events
(timed: the per-user adaptation latency), predict their query ratings, and rank the whole
catalogue with their support items excluded. Every number is kept per user, so analyses can
bootstrap over users.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from ..data import schema as S
from ..data.dataset import Dataset
from ..data.episodes import Histories, chronological_split
from ..data.idmap import IdMap
from ..errors import RecsysHyperError
from ..config import DEFAULT_EVALUATION_METHODS, EVALUATION_METHODS
from ..memory import release_freed_memory
from ..numerics.intervals import REPORTED, RELIABILITY
from ..numerics.measure import measure_episode
from ..recommender.base import indexed
from .protocol import TEST, VALIDATION, Protocol, Split, split_users, training_dataset
from .vocabulary import InVocabulary

log = logging.getLogger(__name__)

METHODS = EVALUATION_METHODS
DEFAULT_METHODS = DEFAULT_EVALUATION_METHODS
METRICS = ("mae", "rmse", "ndcg@3", "recall@10", "t-recall@10", "ndcg@10")
LATENCY_REPEATS = 3


def build(fit_key: str, model_config=None):
    from ..baselines import EASE, BiasBaseline, ItemMean, MatrixFactorization, MeLU, Popularity
    from ..recommender import HyperRecommender

    return {
        "popularity": Popularity, "item-mean": ItemMean, "bias": BiasBaseline,
        "mf": MatrixFactorization, "mf-features": lambda: MatrixFactorization(use_features=True),
        "ease": EASE, "melu": MeLU, "hyper": lambda: HyperRecommender(model_config),
    }[fit_key]()


@dataclass
class EvalResult:
    table: pd.DataFrame                     # one row per (method, k)
    per_user: pd.DataFrame                  # one row per (method, k, user)
    split: Split
    protocol: Protocol
    n_test_users: int
    n_eligible: int
    fit_seconds: dict = field(default_factory=dict)
    seconds: float = 0.0
    fitted: dict = field(default_factory=dict, repr=False)   # fit key -> fitted model
    test_histories: Histories | None = field(default=None, repr=False)  # the evaluated users
    item_ids: IdMap | None = field(default=None, repr=False)            # the items test_histories index
    #: the prediction intervals' coverage: one row per (method, k, level) of the methods that give
    #: intervals (``level, covered, mean_width, pairs``; see ``Intervals.coverage``)
    coverage: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)

    @property
    def tuning(self) -> dict:
        """What each fitted method chose on validation users (grid, chosen values, scores)."""
        return {key: getattr(model, "tuning_", None) for key, model in self.fitted.items()}


def evaluate(ds: Dataset, protocol: Protocol = Protocol(), methods=DEFAULT_METHODS, model_config=None,
             progress: bool = True, on_result: Callable[[str, int, dict], None] | None = None,
             split: Split | None = None, fitted: dict | None = None, own_validation=()) -> EvalResult:
    """Run the protocol for ``methods`` on ``ds``. ``on_result(method, k, metrics)`` is called as
    each (method, k) finishes (e.g. to log an MLflow child run). ``split``: a given user split
    (default: the protocol's seeded one); ``fitted``: models already fitted on its training users
    (fit key -> model), measured as they are instead of being fitted again; ``own_validation``:
    methods fitted as ``train`` fits a model, on all the split's training and validation users
    with no validation users given (each picks its own among them), instead of being handed the
    split's validation users."""
    from ..progress import progress as progress_bar

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise RecsysHyperError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    t_start = time.perf_counter()
    split = split if split is not None else split_users(ds, protocol)
    train_ds = training_dataset(ds, split)
    item_map = IdMap.from_values(train_ds.item_ids(), name="item")
    test_events = ds.interactions[ds.interactions[S.USER_ID].isin(split.users(TEST))]
    h_test, n_unknown = Histories.from_interactions(test_events, item_map)
    if n_unknown:
        log.warning("%d test events are on items no training user has and that have no features row; dropped",
                    n_unknown)
    need = max(protocol.shots) + protocol.min_query
    eligible = h_test.select(np.flatnonzero(h_test.lengths >= need))
    log.debug("cold-start protocol: %d test users, %d with >= %d interactions are evaluated (split %s)",
             len(h_test), len(eligible), need, split.digest[:12])
    if len(eligible) == 0:
        raise RecsysHyperError(f"no test user has >= {need} interactions (max(shots) + min_query); "
                               f"lower the shots or min_query, or use a larger dataset")
    episodes = {k: chronological_split(eligible, k, min_query=protocol.min_query) for k in protocol.shots}

    fitted, fit_seconds, rows, per_user, coverage = dict(fitted or {}), {}, [], [], []
    fit_seconds.update({key: 0.0 for key in fitted})
    bar = progress_bar(total=len(methods) * len(protocol.shots), desc="evaluate", unit="run", enabled=progress)
    for method in methods:
        fit_key, adapt_kw = METHODS[method]
        if fit_key not in fitted:
            t0 = time.perf_counter()
            bar.set_postfix_str(f"fitting {fit_key}")
            model = build(fit_key, model_config)
            given = None if method in own_validation or fit_key in own_validation else split.users(VALIDATION)
            fitted[fit_key] = model.fit(train_ds, validation_users=given, progress=False)
            release_freed_memory()                       # a fit's transients are not carried into the next
            fit_seconds[fit_key] = time.perf_counter() - t0
            log.debug("fitted %s in %.1fs", fit_key, fit_seconds[fit_key])
        # a model fitted elsewhere (another vocabulary) is measured through the protocol's items
        model = InVocabulary.of(fitted[fit_key], item_map, train_ds.items, users=ds.users)
        # the intervals are calibrated for the emitted heads (a fine-tuned head's errors are others;
        # exploring changes the ranking only, so its ratings' coverage would repeat the plain heads')
        intervals = getattr(fitted[fit_key], "intervals_", None) if adapt_kw in ({}, {"mode": "zero-shot"}) else None
        for k, (sup, qry) in episodes.items():
            bar.set_postfix_str(f"{method} k={k}")
            metrics, users, covered = measure(model, adapt_kw, sup, qry, protocol, intervals=intervals)
            metrics.update({"fit_seconds": fit_seconds[fit_key]})
            rows.append({"method": method, "k": k, **metrics})
            per_user.append(users.assign(method=method, k=k))
            coverage += [{"method": method, "k": k, **row} for row in covered]
            if on_result is not None:
                on_result(method, k, metrics)
            bar.update(1)
    bar.close()
    table = pd.DataFrame(rows)
    per_user_df = pd.concat(per_user, ignore_index=True)[
        ["method", "k", S.USER_ID, "n_query", "n_relevant", *METRICS]]
    return EvalResult(table, per_user_df, split, protocol, len(h_test), len(eligible), fit_seconds,
                      time.perf_counter() - t_start, fitted, eligible, item_map, coverage=pd.DataFrame(coverage))


def measure(model, adapt_kw: dict, sup: Histories, qry: Histories, protocol: Protocol,
            intervals=None) -> tuple[dict, pd.DataFrame, list[dict]]:
    """One method at one k (``model``: a fitted model on the episode's item indices, see
    :func:`~recsys_hyper.recommender.indexed`): the episode measured by
    :func:`~recsys_hyper.numerics.measure.measure_episode`, adaptation timed. Returns the mean
    metrics, the per-user frame and, given the model's ``intervals``
    (:class:`~recsys_hyper.numerics.intervals.Intervals`), their coverage of the query ratings
    at each level of the reliability curve (``coverage@50`` ... in the metrics too; else no rows)."""
    m = measure_episode(model, sup, qry, threshold=protocol.relevance_threshold, cutoff=protocol.cutoff,
                        repeats=LATENCY_REPEATS, **adapt_kw)
    B = len(sup)
    metrics = {"users": B, "ranked_users": int((m.n_relevant > 0).sum()), **{name: m.mean(name) for name in METRICS},
               "adapt_ms_per_user": 1000.0 * m.adapt_seconds / max(1, B),
               f"catalogue@{protocol.cutoff}": m.catalogue_coverage}
    covered = []
    if intervals is not None and m.predicted is not None and model.rating_range is not None:
        covered = intervals.coverage(m.predicted, m.actual, sup.lengths[m.owner], model.rating_range,
                                     sorted(set(RELIABILITY) | set(REPORTED)))
        metrics.update({coverage_metric(r["level"]): r["covered"] for r in covered if r["level"] in REPORTED})
    return metrics, m.frame(), covered


def coverage_metric(level: float) -> str:
    """The results' name of the coverage of the ``level`` intervals (``coverage@90``)."""
    return f"coverage@{round(100 * level)}"


def measure_models(models: dict, ds: Dataset, users, shots, min_query: int = 5) -> dict[str, dict]:
    """Mean over k of MAE and full-catalogue nDCG@10 of every model of ``models`` (name -> fitted
    model) for ``users`` of ``ds``, all on the same events and the same users: events on items
    every model knows, users with at least ``max(shots) + min_query`` of them (chronological
    episodes). The comparison of the nightly gate."""
    from ..data.idmap import UNKNOWN

    events = ds.interactions[ds.interactions[S.USER_ID].isin(users)]
    known = np.ones(len(events), dtype=bool)
    for model in models.values():
        known &= model.item_map_.index(events[S.ITEM_ID].to_numpy(), unknown="mark") != UNKNOWN
    events = events[known]
    protocol = Protocol(shots=tuple(shots), min_query=min_query)
    counts = events[S.USER_ID].value_counts()
    eligible = np.sort(counts.index[counts >= max(shots) + min_query].to_numpy())
    out = {}
    for name, model in models.items():
        if len(eligible) == 0:
            out[name] = {"users": 0, "mae": float("nan"), "ndcg@10": float("nan")}
            continue
        h, _ = Histories.from_interactions(events[events[S.USER_ID].isin(eligible)], model.item_map_,
                                           user_ids=eligible)
        maes, ndcgs = [], []
        for k in shots:
            sup, qry = chronological_split(h, k, min_query=min_query)
            m, _, _ = measure(indexed(model, ds.users), {}, sup, qry, protocol)
            maes.append(m["mae"])
            ndcgs.append(m["ndcg@10"])
        out[name] = {"users": len(h), "mae": float(np.mean(maes)), "ndcg@10": float(np.nanmean(ndcgs))}
    return out
