"""CSR histories -> padded tensors, and chunking that keeps padded batches bounded."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.episodes import Histories


@dataclass
class Padded:
    """A padded batch of per-user event sets: ``items`` (B, K), ``ratings`` (B, K), ``mask`` (B, K).

    Rows are left-aligned (each user's events first, then padding with ``pad_item``)."""

    items: torch.Tensor
    ratings: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def from_histories(cls, h: Histories, pad_item: int, min_width: int = 1) -> "Padded":
        lengths = h.lengths
        B, K = len(h), max(min_width, int(lengths.max()) if len(h) else 0)
        items = np.full((B, K), pad_item, dtype=np.int64)
        ratings = np.zeros((B, K), dtype=np.float32)
        rows = h.owners()                                                    # (E,) row of each event
        cols = h.positions_in_user()                                        # (E,) column of each event
        items[rows, cols] = h.items
        ratings[rows, cols] = h.ratings
        mask = np.zeros((B, K), dtype=np.float32)
        mask[rows, cols] = 1.0
        return cls(torch.from_numpy(items), torch.from_numpy(ratings), torch.from_numpy(mask))


def chunks_by_events(lengths: np.ndarray, max_users: int, max_cells: int = 2_000_000) -> list[np.ndarray]:
    """Split rows into chunks whose padded size (users x longest history) stays bounded."""
    out, start, n = [], 0, len(lengths)
    while start < n:
        end = min(n, start + max_users)
        while end - start > 1 and (end - start) * max(1, int(lengths[start:end].max())) > max_cells:
            end = start + max(1, (end - start) // 2)
        out.append(np.arange(start, end))
        start = end
    return out
