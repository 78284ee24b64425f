"""What meta-training chooses on the validation users once the networks are trained, each with the
one grid search (:func:`~recsys_hyper.numerics.search.grid_search`):

* the prior-strength multipliers of the emitted head (its vector and its user bias), by the
  validation loss (k >= 1);
* the EASE term of the ranking score: EASE's closed form on the training users (low rank), then
  its ridge ``lam`` and its weight by validation nDCG@10 (weight 0, the model alone, is always a
  candidate, and the term is only kept where it beats the model alone by a clear margin,
  ``item_item_min_gain``);
* the rating head's blend with its exact special cases (the tuned bias baseline, MF fold-in from
  a zero and from a features prior), weights per support size k by validation MAE (all 0 is the
  model alone, a weight of 1 that baseline exactly), so that the rating path is never worse than
  those baselines on the validation users at any k; where the best blend beats the best of those
  baselines alone by less than one standard error over the validation users, that baseline is
  kept (the one-standard-error rule).
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import torch

from ..config import Config
from ..data.episodes import Episode
from ..networks.hyper import BLEND, HyperRecModel
from ..numerics.item_item import ease_factors, gram_eigen
from ..numerics.padding import Padded
from ..numerics.metrics import mean_absolute_error
from ..numerics.search import SearchResult, grid_search, within_one_standard_error
from .data import TrainingData, batch_user_feats
from .validation import NetworkView, validate

log = logging.getLogger(__name__)


@torch.no_grad()
def calibrate_prior(model: HyperRecModel, data: TrainingData, cfg: Config, val_eps: list[Episode]
                    ) -> tuple[tuple[float, float], dict]:
    """Choose the prior-strength multipliers on validation users (k >= 1), on log grids: one for
    the head's vector, one for its user bias (tied to the first when ``calibration_bias_grid`` is
    empty). Returns the chosen pair and every validation loss."""
    t = cfg.train
    eps = [e for e in val_eps if e.k >= 1] or val_eps
    pairs = ([(a, b) for a in t.calibration_grid for b in t.calibration_bias_grid] if t.calibration_bias_grid
             else [(a, a) for a in t.calibration_grid])

    def loss(head: float, bias: float) -> float:
        set_prior_multiplier(model, head, bias)
        return validate(model, data, cfg, eps, measured=False)["loss"]

    search = grid_search({"head": list(t.calibration_grid), "bias": list(t.calibration_bias_grid)}, loss,
                         "validation loss", candidates=[{"head": a, "bias": b} for a, b in pairs],
                         desc="calibration (prior strength)")
    best = (search.chosen["head"], search.chosen["bias"])
    set_prior_multiplier(model, *best)
    log.debug("prior strength multipliers %.3g (head) and %.3g (user bias) chosen on validation users "
              "(loss %.4f; %d tried)", *best, search.score, len(search.scores))
    return best, {f"{c['head']:g},{c['bias']:g}": c["score"] for c in search.scores}


def set_prior_multiplier(model: HyperRecModel, head: float, bias: float) -> None:
    model.prior_multiplier[:-1] = head
    model.prior_multiplier[-1] = bias


@torch.no_grad()
def fit_item_item(model: HyperRecModel, data: TrainingData, cfg: Config, val_eps: list[Episode]) -> dict:
    """Fill the model's EASE buffers; returns what was chosen and every validation score."""
    t = cfg.train
    N = data.n_items
    F, sigma = gram_eigen(data.histories.select(data.train_rows), N, rank=model.item_item_rank, seed=t.seed)
    r = F.shape[1]
    eps = [e for e in val_eps if e.k >= 1] or val_eps
    units: dict[float, float] = {}                   # lam -> EASE's scale against the model's scores

    def set_term(lam: float, weight: float) -> None:
        model.ii_factors.zero_()
        model.ii_vectors.zero_()
        model.ii_weights.zero_()
        if weight:
            w, vectors = ease_factors(F, sigma, lam)
            model.ii_factors[:N, :r] = F.float()
            model.ii_vectors[:N, :r] = vectors
            model.ii_weights[:r] = w * weight

    def weight_of(lam: float, weight: float) -> float:
        """A grid weight in the model's units (EASE's scores scaled to the model's spread)."""
        if weight and lam not in units:
            units[lam] = _scale(model, data, eps, lambda w: set_term(lam, w))
        return weight * units.get(lam, 0.0)

    def ndcg(lam: float, weight: float) -> float:
        set_term(lam, weight_of(lam, weight))
        v = validate(model, data, cfg, eps)
        return float(np.mean([v[f"ndcg10_k{e.k}"] for e in eps]))

    candidates = [{"lam": 0.0, "weight": 0.0}] + [{"lam": lam, "weight": w} for lam in t.item_item_lambdas
                                                   for w in t.item_item_weights if w]   # the model alone first
    search = grid_search({"lam": list(t.item_item_lambdas), "weight": list(t.item_item_weights)}, ndcg,
                         "validation nDCG@10", lower_is_better=False, candidates=candidates,
                         key=lambda c, score: (round(score, 6), -weight_of(c["lam"], c["weight"])),  # ties: smaller
                         desc="EASE term")
    alone = search.scores[0]["score"]
    best = (search.chosen["lam"], weight_of(search.chosen["lam"], search.chosen["weight"]))
    if search.score < alone * (1 + t.item_item_min_gain):
        best = (0.0, 0.0)       # a gain this small on a few hundred users is noise more often than not
    scores = {(c["lam"], weight_of(c["lam"], c["weight"])): c["score"] for c in search.scores}
    set_term(*best)
    log.debug("EASE term: lambda %g, weight %.3g chosen on validation users (nDCG@10 %.4f; model alone %.4f)",
              best[0], best[1], scores[best], alone)
    return {"lambda": best[0], "weight": best[1], "ndcg10": scores[best], "alone": alone,
            "scores": {f"{lam:g},{w:.4g}": s for (lam, w), s in scores.items()}}


