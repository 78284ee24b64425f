"""Episodic meta-training: each user is a task; support sets of every size k in 0..k_max.

One step: sample B training users, split each history into support (chronological prefix, or an
augmented early-window subset) and query; emit heads from the supports (fold-in included); the
loss is on the queries: standardised rating MSE + ``rank_weight`` x a softmax over the whole
catalogue (support items masked, positives = query items rated >= ``positive_threshold``) +
``head_l2`` x the squared emitted residuals.

Validation users (held out of training) decide early stopping and the prior-strength
calibration; nothing here ever sees test users. A checkpoint is written after every epoch; each
epoch's randomness is derived from (seed, epoch), so a resumed run reaches the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Config
from ..data.episodes import EpisodeSampler, Histories, chronological_split
from ..networks.hyper import HyperRecModel
from ..numerics.features import FeatureTensors
from ..numerics.metrics import ndcg_at_k
from ..numerics.padding import Padded
from ..numerics.scores import membership
from .checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from .distributed import data_parallel, distributed

log = logging.getLogger(__name__)

MAX_VAL_USERS = 2000


@dataclass
class TrainingData:
    """Everything the loop needs, as tensors. Catalogue row ``n_items`` is the padding row."""

    histories: Histories              # every user with interactions, rows = user rows
    user_feats: FeatureTensors | None  # rows aligned with ``histories``
    item_index: torch.Tensor          # (N + 1,) model vocabulary index of each catalogue row
    item_feats: FeatureTensors        # (N + 1) rows
    train_rows: np.ndarray
    val_rows: np.ndarray
    implicit: bool

    @property
    def n_items(self) -> int:
        return len(self.item_index) - 1


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False
    prior_multiplier: tuple = (1.0, 1.0)          # (the head's vector, its user bias)
    calibration: dict = field(default_factory=dict)  # every multiplier tried and its validation loss
    item_item: dict = field(default_factory=dict)    # the EASE term's choice on validation users
    seconds: float = 0.0


def batch_user_feats(data: TrainingData, rows: np.ndarray) -> FeatureTensors | None:
    """The encoded features of users ``rows`` (``None`` when the data has no user features)."""
    return None if data.user_feats is None else data.user_feats.take(torch.from_numpy(rows))


def batch_loss(model: HyperRecModel, data: TrainingData, cfg: Config, rows: np.ndarray, support: Histories,
               query: Histories) -> tuple[torch.Tensor, dict]:
    """The meta-training loss of one batch of episodes (``rows``: the users' rows)."""
    t = cfg.train
    N = data.n_items
    e_all = model.items(data.item_index, data.item_feats)                   # (N + 1, d)
    items = model.item_table(e_all, data.item_index)                        # (N + 1) rows, last = padding
    sup = Padded.from_histories(support, pad_item=N)
    qry = Padded.from_histories(query, pad_item=N)
    heads, deltas = model.emit(e_all, data.item_index, sup, batch_user_feats(data, rows))

    # rating loss on query items
    pred = heads.per_event().rating(items.take(qry.items), pairs=True)     # (B, Q)
    n_q = qry.mask.sum().clamp(min=1)
    mse = (((pred - qry.ratings) / model.r_scale) ** 2 * qry.mask).sum() / n_q
    mae = ((pred - qry.ratings).abs() * qry.mask).sum() / n_q

    # ranking loss: softmax over the catalogue, support items excluded
    logits = heads.ranking(items.take(slice(0, N)))                         # (B, N)
    logp = F.log_softmax(logits.masked_fill(membership(support, N), float("-inf")), dim=1)
    pos = qry.mask if data.implicit else qry.mask * (qry.ratings >= t.positive_threshold).float()
    picked = logp.gather(1, qry.items.clamp(max=N - 1))                     # (B, Q)
    rank = -(picked.masked_fill(pos == 0, 0.0) * pos).sum() / pos.sum().clamp(min=1)

    l2 = deltas.pow(2).sum(-1).mean()
    loss = (0.0 if data.implicit else mse) + t.rank_weight * rank + t.head_l2 * l2
    return loss, {"loss": loss.item(), "mse": mse.item(), "mae": mae.item(), "rank": rank.item()}


@torch.no_grad()
def validate(model: HyperRecModel, data: TrainingData, cfg: Config, episodes: dict[int, tuple],
             with_ndcg: bool = True) -> dict:
    """Mean validation metrics over the fixed validation episodes (one set per k)."""
    model.eval()
    per_k = {}
    for k, (rows, sup, qry) in episodes.items():
        _, m = batch_loss(model, data, cfg, rows, sup, qry)
        if with_ndcg:
            m["ndcg10"] = _ndcg10(model, data, cfg, rows, sup, qry)
        per_k[k] = m
    names = ("loss", "mse", "mae", "rank") + (("ndcg10",) if with_ndcg else ())
    out = {name: float(np.mean([m[name] for m in per_k.values()])) for name in names}
    for k, m in per_k.items():
        out[f"mae_k{k}"] = m["mae"]
        if with_ndcg:
            out[f"ndcg10_k{k}"] = m["ndcg10"]
    return out


def _ndcg10(model, data, cfg, rows, sup, qry) -> float:
    """Full-catalogue nDCG@10 with binary gains (relevant = positive query items), support excluded."""
    N = data.n_items
    e_all = model.items(data.item_index, data.item_feats)
    heads, _ = model.emit(e_all, data.item_index, Padded.from_histories(sup, pad_item=N), batch_user_feats(data, rows))
    scores = heads.ranking(model.item_table(e_all[:N], data.item_index[:N]))
    positive = np.ones(len(qry.items), bool) if data.implicit else qry.ratings >= cfg.train.positive_threshold
    relevant = membership(qry.mask(positive), N)
    return float(ndcg_at_k(scores.masked_fill(membership(sup, N), float("-inf")), relevant, 10).mean())


def validation_episodes(data: TrainingData, shots: tuple[int, ...]) -> dict[int, tuple]:
    """Fixed chronological episodes of the validation users, one set per k."""
    out = {}
    h = data.histories.select(data.val_rows)
    for k in shots:
        eligible = np.flatnonzero(h.lengths >= k + 1)
        if eligible.size == 0:
            continue
        sup, qry = chronological_split(h.select(eligible), k, min_query=1)
        out[k] = (data.val_rows[eligible], sup, qry)
    return out


def train(model: HyperRecModel, data: TrainingData, cfg: Config, checkpoint_dir: str | os.PathLike | None = None,
          resume: bool = False, progress: bool = True,
          callback: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Meta-train ``model`` in place; returns the per-epoch history. Restores the best epoch.

    Runs with deterministic algorithms (multi-threaded CPU scatter / index backward otherwise
    differ in the last bits from run to run), so the same seed gives the same weights."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        return _train(model, data, cfg, checkpoint_dir, resume, progress, callback)
    finally:
        torch.use_deterministic_algorithms(previous)


class StepLoss(torch.nn.Module):
    """One step's meta-training loss as a ``forward``, so that PyTorch DDP can synchronise the
    gradients of the model it holds."""

    def __init__(self, model: HyperRecModel, data: TrainingData, cfg: Config):
        super().__init__()
        self.model, self.data, self.cfg = model, data, cfg

    def forward(self, rows: np.ndarray, support: Histories, query: Histories):
        return batch_loss(self.model, self.data, self.cfg, rows, support, query)


def _train(model, data, cfg, checkpoint_dir, resume, progress, callback) -> TrainResult:
    """The loop. Under a process group (torchrun), each rank takes its share of every batch's users
    and PyTorch DDP averages the gradients; every rank validates the same users, so all ranks take
    the same early-stopping decisions; rank 0 writes checkpoints and reports."""
    from tqdm.auto import tqdm

    t = cfg.train
    rank, world = distributed()
    # implicit data trains no rating bias: the only parameters a step can leave unused
    step = data_parallel(StepLoss(model, data, cfg), find_unused_parameters=data.implicit)
    sampler = EpisodeSampler(k_max=t.k_max, strategy=t.support_strategy, augment_prob=t.augment_prob,
                             window=t.augment_window, max_query=t.max_query)
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    val_eps = validation_episodes(data, t.val_shots)
    result = TrainResult()
    best_state, best_score, bad_epochs, start_epoch = None, math.inf, 0, 0
    ckpt_path = checkpoint_path(checkpoint_dir)
    t0 = time.perf_counter()
    ck = load_checkpoint(ckpt_path) if resume else None
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        best_state, best_score, bad_epochs = ck["best_state"], ck["best_score"], ck["bad_epochs"]
        result.history, result.best_epoch = list(ck["history"]), ck["best_epoch"]
        start_epoch = ck["epoch"] + 1
        log.info("resuming from %s after epoch %d", ckpt_path, ck["epoch"])
        if ck["stopped"]:
            start_epoch = t.epochs  # the run had already finished

    for epoch in range(start_epoch, t.epochs):
        rng = np.random.default_rng([t.seed, epoch])
        torch.manual_seed(t.seed * 100_003 + epoch)
        model.train()
        order = rng.permutation(data.train_rows)
        batches = [order[i:i + t.batch_users] for i in range(0, len(order), t.batch_users)]
        batches = [b for b in batches if len(b) >= world]                    # every rank gets users
        sample_rng = rng if world == 1 else np.random.default_rng([t.seed, epoch, rank + 1])
        running = []
        # disable=None: the bar switches itself off when output is not a terminal
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{t.epochs}", unit="batch", leave=False,
                   disable=None if progress and rank == 0 else True)
        for batch in bar:
            rows = batch[rank::world]                                        # this rank's share
            sup, qry = sampler.sample(data.histories.select(rows), sample_rng)
            keep = np.isin(data.histories.user_ids[rows], sup.user_ids)          # users long enough to split
            loss, m = step(rows[keep], sup, qry)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            opt.step()
            running.append(m["loss"])
            bar.set_postfix(loss=f"{np.mean(running[-20:]):.4f}")
        bar.close()
        val = validate(model, data, cfg, val_eps)
        metrics = {"epoch": epoch, "train_loss": float(np.mean(running)) if running else float("nan"),
                   **{f"val_{k}": v for k, v in val.items()}}
        result.history.append(metrics)
        improved = val["loss"] < best_score - 1e-5
        if improved:
            best_score, bad_epochs, result.best_epoch = val["loss"], 0, epoch
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
        stop = bad_epochs >= t.patience
        if rank == 0:
            log.info("epoch %d: train loss %.4f, val loss %.4f, val MAE %.4f, val nDCG@10 %.4f%s", epoch + 1,
                     metrics["train_loss"], val["loss"], val["mae"], val["ndcg10"], " (best)" if improved else "")
        if callback is not None and rank == 0:
            callback(epoch, metrics)
        if ckpt_path is not None and rank == 0:
            save_checkpoint(ckpt_path, epoch=epoch, model=model.state_dict(), optimizer=opt.state_dict(),
                            best_state=best_state, best_score=best_score, bad_epochs=bad_epochs,
                            history=result.history, best_epoch=result.best_epoch, stopped=stop)
        if stop:
            result.stopped_early = True
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    if t.calibrate and val_eps:
        result.prior_multiplier, result.calibration = calibrate_prior(model, data, cfg, val_eps)
    if model.item_item_rank and val_eps:
        from .item_item import fit_item_item

        result.item_item = fit_item_item(model, data, cfg, val_eps)
    result.seconds = time.perf_counter() - t0
    return result


@torch.no_grad()
def calibrate_prior(model: HyperRecModel, data: TrainingData, cfg: Config, val_eps: dict[int, tuple]
                    ) -> tuple[tuple[float, float], dict]:
    """Choose the prior-strength multipliers on validation users (k >= 1), on log grids: one for
    the head's vector, one for its user bias (tied to the first when ``calibration_bias_grid`` is
    empty). Returns the chosen pair and every validation loss."""
    t = cfg.train
    eps = {k: v for k, v in val_eps.items() if k >= 1} or val_eps
    pairs = ([(a, b) for a in t.calibration_grid for b in t.calibration_bias_grid] if t.calibration_bias_grid
             else [(a, a) for a in t.calibration_grid])
    scores = {}
    for a, b in pairs:
        set_prior_multiplier(model, a, b)
        scores[(a, b)] = validate(model, data, cfg, eps, with_ndcg=False)["loss"]
    best = min(scores, key=scores.get)
    set_prior_multiplier(model, *best)
    log.info("prior strength multipliers %.3g (head) and %.3g (user bias) chosen on validation users "
             "(loss %.4f; %d tried)", *best, scores[best], len(scores))
    return best, {f"{a:g},{b:g}": s for (a, b), s in scores.items()}


def set_prior_multiplier(model: HyperRecModel, head: float, bias: float) -> None:
    model.prior_multiplier[:-1] = head
    model.prior_multiplier[-1] = bias
