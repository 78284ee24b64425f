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
import functools
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
from ..data.episodes import EpisodeSampler, Histories, capped_sample, chronological_split
from ..networks.hyper import HyperRecModel
from ..numerics.features import FeatureTensors
from ..numerics.metrics import ndcg_at_k
from ..numerics.padding import Padded
from ..numerics.scores import membership
from .checkpoint import check_identity, checkpoint_path, load_checkpoint, same_identity, save_checkpoint
from .distributed import data_parallel, distributed

log = logging.getLogger(__name__)



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

    @functools.cached_property
    def negative_distribution(self) -> torch.Tensor:
        """(N,) sampling probabilities of the sampled softmax's negatives: training counts^0.75,
        smoothed so that every item can be drawn (computed once)."""
        counts = np.bincount(self.histories.select(self.train_rows).items, minlength=self.n_items)
        q = (counts + 1.0) ** 0.75
        return torch.from_numpy(q / q.sum()).float()


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False
    steps: int = 0                                 # optimisation steps taken (this process, this run)
    prior_multiplier: tuple = (1.0, 1.0)          # (the head's vector, its user bias)
    calibration: dict = field(default_factory=dict)  # every multiplier tried and its validation loss
    item_item: dict = field(default_factory=dict)    # the EASE term's choice on validation users
    seconds: float = 0.0
    step_seconds: float = 0.0                      # of which in optimisation steps (no validation)
    episodes: int = 0                              # users sampled into the steps' episodes, all processes


def batch_user_feats(data: TrainingData, rows: np.ndarray) -> FeatureTensors | None:
    """The encoded features of users ``rows`` (``None`` when the data has no user features)."""
    return None if data.user_feats is None else data.user_feats.take(torch.from_numpy(rows))


