"""What meta-training chooses on the validation users once the networks are trained, each with the
one grid search (:func:`~recsys_hyper.numerics.search.grid_search`):

* the prior-strength multipliers of the emitted head (its vector and its user bias), by the
  validation loss (k >= 1);
* the EASE term of the ranking score: EASE's closed form on the training users (low rank), then
  its ridge ``lam`` and its weight by validation nDCG@10 (weight 0, the model alone, is always a
  candidate, and the term is only kept where it beats the model alone by a clear margin,
  ``item_item_min_gain``);
* the rating's blend with its exact special cases (the bias baseline, MF fold-in from a zero and
  from a features prior, blended with the weights chosen for them by cross-fitting over every
  training user): the network's share per support size k, by the validation users' MAE (a mean
  over users), never worse at k than at the previous k where that can be had, and none unless it
  beats the special cases alone by more than one standard error (the one-standard-error rule).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..config import Config
from ..data.episodes import Episode
from ..networks.hyper import BLEND, HyperRecModel
from ..numerics.item_item import ease_factors, gram_eigen
from ..numerics.crossfit import Predictions, choose_weights, interpolate
from ..numerics.padding import Padded
from ..numerics.search import grid_search
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
    """Fill :attr:`~recsys_hyper.networks.hyper.HyperRecModel.rating_blend`: per support size, the
    network's share of the rating beside its closed-form special cases (``data.closed_form``: the
    bias baseline and MF fold-in blended with the weights chosen for them by cross-fitting over
    every training user, fitted without the validation users), chosen on the validation users'
    episodes by the mean over users of their MAE (predictions clipped to the scale): one share for
    users without events, one for every k >= 1, with the rules of
    :func:`~recsys_hyper.numerics.crossfit.choose_weights`: the special cases alone are kept unless
    the network's share beats them by more than one standard error over the validation users, and
    one more rating never hurts on average (no size's choice scores worse than the previous
    size's, where a candidate can). The chosen weights become the rows of
    ``rating_blend`` (each special case's weight times 1 minus the network's share), linear in k
    between validated sizes. Returns the weights per validated size and every candidate's score."""
    closed = data.closed_form
    model.rating_blend.zero_()
    shares = [float(a) for a in cfg.train.rating_blend_grid]
    if closed is None or not shares:
        return {}
    predictions = {}
    for e in sorted(val_eps, key=lambda e: e.k):
        view = NetworkView(model, data, e.rows)
        owner, items = torch.from_numpy(e.query.owners()), torch.from_numpy(e.query.items.astype(np.int64))
        alone = view.rate(view.adapt(e.support), owner, items).double().numpy()        # (P,) the network alone
        predictions[e.k] = Predictions(np.stack([closed.predict(e), alone]), e.query.ratings.astype(np.float64),
                                       owner.numpy(), len(e.query))
    candidates = [(1.0 - a, a) for a in sorted(set(shares) | {0.0})]
    # one share for users without events (the network has only their features to go on) and one
    # for every k >= 1: per-k shares, on a few hundred validation users, jumped between neighbours
    choice = choose_weights(predictions, candidates, data.rating_range, simpler=(1.0, 0.0), shared=lambda k: k > 0)
    cases = interpolate(closed.weights, max(choice.weights)).double().numpy()   # as the special cases predict
    rows = {k: tuple((1.0 - choice.weights[k][1]) * cases[k]) for k in choice.weights}   # per special case
    names = BLEND[:len(next(iter(rows.values())))]
    padded = {k: w + (0.0,) * (len(BLEND) - len(w)) for k, w in rows.items()}         # no MF: the bias alone
    model.rating_blend.copy_(interpolate(padded, model.rating_blend.shape[0] - 1))
    weights = {k: [float(x) for x in w] + [0.0] * (len(BLEND) - len(w)) for k, w in rows.items()}
    log.debug("the rating's blend with %s per k, chosen on validation users: %s", ", ".join(names), weights)
    return {"weights": weights, "network": {k: float(w[1]) for k, w in choice.weights.items()},
            "scores": {k: {f"{c[1]:g}": v for c, v in sc.items()} for k, sc in choice.scores.items()},
            "grid": {"network": [c[1] for c in candidates]}}
