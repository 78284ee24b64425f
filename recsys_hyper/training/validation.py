"""Validation during meta-training: the network being trained, measured on fixed episodes of the
validation users with the one procedure every figure comes from
(:func:`~recsys_hyper.numerics.measure.measure_episode`), beside the training objective's loss."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..config import Config
from ..data.episodes import Episode, Histories, validation_episodes
from ..networks.hyper import Heads, HyperRecModel
from ..numerics.measure import measure_episode
from ..numerics.metrics import per_user_errors
from ..numerics.padding import Padded
from .data import TrainingData, batch_user_feats
from .objective import batch_loss

#: validation users are emitted and ranked this many at a time (memory: users x catalogue)
CHUNK_USERS = 512


def training_episodes(data: TrainingData, shots: tuple[int, ...], max_users: int | None = None,
                      seed: int = 0) -> list[Episode]:
    """The validation users' fixed chronological episodes (a seeded sample of at most
    ``max_users`` of them, so validation costs the same however many users there are), one per
    k; ``rows`` are the users' rows in ``data``."""
    return [dataclasses.replace(e, rows=data.val_rows[e.rows])
            for e in validation_episodes(data.histories.select(data.val_rows), shots, max_users, seed)]


class NetworkView:
    """The network being trained, on catalogue indices: what the measuring procedure calls. The
    users of an episode (``rows`` of ``data``) are emitted ``CHUNK_USERS`` at a time."""

    def __init__(self, model: HyperRecModel, data: TrainingData, rows: np.ndarray):
        self.model, self.data, self.rows = model, data, rows
        self.rating_range, self.implicit = data.rating_range, data.implicit
        N = data.n_items
        self.e_all = model.items(data.item_index, data.item_feats)                 # (N + 1, d)
        self.items = model.item_table(self.e_all[:N], data.item_index[:N])

    def adapt(self, support: Histories) -> Heads:
        parts = []
        for start in range(0, len(support), CHUNK_USERS):
            part = np.arange(start, min(len(support), start + CHUNK_USERS))
            heads, _ = self.model.emit(self.e_all, self.data.item_index,
                                       Padded.from_histories(support.select(part), pad_item=self.data.n_items),
                                       batch_user_feats(self.data, self.rows[part]))
            parts.append(heads)
        return Heads(*(torch.cat([getattr(h, name) for h in parts]) for name in ("w", "v", "ctx", "x")))

    def rate(self, heads: Heads, rows: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return heads.take(rows).rating(self.items.take(items), pairs=True)

    def rank(self, heads: Heads, rows: np.ndarray) -> torch.Tensor:
        return heads.take(torch.from_numpy(rows)).ranking(self.items)


@torch.no_grad()
def validate(model: HyperRecModel, data: TrainingData, cfg: Config, episodes: list[Episode],
             measured: bool = True) -> dict:
    """Mean validation figures over the fixed episodes (one per k): the objective's ``loss``,
    ``mse`` and ``rank`` and, when ``measured``, the mean over users of their MAE (predictions
    clipped to the rating scale) and full-catalogue nDCG@10 (binary gains, relevant = positive query items,
    support excluded; a user with no relevant item counts 0), with each k's own."""
    model.eval()
    per_k = {}
    for e in episodes:
        # a fixed draw of negatives (large catalogues), so that validation losses compare across epochs
        _, m = batch_loss(model, data, cfg, e.rows, e.support, e.query, generator=torch.Generator().manual_seed(e.k))
        m.pop("mae")
        if measured:
            got = measure_episode(NetworkView(model, data, e.rows), e.support, e.query, per_user=False,
                                  threshold=cfg.train.positive_threshold, cutoff=10, chunk=CHUNK_USERS)
            users_mae = per_user_errors(got.predicted, got.actual, got.owner, len(e.query))[0]
            m["mae"] = float(np.nanmean(users_mae)) if np.isfinite(users_mae).any() else float("nan")
            m["ndcg10"] = got.mean("ndcg@10", missing=0.0)
        per_k[e.k] = m
    names = ("loss", "mse", "rank") + (("mae", "ndcg10") if measured else ())
    out = {name: float(np.mean([m[name] for m in per_k.values()])) for name in names}
    if measured:
        for k, m in per_k.items():
            out[f"mae_k{k}"] = m["mae"]
            out[f"ndcg10_k{k}"] = m["ndcg10"]
    return out