def batch_loss(model: HyperRecModel, data: TrainingData, cfg: Config, rows: np.ndarray, support: Histories,
               query: Histories, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """The meta-training loss of one batch of episodes (``rows``: the users' rows).

    Catalogues of up to ``full_softmax_items`` items: the ranking loss is a softmax over all of
    them. Larger ones: over the batch's own items plus ``negatives`` items drawn by popularity^0.75
    (``generator``, or the global seed), each logit corrected by ``-log`` of its expected count (the
    log-Q correction), and the item tower runs only for the items the step needs."""
    t = cfg.train
    N = data.n_items
    index, feats, correction = data.item_index, data.item_feats, None
    if N > t.full_softmax_items:
        q = data.negative_distribution
        drawn = torch.multinomial(q, t.negatives, replacement=True, generator=generator)
        need = torch.unique(torch.cat([torch.from_numpy(support.items.astype(np.int64)),
                                       torch.from_numpy(query.items.astype(np.int64)), drawn]))
        local = torch.full((N + 1,), len(need), dtype=torch.long)            # anything else: the pad row
        local[need] = torch.arange(len(need))
        support, query = _relabel(support, local), _relabel(query, local)
        rows_needed = torch.cat([need, torch.tensor([N])])
        index, feats = data.item_index[rows_needed], data.item_feats.take(rows_needed)
        correction = -torch.log(q[need] * t.negatives)                       # (M,) log-Q
    M = len(index) - 1                                                       # catalogue rows of this step
    e_all = model.items(index, feats)                                       # (M + 1, d)
    items = model.item_table(e_all, index)                                  # (M + 1) rows, last = padding
    sup = Padded.from_histories(support, pad_item=M)
    heads, deltas = model.emit(e_all, index, sup, batch_user_feats(data, rows))
    # the query events as flat (user, item) pairs: long-tailed query lengths cost their events,
    # not users x the longest query
    owner = torch.from_numpy(query.owners())                                # (E,)
    q_items = torch.from_numpy(query.items.astype(np.int64))                 # (E,)
    q_ratings = torch.from_numpy(query.ratings)                              # (E,)

    # rating loss on query items
    pred = heads.take(owner).rating(items.take(q_items), pairs=True)        # (E,)
    n_q = max(1, len(q_items))
    mse = ((pred - q_ratings) / model.r_scale).pow(2).sum() / n_q
    mae = (pred - q_ratings).abs().sum() / n_q

    # ranking loss: softmax over the catalogue (or the step's sample of it), support items excluded
    logits = heads.ranking(items.take(slice(0, M)))                         # (B, M)
    if correction is not None:
        logits = logits + correction
    logp = F.log_softmax(logits.masked_fill(membership(support, M), float("-inf")), dim=1)
    pos = torch.ones_like(q_ratings) if data.implicit else (q_ratings >= t.positive_threshold).float()
    picked = logp[owner, q_items]                                            # (E,)
    rank = -(picked.masked_fill(pos == 0, 0.0) * pos).sum() / pos.sum().clamp(min=1)

    l2 = deltas.pow(2).sum(-1).mean()
    loss = (0.0 if data.implicit else mse) + t.rank_weight * rank + t.head_l2 * l2
    return loss, {"loss": loss.item(), "mse": mse.item(), "mae": mae.item(), "rank": rank.item()}


def _relabel(h: Histories, local: torch.Tensor) -> Histories:
    """The same events with item indices mapped through ``local``."""
    return Histories(h.user_ids, h.indptr, local[torch.from_numpy(h.items.astype(np.int64))].numpy(), h.ratings,
                     h.timestamps)


@torch.no_grad()
def validate(model: HyperRecModel, data: TrainingData, cfg: Config, episodes: dict[int, tuple],
             with_ndcg: bool = True) -> dict:
    """Mean validation metrics over the fixed validation episodes (one set per k)."""
    model.eval()
    per_k = {}
    for k, (rows, sup, qry) in episodes.items():
        # a fixed draw of negatives (large catalogues), so that validation losses compare across epochs
        _, m = batch_loss(model, data, cfg, rows, sup, qry, generator=torch.Generator().manual_seed(k))
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


def _ndcg10(model, data, cfg, rows, sup, qry, chunk: int = 512) -> float:
    """Full-catalogue nDCG@10 with binary gains (relevant = positive query items), support excluded;
    in chunks of users, so that memory stays bounded with a large catalogue."""
    N = data.n_items
    e_all = model.items(data.item_index, data.item_feats)
    items = model.item_table(e_all[:N], data.item_index[:N])
    positive = np.ones(len(qry.items), bool) if data.implicit else qry.ratings >= cfg.train.positive_threshold
    relevant_items = qry.mask(positive)
    values = []
    for start in range(0, len(sup), chunk):
        part = np.arange(start, min(len(sup), start + chunk))
        s = sup.select(part)
        heads, _ = model.emit(e_all, data.item_index, Padded.from_histories(s, pad_item=N),
                              batch_user_feats(data, rows[part]))
        scores = heads.ranking(items).masked_fill(membership(s, N), float("-inf"))
        values.append(ndcg_at_k(scores, membership(relevant_items.select(part), N), 10))
    return float(torch.cat(values).mean()) if values else float("nan")


def validation_episodes(data: TrainingData, shots: tuple[int, ...], max_users: int | None = None,
                        seed: int = 0) -> dict[int, tuple]:
    """Fixed chronological episodes of the validation users (a seeded sample of at most
    ``max_users``, so validation costs the same however many users there are), one set per k."""
    out = {}
    val_rows = data.val_rows
    val_rows = val_rows[capped_sample(len(val_rows), max_users, [seed, 104729])]
    h = data.histories.select(val_rows)
    for k in shots:
        eligible = np.flatnonzero(h.lengths >= k + 1)
        if eligible.size == 0:
            continue
        sup, qry = chronological_split(h.select(eligible), k, min_query=1)
        out[k] = (val_rows[eligible], sup, qry)
    return out


def train(model: HyperRecModel, data: TrainingData, cfg: Config, checkpoint_dir: str | os.PathLike | None = None,
          resume: bool = False, progress: bool = True,
          callback: Callable[[int, dict], None] | None = None, identity: dict | None = None,
          restart_stale: bool = False) -> TrainResult:
    """Meta-train ``model`` in place; returns the per-epoch history. Restores the best epoch.
    ``identity`` (see :func:`~recsys_hyper.training.checkpoint.training_identity`) is written with
    every checkpoint; ``resume`` from a checkpoint of another identity is refused (``restart_stale``:
    training starts afresh instead, and the checkpoint is replaced).

    Runs with deterministic algorithms (multi-threaded CPU scatter / index backward otherwise
    differ in the last bits from run to run), so the same seed gives the same weights."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        return _train(model, data, cfg, checkpoint_dir, resume, progress, callback, identity, restart_stale)
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


def _train(model, data, cfg, checkpoint_dir, resume, progress, callback, identity, restart_stale) -> TrainResult:
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
    val_eps = validation_episodes(data, t.val_shots, t.max_val_users, t.seed)
    result = TrainResult()
    best_state, best_score, bad_epochs, start_epoch = None, math.inf, 0, 0
    ckpt_path = checkpoint_path(checkpoint_dir)
    t0 = time.perf_counter()

    def out_of_time() -> bool:
        """The time budget (``max_minutes``), the same decision on every rank."""
        if t.max_minutes is None:
            return False
        over = time.perf_counter() - t0 > 60 * t.max_minutes
        if world > 1:
            import torch.distributed as dist

            flag = torch.tensor([float(over)])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            over = bool(flag.item())
        return over

    ck = load_checkpoint(ckpt_path) if resume else None
    if ck is not None and restart_stale and not same_identity(ck.get("identity"), identity):
        log.warning("%s belongs to another training run (other data or config): training starts afresh", ckpt_path)
        ck = None
    if ck is not None:
        check_identity(ck.get("identity"), identity, ckpt_path)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        best_state, best_score, bad_epochs = ck["best_state"], ck["best_score"], ck["bad_epochs"]
        result.history, result.best_epoch = list(ck["history"]), ck["best_epoch"]
        start_epoch = ck["epoch"] + 1
        log.debug("resuming from %s after epoch %d", ckpt_path, ck["epoch"])
        if ck["stopped"]:
            start_epoch = t.epochs  # the run had already finished

    for epoch in range(start_epoch, t.epochs):
        rng = np.random.default_rng([t.seed, epoch])
        torch.manual_seed(t.seed * 100_003 + epoch)
        model.train()
        order = rng.permutation(data.train_rows)
        batches = [order[i:i + t.batch_users] for i in range(0, len(order), t.batch_users)]
        batches = [b for b in batches if len(b) >= world]                    # every rank gets users
        if t.max_steps is not None:                                          # the budget, spread over epochs
            batches = batches[: max(1, -(-t.max_steps // t.epochs))]
        sample_rng = rng if world == 1 else np.random.default_rng([t.seed, epoch, rank + 1])
        running = []
        # disable=None: the bar switches itself off when output is not a terminal
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{t.epochs}", unit="batch", leave=False,
                   disable=None if progress and rank == 0 else True)
        for batch in bar:
            t_step = time.perf_counter()
            rows = batch[rank::world]                                        # this rank's share
            sup, qry = sampler.sample(data.histories.select(rows), sample_rng)
            keep = np.isin(data.histories.user_ids[rows], sup.user_ids)          # users long enough to split
            loss, m = step(rows[keep], sup, qry)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            opt.step()
            running.append(m["loss"])
            result.steps += 1
            result.episodes += len(batch)
            result.step_seconds += time.perf_counter() - t_step
            bar.set_postfix(loss=f"{np.mean(running[-20:]):.4f}")
            if out_of_time():
                break
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
        stop = bad_epochs >= t.patience or out_of_time()
        if rank == 0:
            log.debug("epoch %d: train loss %.4f, val loss %.4f, val MAE %.4f, val nDCG@10 %.4f%s", epoch + 1,
                     metrics["train_loss"], val["loss"], val["mae"], val["ndcg10"], " (best)" if improved else "")
        if callback is not None and rank == 0:
            callback(epoch, metrics)
        if ckpt_path is not None and rank == 0:
            save_checkpoint(ckpt_path, epoch=epoch, model=model.state_dict(), optimizer=opt.state_dict(),
                            best_state=best_state, best_score=best_score, bad_epochs=bad_epochs,
                            history=result.history, best_epoch=result.best_epoch, stopped=stop, identity=identity)
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
    log.debug("prior strength multipliers %.3g (head) and %.3g (user bias) chosen on validation users "
             "(loss %.4f; %d tried)", *best, scores[best], len(scores))
    return best, {f"{a:g},{b:g}": s for (a, b), s in scores.items()}


def set_prior_multiplier(model: HyperRecModel, head: float, bias: float) -> None:
    model.prior_multiplier[:-1] = head
    model.prior_multiplier[-1] = bias
