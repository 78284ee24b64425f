"""Train and register: the one training job, called by ``recsys-hyper train`` and by the nightly's
train step. Meta-trains (checkpointed, resumable, data-parallel under torchrun), saves the model
directory atomically, logs the run and registers the model with the alias ``challenger``."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import tracking
from ..config import Config
from ..data.dataset import Dataset, content_digest
from ..errors import RecsysHyperError
from ..recommender import HyperRecommender
from ..training import init_distributed
from .models import code_version, example_io, model_digest

log = logging.getLogger(__name__)


@dataclass
class Trained:
    """What a training job produced: the model (``None`` on ranks other than 0), where it was
    saved, its registered version, the best epoch's validation metrics, the number of processes."""

    model: HyperRecommender | None
    out: Path
    version: str | None
    best: dict
    processes: int = 1


def checkpoint_dir(out: str | os.PathLike) -> Path:
    """Checkpoints live in a hidden sibling of the model directory, removed after success."""
    out = Path(out)
    return out.parent / f".{out.name}.checkpoints"


def train_and_register(ds: Dataset, out: str | os.PathLike, config: Config, *, validation_users=None,
                       warm_start: HyperRecommender | None = None, resume: bool = False, progress: bool = True,
                       track: bool = True, register: bool = True, new_run: bool = True,
                       experiment: str = tracking.TRAINING_EXPERIMENT, run_name: str | None = None,
                       tags: dict | None = None, version_tags: dict | None = None,
                       reuse_tags: tuple[str, ...] = (), registered_model: str = tracking.REGISTERED_MODEL,
                       restart_stale: bool = False, fit_elsewhere: Callable[[], tuple] | None = None) -> Trained:
    """Meta-train on ``ds``, save to ``out``, and (``track``) log the run and register the model.

    ``new_run``: start a training run of its own (the command line); otherwise log into the
    active run (the nightly's train step). The run and the registered version are tagged with the
    data's content digest and the code version (plus ``version_tags``); ``reuse_tags`` makes the
    registration idempotent within the run (see :func:`~recsys_hyper.tracking.registry.log_pyfunc_model`);
    ``registered_model``: the registered model's name. ``resume`` from a checkpoint of another run
    (other data, config, validation users or warm start) is refused, unless ``restart_stale``:
    then training starts afresh (the nightly, whose inputs may change between attempts).
    Under torchrun every rank trains its share of each batch; rank 0 tracks, saves and registers.
    ``fit_elsewhere``: the model is fitted by other processes (Spark executors: see
    :func:`fit_rank`), which save it to ``out``; it returns (the model loaded from ``out``, the
    number of processes), and this process tracks and registers it."""
    rank, world = init_distributed() if fit_elsewhere is None else (0, 1)
    if rank:
        logging.getLogger("recsys_hyper").setLevel(logging.WARNING)
    out = Path(out)
    ckpt = checkpoint_dir(out)
    if resume and not (ckpt / "checkpoint.pt").is_file():
        log.debug("no checkpoint in %s: starting from scratch", ckpt)
    track = track and rank == 0
    provenance = {"data_digest": content_digest(ds.interactions), "code_version": code_version()} if track else {}
    run = (tracking.TrainingRun(config.to_dict(), ds, experiment=experiment, run_name=run_name,
                                tags={**(tags or {}), **provenance, "processes": str(world)})
           if track and new_run else contextlib.nullcontext())
    with run:
        try:
            if fit_elsewhere is None:
                rec = HyperRecommender(config).fit(ds, validation_users, progress=progress, checkpoint_dir=ckpt,
                                                   resume=resume, callback=tracking.log_epoch if track else None,
                                                   warm_start=warm_start, restart_stale=restart_stale)
            else:
                rec, world = fit_elsewhere()
                if track:                     # what the training callback logs on one machine
                    for epoch, row in enumerate(rec.training_.history):
                        tracking.log_epoch(epoch, row)
                    tracking.tag_run(processes=str(world))
        except BaseException:
            with contextlib.suppress(OSError):
                ckpt.rmdir()                  # a checkpoint folder that holds nothing (the first epoch failed)
            raise
        if rank:
            return Trained(None, out, None, {}, world)
        if fit_elsewhere is None:
            rec.save(out)
        best_epoch = rec.training_.history[rec.training_.best_epoch]
        best = {k: best_epoch[f"val_{k}"] for k in ("loss", "mae", "ndcg10")}
        version = None
        if track:
            tracking.log_metrics({f"best_val_{k}": v for k, v in best.items()}
                                 | {"train_seconds": rec.training_.seconds,
                                    "episodes_per_second": episodes_per_second(rec.training_),
                                    "prior_multiplier_head": rec.training_.prior_multiplier[0],
                                    "prior_multiplier_bias": rec.training_.prior_multiplier[1]})
            tracking.log_choices(rec.tuning_)
            if not new_run:                 # the nightly's train step: its run carries the same lineage
                tracking.tag_run(**provenance)
                tracking.log_training_inputs(config.to_dict(), ds, provenance["data_digest"])
            example, example_out = example_io(rec, ds.interactions)
            description = (f"meta-trained on {ds.n_interactions:,} interactions of {rec.n_train_users_:,} users "
                           f"({ds.source}); validation MAE {best['mae']:.4f}, nDCG@10 {best['ndcg10']:.4f}")
            version = tracking.log_pyfunc_model(out, example, example_out, register=register, alias="challenger",
                                                version_tags={**provenance, "model_digest": model_digest(out),
                                                              **(version_tags or {})},
                                                description=description, reuse_tags=reuse_tags,
                                                name=registered_model)
    shutil.rmtree(ckpt, ignore_errors=True)
    return Trained(rec, out, version, best, world)


