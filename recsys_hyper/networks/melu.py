"""MeLU's network (Lee et al., KDD 2019): user and item feature embeddings and the decision-making
layers, which MAML adapts per user (see :class:`recsys_hyper.baselines.MeLU`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..numerics.features import FeatureSpec, FeatureTensors
from .features import FeatureEncoder

FC = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "out.weight", "out.bias")


class MeLUNet(nn.Module):
    def __init__(self, item_spec: FeatureSpec, user_spec: FeatureSpec, emb: int, hidden: int):
        super().__init__()
        self.items = FeatureEncoder(item_spec, emb_dim=emb)
        self.users = FeatureEncoder(user_spec, emb_dim=emb)
        in_dim = max(1, self.items.out_dim + self.users.out_dim)
        self.fc1, self.fc2, self.out = nn.Linear(in_dim, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, 1)

    def embed(self, item_f: FeatureTensors, user_f: FeatureTensors | None, n_rep: int | None = None) -> torch.Tensor:
        """Item rows (n, .) joined with one user's features repeated, or with per-row users."""
        x = self.items(item_f)
        if user_f is not None and self.users.out_dim:
            u = self.users(user_f)
            x = torch.cat([x, u.expand(x.shape[0], -1) if u.shape[0] == 1 else u], 1)
        return x if x.shape[1] else torch.zeros(x.shape[0], 1)

    @staticmethod
    def decide(x: torch.Tensor, p: dict) -> torch.Tensor:
        """The decision-making layers with explicit parameters ``p``: (n, in) -> (n,)."""
        h = F.relu(F.linear(x, p["fc1.weight"], p["fc1.bias"]))
        h = F.relu(F.linear(h, p["fc2.weight"], p["fc2.bias"]))
        return F.linear(h, p["out.weight"], p["out.bias"]).squeeze(-1)
