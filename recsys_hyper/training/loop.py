"""Episodic meta-training: each user is a task; support sets of every size k in 0..k_max.

One step: sample B training users, split each history into support (chronological prefix, or an
augmented early-window subset) and query; emit heads from the supports (fold-in included); the
loss is on the queries: standardised rating MSE + ``rank_weight`` x a softmax over the whole
catalogue (support items masked, positives = query items rated >= ``positive_threshold``) +
``head_l2`` x the squared emitted residuals.

Validation users (held out of training) decide the best epoch and early stopping (by their
measured MAE and nDCG@10, the figures a model is judged by: the objective's softmax can worsen on
them while their nDCG@10 still improves, on sparse catalogues from the first epoch on; or by the
loss, ``select_epoch_by``) and the prior-strength calibration; nothing here ever sees test users.
A checkpoint is written after every epoch; each epoch's randomness is derived from (seed, epoch),
so a resumed run reaches the same weights as an uninterrupted one.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..config import Config
from ..data.episodes import EpisodeSampler, Histories
from ..networks.hyper import HyperRecModel
from .checkpoint import check_identity, checkpoint_path, load_checkpoint, same_identity, save_checkpoint
from .data import TrainingData
from .distributed import data_parallel, distributed
from .objective import batch_loss
from .selection import calibrate_prior, fit_item_item, fit_rating_blend
from .validation import training_episodes, validate

log = logging.getLogger(__name__)



@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False
    steps: int = 0                                 # optimisation steps taken (this process, this run)
    prior_multiplier: tuple = (1.0, 1.0)          # (the head's vector, its user bias)
    calibration: dict = field(default_factory=dict)  # every multiplier tried and its validation loss
    item_item: dict = field(default_factory=dict)    # the EASE term's choice on validation users
    rating_blend: dict = field(default_factory=dict)  # the blend with the bias baseline per k, ditto
    seconds: float = 0.0
    step_seconds: float = 0.0                      # of which in optimisation steps (no validation)
    episodes: int = 0                              # users sampled into the steps' episodes, all processes


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


def selection_score(val: dict, by: str, implicit: bool) -> float:
    """What an epoch is judged by (lower is better): the validation loss, or the measured figures
    as ``log(MAE) - log(nDCG@10)``, relative changes weighed alike (nDCG@10 alone on implicit data,
    whose MAE is not a rating's)."""
    if by == "loss":
        return val["loss"]
    ndcg = -math.log(max(val["ndcg10"], 1e-12))
    return ndcg if implicit else ndcg + math.log(max(val["mae"], 1e-12))


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
    from ..progress import progress as progress_bar

    t = cfg.train
    rank, world = distributed()
    # implicit data trains no rating bias: the only parameters a step can leave unused
    step = data_parallel(StepLoss(model, data, cfg), find_unused_parameters=data.implicit)
    sampler = EpisodeSampler(k_max=t.k_max, strategy=t.support_strategy, augment_prob=t.augment_prob,
                             window=t.augment_window, max_query=t.max_query)
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    val_eps = training_episodes(data, t.val_shots, t.max_val_users, t.seed)
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

    # off a terminal, one periodic line for the whole training (a bar per epoch on one)
    overall = progress_bar(total=t.epochs, desc="training", unit="epoch", enabled=progress and rank == 0
                           and not sys.stderr.isatty())
    overall.update(start_epoch)
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
        bar = progress_bar(batches, desc=f"epoch {epoch + 1}/{t.epochs}", unit="batch", leave=False,
                           enabled=progress and rank == 0)
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
        score = selection_score(val, t.select_epoch_by, data.implicit)
        improved = score < best_score - 1e-5
        metrics = {"epoch": epoch, "train_loss": float(np.mean(running)) if running else float("nan"),
                   **{f"val_{k}": v for k, v in val.items()}}
        result.history.append(metrics)
        if improved:
            best_score, bad_epochs, result.best_epoch = score, 0, epoch
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
        stop = bad_epochs >= t.patience or out_of_time()
        if rank == 0:
            log.debug("epoch %d: train loss %.4f, val loss %.4f, val MAE %.4f, val nDCG@10 %.4f%s", epoch + 1,
                     metrics["train_loss"], val["loss"], val["mae"], val["ndcg10"], " (best)" if improved else "")
        overall.set_postfix_str(f"val loss {val['loss']:.4f}, MAE {val['mae']:.4f}, nDCG@10 {val['ndcg10']:.4f}")
        overall.update()
        if callback is not None and rank == 0:
            callback(epoch, metrics)
        if ckpt_path is not None and rank == 0:
            save_checkpoint(ckpt_path, epoch=epoch, model=model.state_dict(), optimizer=opt.state_dict(),
                            best_state=best_state, best_score=best_score, bad_epochs=bad_epochs,
                            history=result.history, best_epoch=result.best_epoch, stopped=stop, identity=identity)
        if stop:
            result.stopped_early = True
            break
    overall.close()

    if best_state is not None:
        model.load_state_dict(best_state)
    if t.calibrate and val_eps:
        result.prior_multiplier, result.calibration = calibrate_prior(model, data, cfg, val_eps)
    if model.item_item_rank and val_eps:
        result.item_item = fit_item_item(model, data, cfg, val_eps)
    # the bias baseline is a special case only where the item biases are its fit (explicit ratings)
    if t.rating_blend_grid and val_eps and t.bias_init == "fitted" and not data.implicit:
        result.rating_blend = fit_rating_blend(model, data, cfg, val_eps)
    result.seconds = time.perf_counter() - t0
    return result