def episodes_per_second(result) -> float:
    """Training throughput: users sampled into episodes per second of optimisation steps (all
    processes; validation and calibration not counted)."""
    return result.episodes / result.step_seconds if result.step_seconds else 0.0


def train_command(data: str | os.PathLike, out: str | os.PathLike, config: Config, resume: bool = False,
                  track: bool = True, register: bool = True, experiment: str = tracking.TRAINING_EXPERIMENT,
                  progress: bool = True, overwrite: bool = False,
                  registered_model: str = tracking.REGISTERED_MODEL) -> str:
    """``recsys-hyper train``: returns the summary line (empty on ranks other than 0)."""
    from ..data import load_dataset
    from .paths import check_model_out

    check_model_out(out, data, overwrite)
    if track:
        tracking.ensure_reachable()                  # fail in seconds, before any work
    ds = load_dataset(data)
    t = train_and_register(ds, out, config, resume=resume, progress=progress, track=track, register=register,
                           experiment=experiment, run_name=f"train {Path(data).name}", tags={"data": str(data)},
                           registered_model=registered_model)
    if t.model is None:
        return ""
    rec = t.model
    return (f"trained in {rec.training_.seconds:.1f}s on {t.processes} process{'es' if t.processes > 1 else ''} "
            f"({rec.training_.steps:,} steps, {episodes_per_second(rec.training_):,.0f} episodes/s): "
            f"best epoch {rec.training_.best_epoch + 1} of {len(rec.training_.history)}, validation MAE "
            f"{t.best['mae']:.4f}, nDCG@10 {t.best['ndcg10']:.4f} ({rec.n_val_users_:,} validation users); "
            f"model -> {out}"
            + (f"; registered {registered_model} version {t.version} (alias challenger)" if t.version else ""))


def fit_rank(data: str, out: str, config: Config, validation_users, warm_start: str | None,
             threads: int, progress: bool = True, source: str | None = None) -> dict:
    """One process of a training spread over processes that a launcher (torchrun, Spark's
    ``TorchDistributor``) describes in the environment: it joins the group, fits its share of
    every batch on ``threads`` threads from the data directory ``data`` (warm-started from the
    model directory ``warm_start``), with checkpoints beside ``out`` (a restarted night resumes);
    rank 0 reports ``progress`` and saves the model to ``out``; messages name the data as
    ``source`` (where it was read from before it was written to ``data``). A refusal is left in
    :func:`rank_error_file` for the launching process. Returns the rank, the number of processes
    and the seconds."""
    import torch

    from ..data import load_dataset

    torch.set_num_threads(max(1, threads))
    rank, world = init_distributed()
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s rank {rank}/{world} %(levelname)s %(message)s", force=True)
    logging.getLogger("recsys_hyper").setLevel(logging.INFO if rank == 0 else logging.WARNING)
    try:
        ds = load_dataset(data)
        ds.source = source or ds.source
        warm = HyperRecommender.load(warm_start) if warm_start else None
        rec = HyperRecommender(config).fit(ds, validation_users, progress=progress and rank == 0,
                                           checkpoint_dir=checkpoint_dir(out),
                                           resume=True, warm_start=warm, restart_stale=True)
    except RecsysHyperError as exc:         # for the launcher's process, which sees only an exit status
        rank_error_file(out, rank).write_text(str(exc))
        raise
    if rank == 0:
        rec.save(out)
    return {"rank": rank, "processes": world, "seconds": rec.training_.seconds}


def rank_error_file(out: str | os.PathLike, rank: int) -> Path:
    """Where :func:`fit_rank` leaves the refusal that stopped process ``rank`` (beside ``out``)."""
    out = Path(out)
    return out.parent / f".{out.name}.rank{rank}.error"
