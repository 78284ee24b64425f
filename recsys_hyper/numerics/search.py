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


def within_one_standard_error(best: np.ndarray, simpler: np.ndarray, pairs: int) -> bool:
    """The one-standard-error rule (Breiman et al. 1984; glmnet's ``lambda.1se``) for a pair-weighted
    mean error: ``best`` and ``simpler`` are two candidates' per-user sums of absolute errors over
    the same users and pairs (``pairs`` in all); True when the best candidate's mean error is not
    lower than the simpler one's by more than one standard error of their paired difference, so that
    the simpler candidate should be kept: a gain of that size on a few hundred users is noise."""
    d = np.asarray(best, np.float64) - np.asarray(simpler, np.float64)       # per user; negative: best better
    if d.size < 2 or pairs <= 0:
        return True
    se = math.sqrt(d.size) * float(d.std(ddof=1)) / pairs
    return -float(d.sum()) / pairs <= se
