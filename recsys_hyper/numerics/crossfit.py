"""Cross-fitting: the closed-form choices made on every training user, not on a sample of a hundred.

The users are split into ``K`` folds (seeded; a caller may fix fold 0, e.g. the network's
validation users, so that fold 0's fits are the ones that never saw them). For fold ``j`` a
candidate is fitted on the other folds' users and measured on fold ``j``'s users as new users:
their chronological episodes (support = the ``k`` earliest events, query = the rest; see
:func:`~recsys_hyper.data.episodes.validation_episodes`). Every user is measured by a fit that
never saw them, so a candidate's score -- the mean over ``k`` of the mean over *all* users of their
MAE, the figure the evaluation reports -- rests on every training user. Measured on MovieLens
100K (754 users): the bias baseline's two regularisers chosen this way were the same on every draw
of the folds and of the users tried, where one validation split of ~110 users chose (0.3, 3) on
one draw and (1, 10) on another.

The closed-form models (the bias baseline, MF fold-in) choose their hyper-parameters here, then
are fitted once on all the users; :func:`choose_weights` blends several models' out-of-fold
predictions per support size.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ..data.episodes import TUNING_SHOTS, Episode, Histories, capped_sample, validation_episodes
from .measure import Measurable, mean_of_users, measure_episode, user_errors
from .metrics import per_user_errors
from .search import within_one_standard_error

#: folds of a cross-fit
K_FOLDS = 5
#: above this many users the folds are cut from a seeded sample of them (the choice is stable at
#: that size, and a search then costs the same however many users there are)
MAX_USERS = 200_000


@dataclass(frozen=True)
class Folds:
    """``K`` folds of users: ``rows`` (into the histories they were cut from) of each fold's users,
    ``train`` the histories of every *other* fold's users (what fold ``j``'s candidate is fitted
    on), ``episodes`` the chronological episodes of fold ``j``'s users (their ``rows`` index the
    fold's users)."""

    rows: tuple[np.ndarray, ...]
    train: tuple[Histories, ...]
    episodes: tuple[list[Episode], ...]

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def split(cls, h: Histories, n_folds: int = K_FOLDS, seed: int = 0, first: np.ndarray | None = None,
              max_users: int | None = MAX_USERS, shots: Sequence[int] = TUNING_SHOTS) -> "Folds":
        """Folds of the users of ``h`` (a seeded sample of ``max_users`` of them when there are
        more). ``first``: rows that form fold 0 (the rest are dealt at random into the others)."""
        if n_folds < 2:
            raise ValueError(f"cross-fitting needs at least 2 folds, got {n_folds}")
        rng = np.random.default_rng([seed, 65537])
        rest = np.arange(len(h)) if first is None else np.setdiff1d(np.arange(len(h)), first)
        if first is not None and max_users is not None:
            first = np.sort(first)[capped_sample(len(first), max(1, max_users // n_folds), [seed, 3])]
        cap = None if max_users is None else max(n_folds, max_users - (0 if first is None else len(first)))
        rest = rest[capped_sample(len(rest), cap, [seed, 5])]
        dealt = rng.permutation(rest)
        if first is None:
            rows = [np.sort(dealt[j::n_folds]) for j in range(n_folds)]
        else:
            rows = [np.sort(first)] + [np.sort(dealt[j::n_folds - 1]) for j in range(n_folds - 1)]
        rows = [r for r in rows if len(r)]
        if len(rows) < 2:
            raise ValueError(f"cross-fitting needs users in at least 2 folds; {len(h)} users given")
        everyone = np.sort(np.concatenate(rows))
        train = tuple(h.select(np.setdiff1d(everyone, r, assume_unique=True)) for r in rows)
        episodes = tuple(validation_episodes(h.select(r), tuple(shots), max_users=None) for r in rows)
        return cls(tuple(rows), train, episodes)

    def users(self) -> int:
        """How many users the folds hold."""
        return int(sum(len(r) for r in self.rows))


def crossfit_errors(folds: Folds, model_of: Callable[[int], Measurable], **adapt_kwargs) -> dict[int, list[np.ndarray]]:
    """Per support size ``k``, each fold's users' MAE (a list of arrays, one per fold), every fold
    measured with ``model_of(j)``: the candidate fitted on ``folds.train[j]``."""
    out: dict[int, list[np.ndarray]] = {}
    for j in range(len(folds)):
        for k, errors in user_errors(model_of(j), folds.episodes[j], **adapt_kwargs).items():
            out.setdefault(k, []).append(errors)
    return out


def crossfit_mae(folds: Folds, model_of: Callable[[int], Measurable], **adapt_kwargs) -> float:
    """A candidate's cross-fitted score: the mean over ``k`` of the mean over every fold's users
    of their MAE (see :func:`crossfit_errors`)."""
    return mean_of_users(crossfit_errors(folds, model_of, **adapt_kwargs))


@dataclass
class Predictions:
    """Several models' predictions of the same query pairs of one support size: ``parts`` (C, P)
    (one row per model, on the rating scale), ``actual`` (P,), ``owner`` (P,) the user of each pair
    (0..``users`` - 1, users of every fold numbered apart)."""

    parts: np.ndarray
    actual: np.ndarray
    owner: np.ndarray
    users: int

    def errors(self, weights: np.ndarray, rating_range: tuple | None) -> np.ndarray:
        """Each user's MAE of the blend ``weights @ parts`` (clipped to the scale): (users,)."""
        blend = np.asarray(weights, np.float64) @ self.parts
        if rating_range is not None:
            blend = np.clip(blend, *rating_range)
        return per_user_errors(blend, self.actual, self.owner, self.users)[0]

    @classmethod
    def concat(cls, parts: list["Predictions"]) -> "Predictions":
        offsets = np.cumsum([0] + [p.users for p in parts[:-1]])
        return cls(np.concatenate([p.parts for p in parts], 1), np.concatenate([p.actual for p in parts]),
                   np.concatenate([p.owner + o for p, o in zip(parts, offsets)]), int(sum(p.users for p in parts)))


def episode_predictions(models: Sequence[Measurable], e: Episode) -> Predictions:
    """``models``' predictions (clipped to the scale) of episode ``e``'s query pairs."""
    rows = []
    for model in models:
        m = measure_episode(model, e.support, e.query, rank=False, per_user=False)
        rows.append(m.predicted)
    owner = e.query.owners()
    return Predictions(np.stack(rows).astype(np.float64), e.query.ratings.astype(np.float64), owner, len(e.query))


def crossfit_predictions(folds: Folds, models_of: Callable[[int], Sequence[Measurable]]) -> dict[int, Predictions]:
    """Per support size, the out-of-fold predictions of several models for every fold's users
    (fold ``j``'s by ``models_of(j)``, fitted without them), pooled."""
    out: dict[int, list[Predictions]] = {}
    for j in range(len(folds)):
        models = models_of(j)
        for e in folds.episodes[j]:
            out.setdefault(e.k, []).append(episode_predictions(models, e))
    return {k: Predictions.concat(parts) for k, parts in sorted(out.items())}


def simplex(values: Sequence[float], n: int) -> list[tuple[float, ...]]:
    """Every vector of ``n`` weights, each one of ``values``, summing to 1 (in the order of the
    product of ``values``)."""
    return [tuple(float(v) for v in combo) for combo in itertools.product(sorted(set(values)), repeat=n)
            if abs(sum(combo) - 1.0) < 1e-9]


@dataclass
class Choice:
    """The weights chosen per support size, and every candidate's score (mean over users of their
    MAE) per support size."""

    weights: dict[int, tuple[float, ...]]
    scores: dict[int, dict[tuple[float, ...], float]]


def choose_weights(predictions: dict[int, Predictions], candidates: Sequence[tuple[float, ...]],
                   rating_range: tuple | None, simpler: tuple[float, ...] | None = None,
                   shared: Callable[[int], object] | None = None) -> Choice:
    """Per support size, the candidate weights (over the rows of each :class:`Predictions`) with
    the lowest mean over users of their MAE, under these rules:

    * ``shared(k)``: the sizes with the same key share one candidate, the lowest mean over them
      (fewer choices from the same users: for a few hundred users, where per-size choices jump
      between neighbouring sizes); a size keeps its own best only where that beats the shared one
      by more than one standard error there;
    * *the one-standard-error rule* (when ``simpler`` is given): that candidate is kept unless the
      best beats it by more than one standard error of their paired per-user difference
      (:func:`~recsys_hyper.numerics.search.within_one_standard_error`; pooled over the sizes that
      share a choice), so that a gain the users cannot tell from noise does not move the choice;
    * *one more rating never hurts*: taking the sizes in increasing order, a size whose choice
      scores worse than the previous size's chosen score takes the best candidate that does not,
      where one does (neighbouring sizes are measured on mostly the same users: those with more
      events than the larger size)."""
    per_user = {k: {c: p.errors(np.asarray(c), rating_range) for c in candidates} for k, p in predictions.items()}
    scores = {k: {c: float(np.nanmean(e)) if np.isfinite(e).any() else math.inf for c, e in pu.items()}
              for k, pu in per_user.items()}

    def one_se(best, pool: list[int]):
        if simpler is None or best == simpler:
            return best
        d_best = np.concatenate([per_user[k][best] for k in pool])
        d_simple = np.concatenate([per_user[k][simpler] for k in pool])
        return simpler if within_one_standard_error(d_best, d_simple) else best

    ks = sorted(predictions)
    groups: dict = {}
    for k in ks:
        groups.setdefault(shared(k) if shared is not None else k, []).append(k)
    common = {}
    for pool in groups.values():
        pooled = {c: float(np.mean([scores[k][c] for k in pool])) for c in candidates}
        choice = one_se(min(candidates, key=lambda c: (pooled[c], candidates.index(c))), pool)
        common.update({k: choice for k in pool})
    weights = {}
    previous = math.inf
    for k in ks:
        best = common[k]
        own = one_se(min(candidates, key=lambda c: (scores[k][c], candidates.index(c))), [k])
        if shared is not None and own != best and not within_one_standard_error(per_user[k][own], per_user[k][best]):
            best = own                                  # this size's users clearly disagree with the shared choice
        if scores[k][best] > previous + 1e-12:
            allowed = [c for c in candidates if scores[k][c] <= previous + 1e-12]
            if allowed:
                best = min(allowed, key=lambda c: (scores[k][c], candidates.index(c)))
        weights[k] = best
        previous = scores[k][best]
    return Choice(weights, scores)


def interpolate(weights: dict[int, Sequence[float]], k_max: int) -> torch.Tensor:
    """Weights for every support size 0..``k_max`` (k_max + 1, C) from those chosen at some sizes:
    linear between neighbouring chosen sizes, the nearest one's beyond them (choices smooth in k)."""
    ks = sorted(weights)
    table = np.asarray([weights[k] for k in ks], np.float64)                   # (S, C)
    grid = np.arange(k_max + 1)
    out = np.stack([np.interp(grid, ks, table[:, c]) for c in range(table.shape[1])], 1)
    return torch.from_numpy(out.astype(np.float32))


@dataclass
class FixedBlend:
    """Fitted models blended with the weights chosen per support size (``weights``: k -> one weight
    per model; sizes between two chosen ones interpolated, see :func:`interpolate`): what the
    closed-form special cases predict together, as one more candidate to blend with."""

    models: Sequence[Measurable]
    weights: dict[int, tuple[float, ...]]
    rating_range: tuple | None

    def predict(self, e: Episode) -> np.ndarray:
        """The blend's predictions (clipped to the scale) of episode ``e``'s query pairs (P,)."""
        w = interpolate(self.weights, max(max(self.weights), e.k))[e.k].double().numpy()
        blend = w @ episode_predictions(self.models, e).parts
        return np.clip(blend, *self.rating_range) if self.rating_range is not None else blend
