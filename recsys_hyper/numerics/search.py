"""Choosing hyper-parameters on validation users: the one grid search, recorded one way.

Every choice a method makes at fit time goes through :func:`grid_search`: the baselines'
regularisers, shrinkage, dimensions and EASE's lambda, the bias fit's regularisers, the
hypernetwork's prior-strength multipliers and its EASE term. Each candidate is scored by a
function the caller gives (which sets the candidate and measures it, usually with
:mod:`.measure`); non-finite scores never win when a finite one exists; the result is recorded as
``{"grid", "chosen", "metric", "score", "scores"}`` (what ``model.json`` keeps under ``tuning``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np


@dataclass
class SearchResult:
    """The chosen candidate, its score, and every candidate tried with its score (in order)."""

    chosen: dict
    score: float
    scores: list = field(default_factory=list)
    grid: dict = field(default_factory=dict)
    metric: str = ""

    def record(self) -> dict:
        """The search as ``model.json`` keeps it under ``tuning``."""
        return {"grid": self.grid, "chosen": self.chosen, "metric": self.metric, "score": self.score,
                "scores": self.scores}


def grid_search(grid: dict[str, Sequence], score: Callable[..., float], metric: str, lower_is_better: bool = True,
                candidates: Sequence[dict] | None = None, key: Callable[[dict, float], object] | None = None,
                desc: str | None = None) -> SearchResult:
    """Score every candidate and choose one.

    ``grid``: name -> values; the candidates are their product (in order), unless ``candidates``
    lists them. ``score(**candidate)`` measures one. The best is the lowest (or highest) score among
    the finite ones, the first in order on ties; ``key(candidate, score)``, when given, replaces
    that rule (the highest key wins, e.g. to prefer the smaller weight among equal scores).
    ``desc``: report progress under that name (searches that take seconds: a bar on a terminal,
    periodic log lines otherwise; see :mod:`recsys_hyper.progress`)."""
    names = list(grid)
    points = list(candidates) if candidates is not None else [
        dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]
    from ..progress import progress

    with progress(total=len(points), desc=desc or "", unit="candidate", enabled=desc is not None, leave=False) as bar:
        results = []
        for point in points:
            results.append((point, float(score(**point))))
            bar.update()
    finite = [r for r in results if math.isfinite(r[1])] or results
    if key is not None:
        best = max(finite, key=lambda r: key(*r))
    else:
        best = (min if lower_is_better else max)(finite, key=lambda r: r[1])
    return SearchResult(dict(best[0]), best[1], [{**p, "score": s} for p, s in results],
                        {n: list(grid[n]) for n in names}, metric)


def within_one_standard_error(best: np.ndarray, simpler: np.ndarray) -> bool:
    """The one-standard-error rule (Breiman et al. 1984; glmnet's ``lambda.1se``) over users:
    ``best`` and ``simpler`` are two candidates' per-user errors on the same users (NaN where a
    user has none); True when the best's mean is not lower than the simpler's by more than one
    standard error of their paired difference, so that the simpler candidate should be kept: a
    gain of that size on a few hundred users is noise."""
    d = np.asarray(best, np.float64) - np.asarray(simpler, np.float64)          # per user; negative: best better
    d = d[np.isfinite(d)]
    if d.size < 2:
        return True
    return -float(d.mean()) <= float(d.std(ddof=1)) / math.sqrt(d.size)


def coordinate_search(grid: dict[str, Sequence], score: Callable[..., float], metric: str,
                      start: dict | None = None, desc: str | None = None) -> SearchResult:
    """A grid searched one axis at a time instead of whole: from ``start`` (default: every axis's
    middle value), each axis in turn is walked from the current point towards its neighbour that
    scores lower, while that improves; rounds repeat until no axis moves. Every point is scored
    once (cached). On a grid whose score is unimodal along each axis (regularisers, ranks) it finds
    the grid's best for a few of its points: 5 of the 20 (rank, regulariser) pairs of MF's grid.
    Lower is better; non-finite scores never win."""
    names = list(grid)
    values = {n: list(grid[n]) for n in names}
    at = {n: values[n].index(start[n]) if start and n in start else (len(values[n]) - 1) // 2 for n in names}
    seen: dict[tuple, float] = {}
    order: list[tuple] = []
    from ..progress import progress

    with progress(total=None, desc=desc or "", unit="candidate", enabled=desc is not None, leave=False) as bar:
        def value(pos: dict) -> float:
            key = tuple(pos[n] for n in names)
            if key not in seen:
                s = float(score(**{n: values[n][pos[n]] for n in names}))
                seen[key] = s if math.isfinite(s) else math.inf
                order.append(key)
                bar.update()
            return seen[key]

        moved = True
        while moved:
            moved = False
            for n in names:
                for step in (-1, 1):
                    while 0 <= at[n] + step < len(values[n]) and value({**at, n: at[n] + step}) < value(at):
                        at = {**at, n: at[n] + step}
                        moved = True
    best = tuple(at[n] for n in names)
    point = lambda key: {n: values[n][i] for n, i in zip(names, key)}  # noqa: E731
    return SearchResult(point(best), seen[best], [{**point(key), "score": seen[key]} for key in order],
                        {n: values[n] for n in names}, metric)
