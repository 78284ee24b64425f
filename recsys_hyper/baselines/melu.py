"""MeLU (Lee et al., KDD 2019): meta-learned user preference estimator, re-implemented.

As in the paper: user and item *feature* embeddings (no id embeddings; a list feature such as
genres is the mean of its embeddings), concatenated and passed through the decision-making
layers (two fully connected layers of 64 with ReLU, then a linear output). MAML: for each user,
``local_steps`` gradient steps on the support set update only the decision-making layers
(``theta' = theta - local_lr * grad``); the loss of the adapted layers on the query set is
back-propagated through the local steps (second order) to all parameters, averaged over a batch
of users, with Adam. At test time the same local steps run on each new user's support set,
user by user as in the reference implementation (this is the adaptation latency measured).

Departures, for this data and protocol: support sets are the same chronological episodes every
method trains on; the output bias starts at the mean rating; epochs are chosen by early stopping
on validation users. ``local_lr`` / ``lr`` default to values chosen on ML-100K validation users
(the paper's 5e-6 / 5e-5 leave the local steps without effect and the network untrained on a
dataset of this size).
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..data import schema as S
from ..data.episodes import EpisodeSampler, Histories, validation_episodes
from ..networks.melu import FC, MeLUNet
from ..numerics.features import FeatureSpec, FeatureTensors
from ..numerics.measure import mean_mae
from ..recommender.base import FoldIn, Recommender, indexed, train_validation_rows

log = logging.getLogger(__name__)


class MeLU(Recommender):
    """MAML over a feature-embedding MLP; ``adapt`` runs the local updates per user."""

    name = "melu"

    def __init__(self, emb: int = 32, hidden: int = 64, local_steps: int = 5, local_lr: float = 5e-3,
                 lr: float = 1e-3, batch_users: int = 32, epochs: int = 30, patience: int = 3, k_max: int = 20,
                 seed: int = 0):
        super().__init__(emb=emb, hidden=hidden, local_steps=local_steps, local_lr=local_lr, lr=lr,
                         batch_users=batch_users, epochs=epochs, patience=patience, k_max=k_max, seed=seed)

    # -- fitting

    def _build(self, item_spec: FeatureSpec, user_spec: FeatureSpec) -> None:
        self.item_spec_, self.user_spec_ = item_spec, user_spec
        self.net_ = MeLUNet(item_spec, user_spec, self.params["emb"], self.params["hidden"])

    def _fit(self, dataset, h: Histories, validation_users, progress) -> None:
        p = self.params
        train_rows, val_rows = train_validation_rows(h, validation_users)
        torch.manual_seed(p["seed"])
        self._build(FeatureSpec.fit(dataset.items, S.ITEM_ID), FeatureSpec.fit(dataset.users, S.USER_ID))
        f = self.item_spec_.transform(dataset.items, self.item_map_.values)
        self.item_feats_ = {"cat": f.cat, "num": f.num, "multi": f.multi}
        user_f = self.user_spec_.transform(dataset.users, h.user_ids)
        with torch.no_grad():
            self.net_.out.bias.fill_(float(h.select(train_rows).ratings.mean()))
        opt = torch.optim.Adam(self.net_.parameters(), lr=p["lr"])
        sampler = EpisodeSampler(k_max=p["k_max"], max_query=64)
        # MeLU's own early stopping, on the same episodes and the same MAE (clipped to the scale) as
        # every other method's choices
        val_eps = validation_episodes(h.select(val_rows), shots=(1, 5, 10), max_users=None) if len(val_rows) else []
        view = indexed(self, dataset.users)
        best, best_state, bad = np.inf, None, 0
        for epoch in range(p["epochs"]):
            rng = np.random.default_rng([p["seed"], epoch])
            order = rng.permutation(train_rows)
            self.net_.train()
            for start in range(0, len(order), p["batch_users"]):
                rows = order[start:start + p["batch_users"]]
                sup, qry = sampler.sample(h.select(rows), rng)
                keep = np.flatnonzero(np.isin(h.user_ids[rows], sup.user_ids))
                uf = user_f.take(torch.from_numpy(rows[keep]))
                losses = []
                for b in range(len(sup)):
                    theta = self._local_update(sup, b, uf.take(torch.tensor([b])), create_graph=True)
                    q_items, q_r, _ = qry.user(b)
                    pred = self._predict_items(theta, q_items, uf.take(torch.tensor([b])))
                    losses.append(F.mse_loss(pred, torch.from_numpy(q_r)))
                loss = torch.stack(losses).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            if not val_eps:
                continue
            val = mean_mae(view, val_eps)
            log.debug("MeLU epoch %d: validation MAE %.4f", epoch + 1, val)
            if val < best - 1e-4:
                best, best_state, bad = val, copy.deepcopy(self.net_.state_dict()), 0
            else:
                bad += 1
                if bad >= p["patience"]:
                    break
        if best_state is not None:
            self.net_.load_state_dict(best_state)
        self.net_.eval()
        self.net_state_ = self.net_.state_dict()

    @property
    def _item_f(self) -> FeatureTensors:
        return FeatureTensors(self.item_feats_["cat"], self.item_feats_["num"], self.item_feats_["multi"])

    # -- local updates

    def _fc(self) -> dict:
        named = dict(self.net_.named_parameters())
        return {k: named[k] for k in FC}

    def _predict_items(self, theta: dict, items: np.ndarray, uf: FeatureTensors) -> torch.Tensor:
        x = self.net_.embed(self._item_f.take(torch.from_numpy(items)), uf)
        return MeLUNet.decide(x, theta)

    def _local_update(self, sup: Histories, b: int, uf: FeatureTensors, create_graph: bool) -> dict:
        """theta' for user ``b`` of ``sup`` after ``local_steps`` steps on its support set."""
        theta = self._fc()
        items, ratings, _ = sup.user(b)
        if len(items) == 0:
            return theta
        y = torch.from_numpy(ratings)
        for _ in range(self.params["local_steps"]):
            loss = F.mse_loss(self._predict_items(theta, items, uf), y)
            grads = torch.autograd.grad(loss, list(theta.values()), create_graph=create_graph)
            theta = {k: v - self.params["local_lr"] * g for (k, v), g in zip(theta.items(), grads)}
        return theta

    def _adapt_all(self, h: Histories, uf: FeatureTensors) -> dict:
        """Per-user local updates (a loop, as MeLU does); returns the stacked adapted layers."""
        adapted = []
        for b in range(len(h)):
            with torch.enable_grad():
                theta = self._local_update(h, b, uf.take(torch.tensor([b])), create_graph=False)
            adapted.append({k: v.detach() for k, v in theta.items()})
        state = {k: torch.stack([a[k] for a in adapted]) if adapted else self._fc()[k].detach().unsqueeze(0)[:0]
                 for k in FC}
        state["user_emb"] = self.net_.users(uf).detach() if self.net_.users.out_dim else torch.zeros(len(h), 0)
        return state

    # -- the contract's hooks

    def _adapt(self, h: Histories, users: pd.DataFrame | None, catalogue) -> FoldIn:
        return FoldIn.of(h, self._adapt_all(h, self.user_spec_.transform(users, h.user_ids)))

    def _item_x(self) -> torch.Tensor:
        return self.net_.items(self._item_f)                                          # (N, e_items)

    def _decide_user(self, state: dict, r: int, item_x: torch.Tensor) -> torch.Tensor:
        u = state["user_emb"][r].expand(item_x.shape[0], -1)
        x = torch.cat([item_x, u], 1) if u.shape[1] else item_x
        if not x.shape[1]:      # no features at all: the constant input the network was trained on
            x = torch.zeros(x.shape[0], 1)
        return MeLUNet.decide(x, {k: state[k][r] for k in FC})

    @torch.no_grad()
    def _rate(self, adapted, rows, items, catalogue) -> torch.Tensor:
        out = torch.empty(len(rows))
        item_x = self._item_x()
        rows_np = rows.numpy()
        for r in np.unique(rows_np):
            sel = np.flatnonzero(rows_np == r)
            out[sel] = self._decide_user(adapted.state, int(r), item_x[items[sel]])
        return out

    @torch.no_grad()
    def _rank(self, adapted, rows, catalogue) -> torch.Tensor:
        item_x = self._item_x()
        return torch.stack([self._decide_user(adapted.state, int(r), item_x) for r in rows])

    # -- persistence: the network is rebuilt from the feature specs

    def _state(self) -> dict:
        return {"net_state_": self.net_.state_dict(), "item_feats_": self.item_feats_}

    def _meta(self) -> dict:
        return {**super()._meta(), "item_spec": self.item_spec_.to_dict(), "user_spec": self.user_spec_.to_dict()}

    def _restore(self, state: dict, meta: dict, root) -> None:
        super()._restore(state, meta, root)
        self._build(FeatureSpec.from_dict(meta["item_spec"]), FeatureSpec.from_dict(meta["user_spec"]))
        self.net_.load_state_dict(self.net_state_)
        self.net_.eval()
