"""Which items to ask a new user about next: the questions whose answers would settle the
ranking most, among the items the user is likely to be able to answer.

The fold-in gives each user a Gaussian posterior over their rating head: precision
``A_u = Phi_S^T Phi_S + Lambda_u`` (support item vectors, emitted prior precision), covariance
``Sigma_u = A_u^-1`` in units of the rating noise. An answer about item ``j`` is one more row
``phi_j``; whatever the answer, the covariance becomes
``Sigma - Sigma phi_j phi_j^T Sigma / (1 + phi_j^T Sigma phi_j)``, so the variance of the score of
a target item ``i`` falls by ``(phi_i^T Sigma phi_j)^2 / (1 + phi_j^T Sigma phi_j)``.

The value of asking ``j`` is that fall summed over the items that matter for ranking (the user's
current top ``targets`` items, weighted by their softmax share of the ranking scores), times the
chance the user can answer at all, estimated by the model's own ranking score: the ranking head
is trained to predict which items a user interacts with, so its softmax over the unseen
catalogue is the chance that ``j`` is among them. Questions are chosen greedily: after each one
the covariance is updated as if it were answered (the update does not depend on the answer),
so a batch of ``n`` questions does not ask the same thing twice.

``uncertainty`` weighs the two: ``value = P(answer) x fall ** uncertainty``. 1 is the expected
information rule; 0 ranks by the chance of an answer alone (the head's posterior unused), which is
what measured best on validation users (see ``HyperRecommender.ask``).
"""

from __future__ import annotations

import torch

from ..networks.hyper import HyperRecModel, ItemTable
from ..numerics.features import FeatureTensors
from ..numerics.padding import Padded

#: users x targets x catalogue cells per sub-batch (bounds the memory of the greedy choice)
MAX_CELLS = 1 << 24


@torch.no_grad()
def choose_questions(model: HyperRecModel, e_all: torch.Tensor, item_index: torch.Tensor, table: ItemTable,
                     support: Padded, user_feats: FeatureTensors | None, excluded: torch.Tensor, n: int,
                     targets: int = 100, uncertainty: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n`` items to ask each user about, best first: (indices (B, n), values (B, n)).

    ``table``: the catalogue's item table (N rows); ``excluded`` (B, N) bool: items never to ask
    (the history, questions already asked). A value of ``-inf`` marks a slot with nothing left to
    ask (the user has been asked about every item)."""
    B, N = excluded.shape
    step = max(1, MAX_CELLS // (min(targets, N) * N))
    items_out, values_out = [], []
    for s in range(0, B, step):
        rows = slice(s, min(B, s + step))
        sub = Padded(support.items[rows], support.ratings[rows], support.mask[rows])
        uf = None if user_feats is None else user_feats.take(torch.arange(B)[rows])
        i, v = _greedy(model, e_all, item_index, table, sub, uf, excluded[rows].clone(), n, targets, uncertainty)
        items_out.append(i)
        values_out.append(v)
    return torch.cat(items_out), torch.cat(values_out)


def _greedy(model, e_all, item_index, table, support, uf, excluded, n, targets, uncertainty):
    e_s = e_all[support.items]                                               # (B, K, d)
    idx = item_index[support.items]
    heads, _ = model.heads(e_s, idx, support.ratings, support.mask, uf)
    N = excluded.shape[1]
    scores = heads.ranking(table).masked_fill(excluded, float("-inf"))      # (B, N)
    p_know = torch.softmax(scores, -1)                                       # (B, N)
    if uncertainty == 0:                                                     # the chance of an answer alone
        best = p_know.nan_to_num(0.0).masked_fill(excluded, float("-inf")).topk(min(n, N), dim=1)
        chosen = torch.zeros(len(scores), n, dtype=torch.long)
        values = torch.full((len(scores), n), float("-inf"))
        chosen[:, :best.indices.shape[1]], values[:, :best.values.shape[1]] = best.indices, best.values
        return chosen, values
    top = scores.topk(min(targets, N), dim=1)                                # the items that matter
    weight = torch.softmax(top.values, -1).nan_to_num(0.0)                   # (B, M)
    sigma = model.head_covariance(e_s, support.ratings, support.mask, uf)    # (B, D, D) posterior
    phi = table.phi                                                          # (N, D)
    phi_t = phi[top.indices]                                                 # (B, M, D)
    chosen = torch.zeros(len(scores), n, dtype=torch.long)
    values = torch.full((len(scores), n), float("-inf"))
    b = torch.arange(len(scores))
    for q in range(n):
        s_phi = sigma @ phi.T                                                # (B, D, N)  Sigma phi_j
        var = (phi.T.unsqueeze(0) * s_phi).sum(1)                            # (B, N)     phi_j^T Sigma phi_j
        cross = phi_t @ s_phi                                                # (B, M, N)  phi_i^T Sigma phi_j
        gain = (weight.unsqueeze(-1) * cross.square()).sum(1) / (1 + var)    # (B, N)
        value = (p_know * gain.pow(uncertainty)).masked_fill(excluded, float("-inf"))
        best = value.argmax(1)                                               # (B,)
        chosen[:, q], values[:, q] = best, value[b, best]
        excluded[b, best] = True
        u = s_phi[b, :, best]                                                # (B, D)
        sigma = sigma - u.unsqueeze(2) * u.unsqueeze(1) / (1 + var[b, best]).view(-1, 1, 1)
    return chosen, values