def _scale(model: HyperRecModel, data: TrainingData, eps: list[Episode], set_weight) -> float:
    """How EASE's scores compare in spread with the model's (median over validation users of the
    ratio of per-user standard deviations over the catalogue), so that the weights of the grid
    mean the same on every dataset."""
    e = sorted(eps, key=lambda e: e.k)[len(eps) // 2]
    rows, sup = e.rows, e.support
    N = data.n_items
    e_all = model.items(data.item_index, data.item_feats)
    padded = Padded.from_histories(sup, pad_item=N)

    def scores() -> torch.Tensor:                                          # (B, N) ranking scores
        heads, _ = model.emit(e_all, data.item_index, padded, batch_user_feats(data, rows))
        return heads.ranking(model.item_table(e_all[:N], data.item_index[:N]))

    set_weight(0.0)
    alone = scores()
    set_weight(1.0)
    ease = scores() - alone
    set_weight(0.0)
    ratio = alone.std(1) / ease.std(1).clamp(min=1e-12)
    return float(ratio.median())


@torch.no_grad()
def fit_rating_blend(model: HyperRecModel, data: TrainingData, cfg: Config, val_eps: list[Episode]) -> dict:
    """Fill :attr:`~recsys_hyper.networks.hyper.HyperRecModel.rating_blend`: for each validation
    k, the weights of the rating's special cases (:data:`~recsys_hyper.networks.hyper.BLEND`: the
    bias baseline, and MF fold-in from a zero and from a features prior when the model has MF; each
    on the grid, summing to at most 1) with the lowest validation MAE (predictions clipped to the
    scale), unless it beats the best case alone (a weight of 1) by less than one standard error of
    their paired difference over the validation users: then that case alone (the one-standard-error
    rule: a baseline exactly, where the data do not show the blend better); a support size between
    two validated ones takes the smaller one's weights. Each
    candidate is measured through the model itself: the rating is linear in the weights, so every
    blend's predictions are the weighted sum of the pure cases'. Returns the weights and scores."""
    grid = list(cfg.train.rating_blend_grid)
    model.rating_blend.zero_()
    N = data.n_items
    if data.mf is not None and model.mf_rank:                    # MF's item biases, as deltas from the model's
        model.mf_delta[:N] = data.mf.mu + data.mf.item_bias - model.mu - model.item_bias[:N]
    names = BLEND if model.mf_rank else BLEND[:1]
    axes = {name: grid for name in names}
    candidates = [dict(zip(names, c)) for c in itertools.product(grid, repeat=len(names)) if sum(c) <= 1 + 1e-9]
    lo, hi = data.rating_range
    weights, scores = {}, {}
    for e in sorted(val_eps, key=lambda e: e.k):
        view = NetworkView(model, data, e.rows)
        owner, items = torch.from_numpy(e.query.owners()), torch.from_numpy(e.query.items.astype(np.int64))
        pure = []                                                  # (P,) the model alone, then each case alone
        for j in range(-1, len(names)):
            model.rating_blend.zero_()
            if j >= 0:
                model.rating_blend[:, j] = 1.0
            pure.append(view.rate(view.adapt(e.support), owner, items))
        model.rating_blend.zero_()
        actual = e.query.ratings.astype(np.float64)
        per_user = {}                                  # candidate -> per-user sums of absolute errors

        def mae(**point) -> float:
            ws = [point[name] for name in names]
            blend = (1 - sum(ws)) * pure[0] + sum(w * p for w, p in zip(ws, pure[1:]))
            predicted = blend.clamp(lo, hi).double().numpy()
            per_user[tuple(ws)] = np.bincount(owner.numpy(), np.abs(predicted - actual), minlength=len(e.query))
            return mean_absolute_error(predicted, actual)

        search = grid_search(axes, mae, "validation MAE", candidates=candidates)
        chosen = blend_or_alone(search, names, per_user, len(actual))
        weights[e.k] = [dict(zip(names, chosen)).get(name, 0.0) for name in BLEND]
        scores[e.k] = search.scores
    for k in range(model.rating_blend.shape[0]):
        below = [w for kk, w in weights.items() if kk <= k]
        model.rating_blend[k] = torch.tensor(below[-1] if below else [0.0] * len(BLEND))
    log.debug("the rating's blend with %s per k, chosen on validation users: %s", ", ".join(BLEND), weights)
    return {"weights": weights, "scores": scores, "grid": {name: grid if name in names else [0.0] for name in BLEND}}


def blend_or_alone(search: SearchResult, names: tuple[str, ...], per_user: dict, pairs: int) -> tuple[float, ...]:
    """One k's weights (in the order of ``names``) from the grid search over them (its choice: the
    lowest validation MAE) and every candidate's per-user sums of absolute errors (``per_user``:
    weights -> (users,)): that choice, unless the best case alone (a weight of 1) is within one
    standard error of it (:func:`~recsys_hyper.numerics.search.within_one_standard_error`)."""
    weights = lambda c: tuple(c[name] for name in names)  # noqa: E731
    best = weights(search.chosen)
    alone = [c for c in search.scores if np.isfinite(c["score"])
             and sorted(weights(c)) == [0.0] * (len(names) - 1) + [1.0]]
    if not alone or not np.isfinite(search.score):
        return best
    simple = weights(min(alone, key=lambda c: c["score"]))
    return simple if simple != best and within_one_standard_error(per_user[best], per_user[simple], pairs) else best
