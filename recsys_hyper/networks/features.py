"""The feature encoder: encoded side features (see :mod:`recsys_hyper.numerics.features`) -> vectors."""

from __future__ import annotations

import torch
from torch import nn

from ..numerics.features import FeatureSpec, FeatureTensors



def embedding(n: int, dim: int, padding_idx: int | None = None) -> nn.Embedding:
    """``nn.Embedding(n, dim)``; on the meta device (a network built there to receive saved
    weights) without its initialisation, which on meta tensors runs through torch's reference
    kernels, whose first call imports torch's compiler: a second of every command that loads a
    model. Elsewhere exactly ``nn.Embedding`` (the same random stream)."""
    if torch.empty(0).is_meta:
        return nn.Embedding(n, dim, padding_idx=padding_idx, _weight=torch.empty(n, dim))
    return nn.Embedding(n, dim, padding_idx=padding_idx)


def normal_init(weight: torch.Tensor, std: float) -> None:
    """``nn.init.normal_``, skipped on the meta device (see :func:`embedding`)."""
    if not weight.is_meta:
        nn.init.normal_(weight, std=std)


class FeatureEncoder(nn.Module):
    """Embeds categorical and multi-valued columns, concatenates numeric ones: (n, out_dim)."""

    def __init__(self, spec: FeatureSpec, emb_dim: int = 8):
        super().__init__()
        self.cat = nn.ModuleList(embedding(len(c.vocab) + 1, emb_dim)
                                 for c in spec.columns if c.kind == "categorical")
        self.multi = nn.ModuleList(embedding(len(c.vocab) + 1, emb_dim, padding_idx=0)
                                   for c in spec.columns if c.kind == "multi")
        self.n_num = 2 * sum(c.kind == "numeric" for c in spec.columns)
        self.out_dim = emb_dim * (len(self.cat) + len(self.multi)) + self.n_num
        for emb in list(self.cat) + list(self.multi):
            normal_init(emb.weight, std=0.1)

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
