"""Why an item is recommended: a user's ranking score for it, split over their history's events.

The ranking score (see :mod:`recsys_hyper.networks.hyper`) regrouped::

    score(u, i) = c_i + (m_u + v_u) . phi_i          emitted by the hypernetwork from the pooled history
                + (w_u - m_u) . phi_i                 the fold-in:  sum_j beta_ij r_j
                + ctx_u . p_i                         the item-item context:  sum_j g(k) q_j . p_i  (+ EASE's term)

* **Exact** parts. The fold-in is linear in the support residuals ``r_j = y_j - phi_j . m_u``:
  ``(w_u - m_u) . phi_i = sum_j beta_ij r_j`` with ``beta_ij = phi_j^T A_u^-1 phi_i`` and
  ``A_u = Phi^T Phi + Lambda_u`` (the head's posterior precision). The item-item context is a sum
  over the events (``g(k)`` taken at the user's k), and so is the EASE term. Each event's share
  of these is exact: they add up to those parts of the score.
* **Estimated** parts. The emitted ``(m_u + v_u) . phi_i`` is split into the *population prior*
  ``c_i + (m_0 + v_0) . phi_i`` (an empty history, no user features), the *user's features*
  (an empty history with their features, minus the prior) and the *history's* effect (the rest).
  The history's effect is attributed to events by leave-one-out re-emission, which is exact per
  event (the history encoder pools a sum, so a history without event j is the sum minus its
  encoding: one cheap forward pass of the pooled part per event) but the leave-one-out effects
  of different events need not add up to their joint effect (the networks are non-linear): the
  difference is reported as ``rest``, so that ``prior + features + sum(events) + rest = score``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..networks.hyper import HyperRecModel, ItemTable
from ..numerics.features import FeatureTensors
from ..numerics.padding import Padded


@dataclass
class Attribution:
    """Per (user, item) pair ``p`` (P pairs), over the user's support events ``j`` (K, padded):

    ``prior`` (P,), ``features`` (P,), ``events`` (P, K) each event's contribution (0 on padding),
    ``exact`` (P, K) the part of it that is exact (fold-in and item-item terms; the remainder is
    the leave-one-out estimate), ``rest`` (P,) the history's effect that no single event carries.
    """

    prior: torch.Tensor
    features: torch.Tensor
    events: torch.Tensor
    exact: torch.Tensor
    rest: torch.Tensor

    @property
    def history(self) -> torch.Tensor:
        """The history's whole share of the score: ``sum(events) + rest`` (P,)."""
        return self.events.sum(1) + self.rest

    @property
    def score(self) -> torch.Tensor:
        """``prior + features + history``: the ranking score (P,)."""
        return self.prior + self.features + self.history


@torch.no_grad()
def attribute(model: HyperRecModel, e_all: torch.Tensor, item_index: torch.Tensor, table: ItemTable,
              support: Padded, user_feats: FeatureTensors | None, rows: torch.Tensor,
              items: torch.Tensor) -> Attribution:
    """Attribute the ranking scores of pairs (``rows`` (P,) into ``support``'s users, ``items``
    (P,) rows of ``table``) to the population prior, the user's features and each support event.
    ``e_all`` / ``item_index``: the catalogue's item vectors and vocabulary indices, as for
    :meth:`~recsys_hyper.networks.hyper.HyperRecModel.emit` (``support.items`` are its rows)."""
    mask = support.mask                                                      # (B, K)
    e_s = e_all[support.items]                                               # (B, K, d)
    idx = item_index[support.items]                                          # (B, K)
    h = model.encoder.events(e_s, model.standardise(support.ratings, mask), mask)   # (B, K, H)
    h_sum, k = h.sum(1), mask.sum(1, keepdim=True)                           # (B, H), (B, 1)
    user = model.encoder.user_part(user_feats, len(mask))                    # (B, H) or None
    m, lam, v = model.prior_from_events(h_sum, k, user)                      # 3 x (B, D)
    t = table.take(items)
    phi_i = t.phi                                                            # (P, D)
    dot = lambda heads: (heads * phi_i).sum(-1)  # noqa: E731  (P, D) . (P, D) -> (P,)

    # the emitted part: population prior, features, history (leave-one-out per event)
    empty_h, empty_k = torch.zeros_like(h_sum), torch.zeros_like(k)
    m0, _, v0 = model.prior_from_events(empty_h, empty_k, None if user is None else torch.zeros_like(user))
    mf, _, vf = model.prior_from_events(empty_h, empty_k, user)
    emitted = dot((m + v)[rows])                                             # (P,)
    prior = t.rank_bias + dot((m0 + v0)[rows])
    features = dot((mf + vf - m0 - v0)[rows])
    history = emitted - dot((mf + vf)[rows])
    b, j = mask.nonzero(as_tuple=True)                                       # one row per event
    loo = torch.zeros(len(rows), mask.shape[1])                              # (P, K)
    if len(b):
        ml, _, vl = model.prior_from_events(h_sum[b] - h[b, j], k[b] - 1, None if user is None else user[b])
        slot = torch.full(mask.shape, -1, dtype=torch.long)
        slot[b, j] = torch.arange(len(b))
        s = slot[rows]                                                       # (P, K) row of "without j"
        without = ((ml + vl)[s.clamp(min=0)] * phi_i.unsqueeze(1)).sum(-1)   # (P, K)
        loo = (emitted.unsqueeze(1) - without) * (s >= 0)

    # the fold-in: exact, linear in the residuals against the emitted prior mean
    phi_s = model.phi(e_s) * mask.unsqueeze(-1)                              # (B, K, D)
    resid = (model.residual_targets(idx, support.ratings) - (phi_s @ m.unsqueeze(-1)).squeeze(-1)) * mask
    A = phi_s.transpose(1, 2) @ phi_s + torch.diag_embed(lam)               # (B, D, D) posterior precision
    x = torch.linalg.solve(A[rows], phi_i)                                   # (P, D)  A^-1 phi_i
    exact = (phi_s[rows] @ x.unsqueeze(-1)).squeeze(-1) * resid[rows]        # (P, K)
    # the item-item terms: exact sums over the events
    D, c = table.D, 0
    if model.context is not None:
        c = model.context.q_id.embedding_dim
        q = model.context.per_event(e_s, idx, mask)                          # (B, K, c)
        exact = exact + (q[rows] @ t.vectors[:, D:D + c].unsqueeze(-1)).squeeze(-1)
    r = model.ii_active                                                       # the columns in the table
    if r:
        f = model.ii_factors[:, :r][idx] * mask.unsqueeze(-1) * model.ii_weights[:r]   # (B, K, r)
        exact = exact + (f[rows] @ t.vectors[:, D + c:].unsqueeze(-1)).squeeze(-1)
    return Attribution(prior, features, exact + loo, exact, history - loo.sum(1))
