"""The feature encoder: encoded side features (see :mod:`recsys_hyper.numerics.features`) -> vectors."""

from __future__ import annotations

import torch
from torch import nn

from ..numerics.features import FeatureSpec, FeatureTensors


class FeatureEncoder(nn.Module):
    """Embeds categorical and multi-valued columns, concatenates numeric ones: (n, out_dim)."""

    def __init__(self, spec: FeatureSpec, emb_dim: int = 8):
        super().__init__()
        self.cat = nn.ModuleList(nn.Embedding(len(c.vocab) + 1, emb_dim)
                                 for c in spec.columns if c.kind == "categorical")
        self.multi = nn.ModuleList(nn.Embedding(len(c.vocab) + 1, emb_dim, padding_idx=0)
                                   for c in spec.columns if c.kind == "multi")
        self.n_num = 2 * sum(c.kind == "numeric" for c in spec.columns)
        self.out_dim = emb_dim * (len(self.cat) + len(self.multi)) + self.n_num
        for emb in list(self.cat) + list(self.multi):
            nn.init.normal_(emb.weight, std=0.1)

    def forward(self, f: FeatureTensors) -> torch.Tensor:
        parts = [emb(f.cat[:, j]) for j, emb in enumerate(self.cat)]
        for emb, bag in zip(self.multi, f.multi):
            vecs = emb(bag)                                                  # (n, L, e)
            count = (bag > 0).sum(1, keepdim=True).clamp(min=1)              # (n, 1)
            parts.append(vecs.sum(1) / count)                                # mean over the bag
        if self.n_num:
            parts.append(f.num)
        if not parts:
            return f.num.new_zeros(len(f), 0)
        return torch.cat(parts, dim=1)
