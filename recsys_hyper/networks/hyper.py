"""The networks: item tower, history encoder, hypernetwork and the closed-form fold-in.

Notation (shapes in comments): B users, K support events (padded), N items, d item dim,
D = d + 1 (item vector plus a constant 1, so the head's last weight is the user bias).

    e_i   = ItemTower(i)                          (N, d)     once per item
    phi_i = [e_i, 1]                              (N, D)
    z_u   = HistoryEncoder(support, user feats)   (B, Z)     once per user
    m_u, lam_u, v_u = HyperNetwork(z_u)           (B, D) x3  prior mean / precision, ranking vector
    w_u   = (Phi_S^T Phi_S + a * diag(lam_u))^-1 (Phi_S^T y_S + a * diag(lam_u) m_u)   the fold-in
    ctx_u = g(k) sum_{j in S} q_j                 (B, c)     the learned item-item context (optional)
            [+ (sum_{j in S} f_j) * omega]                      EASE's term, fitted after training (optional)
    rating(u, i) = mu + b_i + w_u . phi_i         (on the rating scale)
    rank(u, i)   = c_i + v_u . phi_i + w_u . phi_i + ctx_u . p_i

Both scores are linear in phi_i, so scoring a catalogue is one GEMM. ``a`` is the calibrated
prior-strength multiplier (1 during training). Modules do no I/O and no validation; the fold-in
is :func:`recsys_hyper.numerics.fold_in.fold_in` (shared with the MF baseline).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..numerics.features import FeatureSpec, FeatureTensors, dense_features, dense_width
from ..numerics.fold_in import fold_in
from ..numerics.padding import Padded
from ..numerics.scores import linear_scores
from .features import FeatureEncoder, embedding, normal_init


def mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.GELU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers[:-2 if dropout else -1])  # no activation / dropout after the last layer


class ItemTower(nn.Module):
    """Item id embedding + item-feature encoder -> e_i with bounded norm.

    ``id_dropout`` zeroes the id embedding of a fraction of items during training, so the
    feature path carries weight and items never seen in training are scored sensibly. Index
    ``n_items`` is the "no id" row (always zero) used for unknown items.
    """

    def __init__(self, n_items: int, spec: FeatureSpec, dim: int, hidden: int, id_dropout: float):
        super().__init__()
        self.n_items = n_items
        self.id_emb = embedding(n_items + 1, dim)
        normal_init(self.id_emb.weight, std=0.1)
        with torch.no_grad():
            self.id_emb.weight[n_items].zero_()
        self.features = FeatureEncoder(spec)
        self.feat_mlp = mlp([self.features.out_dim, hidden, dim]) if self.features.out_dim else None
        self.id_dropout = id_dropout
        self.log_scale = nn.Parameter(torch.zeros(()))

    def forward(self, ids: torch.Tensor, feats: FeatureTensors) -> torch.Tensor:
        """ids (N,) in 0..n_items (n_items = unknown) and their features -> (N, d)."""
        x = self.id_emb(ids)                                                # (N, d)
        if self.training and self.id_dropout > 0:
            keep = (torch.rand(ids.shape[0], 1) >= self.id_dropout).to(x.dtype)
            x = x * keep
        if self.feat_mlp is not None:
            x = x + self.feat_mlp(self.features(feats))
        # layer-normalised, so ||e_i|| ~ scale: large feature-driven norms would make the
        # fold-in over-trust a few ratings
        scale = self.log_scale.clamp(-1.5, 1.5).exp()
        return F.layer_norm(x, x.shape[-1:]) * (scale / math.sqrt(x.shape[-1]))


class HistoryEncoder(nn.Module):
    """A permutation-invariant set encoder of the support set, plus user features -> z_u.

    Each event is (item vector, rating encoding) -> MLP; the set is pooled as
    ``(sum_j h_j + c * p) / (k + c)``: a mean that shrinks towards a learned prior ``p`` with a
    learned pseudo-count ``c``, so an empty history (k = 0) gives exactly ``p``.
    """

    def __init__(self, item_dim: int, user_spec: FeatureSpec, hidden: int, out: int, feature_dropout: float):
        super().__init__()
        self.event = mlp([item_dim + 2, hidden, hidden])
        self.prior = nn.Parameter(torch.zeros(hidden))
        self.log_pseudo = nn.Parameter(torch.zeros(()))
        self.user_features = FeatureEncoder(user_spec)
        self.user_mlp = mlp([self.user_features.out_dim, hidden]) if self.user_features.out_dim else None
        self.feature_dropout = feature_dropout
        in_dim = hidden + (hidden if self.user_mlp is not None else 0) + 1
        self.out = mlp([in_dim, hidden, out])

    def forward(self, e_support: torch.Tensor, r_support: torch.Tensor, mask: torch.Tensor,
                user_feats: FeatureTensors | None) -> torch.Tensor:
        """e_support (B, K, d), r_support (B, K) standardised ratings, mask (B, K) -> (B, Z)."""
        return self.pool(self.event_sum(e_support, r_support, mask), mask.sum(1, keepdim=True),
                         self.user_part(user_feats, e_support.shape[0]))

    def events(self, e_support: torch.Tensor, r_support: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Each event's encoding on its own, padding zeroed: (B, K, H). The set enters only
        through their sum, so a history without event j is ``sum - h_j`` (exact leave-one-out)."""
        return self.event(self._event_input(e_support, r_support)) * mask.unsqueeze(-1)    # (B, K, H)

    @staticmethod
    def _event_input(e_support: torch.Tensor, r_support: torch.Tensor) -> torch.Tensor:
        """What the event network reads per event: ``[e_j, r_j, 1]`` (B, K, d + 2)."""
        return torch.cat([e_support, r_support.unsqueeze(-1), torch.ones_like(r_support).unsqueeze(-1)], -1)

    def event_sum(self, e_support: torch.Tensor, r_support: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``events(...).sum(1)`` (B, H), with the event network's last (linear) layer applied once
        to the pooled hidden units instead of to every event: ``sum_j (W g_j + b) = W sum_j g_j + k b``.
        The same function; the per-event work is one layer instead of two."""
        first, act, last = self.event
        g = act(first(self._event_input(e_support, r_support)))            # (B, K, H)
        pooled = (mask.unsqueeze(1) @ g).squeeze(1)                         # (B, H): sum over the events
        return F.linear(pooled, last.weight) + mask.sum(1, keepdim=True) * last.bias

    def user_part(self, user_feats: FeatureTensors | None, n: int) -> torch.Tensor | None:
        """The user-feature pathway (n, H): zeros for users without features, ``None`` when the
        model has no user features."""
        if self.user_mlp is None:
            return None
        if user_feats is None:
            return torch.zeros(n, self.prior.shape[0])
        u = self.user_mlp(self.user_features(user_feats))                   # (B, H)
        if self.training and self.feature_dropout > 0:
            u = u * (torch.rand(u.shape[0], 1) >= self.feature_dropout).to(u.dtype)
        return u

    def pool(self, h_sum: torch.Tensor, k: torch.Tensor, user: torch.Tensor | None) -> torch.Tensor:
        """The summed event encodings (B, H), the history sizes (B, 1) and the user part -> z (B, Z)."""
        c = self.log_pseudo.exp()
        pooled = (h_sum + c * self.prior) / (k + c)                         # (B, H)
        parts = [pooled] + ([user] if user is not None else []) + [torch.log1p(k)]
        return self.out(torch.cat(parts, -1))


class HyperNetwork(nn.Module):
    """z_u -> the head's prior mean, prior precision and ranking vector, as residuals around a
    shared global head.

    The last layer is zero-initialised, so an untrained hypernetwork emits exactly the global
    head. Hypernetwork-aware initialisation (Chang et al., ICLR 2020, "hyperfan-in"): the emitted
    head weights feed a layer of fan-in D, so the emitted residuals are scaled by 1/sqrt(D)
    and then bounded with tanh (``max_delta``); the log-precision residual is bounded too.
    """

    def __init__(self, z_dim: int, hidden: int, head_dim: int, init_precision: float, max_delta: float = 3.0,
                 max_log_precision_delta: float = 3.0):
        super().__init__()
        self.head_dim = head_dim
        self.body = mlp([z_dim, hidden, hidden])
        self.last = nn.Linear(hidden, 3 * head_dim)
        nn.init.zeros_(self.last.weight)
        nn.init.zeros_(self.last.bias)
        self.global_mean = nn.Parameter(torch.zeros(head_dim))
        self.global_rank = nn.Parameter(torch.zeros(head_dim))
        self.global_log_precision = nn.Parameter(torch.full((head_dim,), math.log(init_precision)))
        self.fan_in_scale = 1.0 / math.sqrt(head_dim)
        self.max_delta, self.max_lp = max_delta, max_log_precision_delta

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raw = self.last(F.gelu(self.body(z)))                               # (B, 3D)
        dm, dlp, dv = raw.view(-1, 3, self.head_dim).unbind(1)              # 3 x (B, D)
        bound = lambda x, b: b * torch.tanh(x / b)  # noqa: E731
        mean = self.global_mean + bound(dm * self.fan_in_scale, self.max_delta)
        precision = (self.global_log_precision + bound(dlp, self.max_lp)).exp()
        rank = self.global_rank + bound(dv * self.fan_in_scale, self.max_delta)
        return mean, precision, rank


class ItemContext(nn.Module):
    """The item-item path of the ranking score: every item has a *context* vector ``q_j`` (what
    having it in one's history says) and a *target* vector ``p_i`` (what it answers to), each an id
    embedding plus a linear map of the item vector ``e`` (so items without an id still have both).
    A user's context is ``g(k) sum_{j in S} q_j`` with ``g(k) = exp(a) (k + 1)^-beta`` (``a``,
    ``beta`` learned): the support set reaches the ranking score directly, as in FISM / asymmetric
    SVD, instead of only through a pooled network; it stays a dot product at scoring time.
    """

    def __init__(self, n_items: int, item_dim: int, dim: int):
        super().__init__()
        self.q_id = embedding(n_items + 1, dim, padding_idx=n_items)
        self.p_id = embedding(n_items + 1, dim, padding_idx=n_items)
        for emb in (self.q_id, self.p_id):
            normal_init(emb.weight, std=0.05)
            with torch.no_grad():
                emb.weight[n_items].zero_()
        self.q_map = nn.Linear(item_dim, dim, bias=False)
        self.p_map = nn.Linear(item_dim, dim, bias=False)
        self.log_gate = nn.Parameter(torch.zeros(()))
        self.gate_decay = nn.Parameter(torch.full((), 0.5))

    def user(self, e_support: torch.Tensor, items_support: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """e_support (B, K, d), items_support (B, K), mask (B, K) -> the users' context (B, c)."""
        m = mask.unsqueeze(1)                                                          # (B, 1, K)
        # the map is linear: applied once to the summed item vectors, not to every event
        q = self.q_map((m @ e_support).squeeze(1)) + (m @ self.q_id(items_support)).squeeze(1)   # (B, c)
        return q * self.gate(mask)

    def per_event(self, e_support: torch.Tensor, items_support: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Each event's share of :meth:`user`: ``g(k) q_j`` (B, K, c); they sum to the context."""
        q = (self.q_map(e_support) + self.q_id(items_support)) * mask.unsqueeze(-1)    # (B, K, c)
        return q * self.gate(mask).unsqueeze(1)

    def gate(self, mask: torch.Tensor) -> torch.Tensor:
        """``g(k)`` (B, 1) for supports ``mask`` (B, K)."""
        return (self.log_gate - self.gate_decay * torch.log1p(mask.sum(1, keepdim=True))).exp()

    def targets(self, e: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """e (..., d), items (...) -> p (..., c)."""
        return self.p_map(e) + self.p_id(items)


@dataclass
class ItemTable:
    """The item side of the linear heads, row-aligned: ``vectors`` (..., D + c) = ``[phi_i, p_i]``
    (``phi_i = [e_i, 1]``, ``p_i`` the item-item target vector, empty when the path is off), the
    rating bias ``b_i`` and ranking bias ``c_i`` (...,), the global mean rating ``mu``, ``D``, and
    ``extra`` (..., E): the rating-only columns of the special cases blended into the rating (MF
    fold-in's ``[q_i, delta_i]``: its item factors and its item bias minus the model's; then the
    bias baseline's item bias minus the model's; E = 0 when there are none)."""

    vectors: torch.Tensor
    rating_bias: torch.Tensor
    rank_bias: torch.Tensor
    mu: torch.Tensor
    D: int
    extra: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.extra is None:
            self.extra = self.vectors.new_zeros(*self.vectors.shape[:-1], 0)

    @property
    def phi(self) -> torch.Tensor:
        """``[e_i, 1]`` (..., D): what the rating head dots with."""
        return self.vectors[..., : self.D]

    @property
    def rating_vectors(self) -> torch.Tensor:
        """``[phi_i, extra_i]`` (..., D + E): what the whole rating head dots with."""
        return torch.cat([self.phi, self.extra], -1) if self.extra.shape[-1] else self.phi

    def take(self, idx) -> "ItemTable":
        return ItemTable(self.vectors[idx], self.rating_bias[idx], self.rank_bias[idx], self.mu, self.D,
                         self.extra[idx])

    def detach(self) -> "ItemTable":
        return ItemTable(self.vectors.detach(), self.rating_bias.detach(), self.rank_bias.detach(), self.mu.detach(),
                         self.D, self.extra.detach())

    def for_gemm(self) -> "ItemTable":
        """The same table with ``vectors`` stored column-major, so that ``vectors.T`` (what a
        catalogue GEMM multiplies by) is contiguous: ~10% faster catalogue scoring, same values."""
        return ItemTable(self.vectors.T.contiguous().T, self.rating_bias, self.rank_bias, self.mu, self.D, self.extra)


@dataclass
class Heads:
    """Per-user heads: ``w`` (B, D) the rating head, ``v`` (B, D) the ranking residual, ``ctx``
    (B, c) the user's item-item context (c = 0 when the path is off), ``x`` (B, E) the rating
    head's coefficients of the items' ``extra`` columns (E = 0 when there are none).

    The two formulas of the model live here, once: :meth:`rating` ``mu + b_i + w . phi_i + x .
    extra_i`` and :meth:`ranking` ``c_i + (v + w) . phi_i + ctx . p_i``; both are linear in the
    item vectors, so a catalogue is one GEMM.
    """

    w: torch.Tensor
    v: torch.Tensor
    ctx: torch.Tensor
    x: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.x is None:
            self.x = self.w.new_zeros(*self.w.shape[:-1], 0)

    @property
    def rank_vector(self) -> torch.Tensor:
        """The ranking head ``[v + w, ctx]`` (B, D + c), dotted with ``[phi_i, p_i]``."""
        return torch.cat([self.v + self.w, self.ctx], -1) if self.ctx.shape[-1] else self.v + self.w

    @property
    def rating_vector(self) -> torch.Tensor:
        """The whole rating head ``[w, x]`` (B, D + E), dotted with ``[phi_i, extra_i]``."""
        return torch.cat([self.w, self.x], -1) if self.x.shape[-1] else self.w

    def take(self, rows) -> "Heads":
        return Heads(self.w[rows], self.v[rows], self.ctx[rows], self.x[rows])

    def per_event(self) -> "Heads":
        """Heads (B, 1, .), so that pairwise scores broadcast over each user's K events (B, K)."""
        return Heads(self.w.unsqueeze(1), self.v.unsqueeze(1), self.ctx.unsqueeze(1), self.x.unsqueeze(1))

    def rating(self, items: ItemTable, pairs: bool = False) -> torch.Tensor:
        """``mu + b_i + w . phi_i + x . extra_i``. Catalogue: heads (B, .), items (N, .) -> (B, N);
        ``pairs``: heads and items row-aligned (or broadcastable, see :meth:`per_event`) -> (P,)."""
        return linear_scores(self.rating_vector, items.rating_vectors, items.mu + items.rating_bias, pairs=pairs)

    def ranking(self, items: ItemTable, pairs: bool = False) -> torch.Tensor:
        """``c_i + (v + w) . phi_i + ctx . p_i`` (higher = better); shapes as :meth:`rating`."""
        return linear_scores(self.rank_vector, items.vectors, items.rank_bias, pairs=pairs)


#: the largest support size with blend weights of its own (larger ones share them)
BLEND_MAX_K = 20
#: the rating's special cases blended in, in the order of the columns of ``rating_blend``
BLEND = ("bias", "mf", "mf_features")


class HyperRecModel(nn.Module):
    """All networks together; :meth:`heads` emits heads, :meth:`item_table` gives what they score."""

    def __init__(self, n_items: int, item_spec: FeatureSpec, user_spec: FeatureSpec, dim: int = 32,
                 hidden: int = 64, z_dim: int = 64, id_dropout: float = 0.25, user_feature_dropout: float = 0.3,
                 init_precision: float = 20.0, context_dim: int = 0, item_item_rank: int = 0, mf_rank: int = 0):
        super().__init__()
        self.dim = dim
        self.context = ItemContext(n_items, dim, context_dim) if context_dim else None
        # the EASE term (fitted in closed form after meta-training, not trained): a user's part is
        # (sum over the support of ii_factors) * ii_weights, an item's is ii_vectors; weights 0 = off
        self.item_item_rank = item_item_rank
        self.register_buffer("ii_factors", torch.zeros(n_items + 1, item_item_rank))
        self.register_buffer("ii_vectors", torch.zeros(n_items + 1, item_item_rank))
        self.register_buffer("ii_weights", torch.zeros(item_item_rank))
        self.items = ItemTower(n_items, item_spec, dim, hidden, id_dropout)
        self.encoder = HistoryEncoder(dim, user_spec, hidden, z_dim, user_feature_dropout)
        self.hyper = HyperNetwork(z_dim, hidden, dim + 1, init_precision)
        self.item_bias = nn.Parameter(torch.zeros(n_items + 1))            # b_i (rating), last = unknown
        self.item_rank_bias = nn.Parameter(torch.zeros(n_items + 1))       # c_i (ranking)
        self.register_buffer("mu", torch.zeros(()))
        self.register_buffer("r_scale", torch.ones(()))
        self.register_buffer("prior_multiplier", torch.ones(dim + 1))     # per head dimension, last = user bias
        # the rating's exact special cases, blended in (fitted and chosen on validation users after
        # training): the bias baseline (mu + b_i + b_u, b_u folded in with its own regulariser) and
        # MF fold-in (mf_rank factors: its item factors, its item biases as deltas from the model's),
        # from a zero prior and from a features prior (the ridge from the user's dense side features
        # to MF's user vectors), each with its fold-in's regularisers (rows of mf_reg). Weights per
        # support size k (the last for every larger k), in the order of BLEND: 0, 0, 0 = the model alone
        self.register_buffer("rating_blend", torch.zeros(BLEND_MAX_K + 1, len(BLEND)))
        self.register_buffer("bias_user_reg", torch.ones(()))
        self.register_buffer("bias_delta", torch.zeros(n_items + 1))     # the bias baseline's mu + b_i minus the model's
        self.mf_rank = mf_rank
        self.user_spec = user_spec
        self.register_buffer("mf_factors", torch.zeros(n_items + 1, mf_rank))
        self.register_buffer("mf_delta", torch.zeros(n_items + 1))
        self.register_buffer("mf_reg", torch.ones(2, mf_rank + 1))
        self.register_buffer("mf_prior_weights", torch.zeros(dense_width(user_spec) if mf_rank else 0, mf_rank + 1))

    @property
    def ii_active(self) -> int:
        """How many of the EASE term's columns are in use: its weights fill the first columns and
        the rest are 0 (all of them when validation switched the term off). Only these enter the
        heads and the item table, so an unused term costs nothing in the catalogue GEMM."""
        used = torch.nonzero(self.ii_weights).flatten()
        return int(used[-1]) + 1 if len(used) else 0

    @property
    def rank_context_dim(self) -> int:
        """The width of a ranking head's context ``ctx`` (and of the items' ``p_i``)."""
        return (0 if self.context is None else self.context.q_id.embedding_dim) + self.ii_active

    @staticmethod
    def phi(e: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., D): the item vector with a constant 1 for the user bias."""
        return torch.cat([e, torch.ones_like(e[..., :1])], -1)

    def heads(self, e_support: torch.Tensor, items_support: torch.Tensor, r_support: torch.Tensor,
              mask: torch.Tensor, user_feats: FeatureTensors | None) -> tuple[Heads, torch.Tensor]:
        """Emit heads from support sets: e_support (B, K, d), items_support (B, K) indices,
        r_support (B, K) raw ratings, mask (B, K). Returns heads and the emitted deltas (B, 2D)
        (for the L2 penalty)."""
        m, lam, v = self.prior(e_support, r_support, mask, user_feats)    # 3 x (B, D)
        w = fold_in(self.phi(e_support), self.residual_targets(items_support, r_support), mask, m, lam)
        deltas = torch.cat([m - self.hyper.global_mean, v - self.hyper.global_rank], -1)
        w, v, x = self.blend_with_baselines(w, v, items_support, r_support, mask, user_feats)
        ctx = (self.context.user(e_support, items_support, mask) if self.context is not None
               else w.new_zeros(w.shape[0], 0))
        r = self.ii_active
        if r:
            ii = (self.ii_factors[:, :r][items_support] * mask.unsqueeze(-1)).sum(1) * self.ii_weights[:r]  # (B, r)
            ctx = torch.cat([ctx, ii], -1)
        return Heads(w, v, ctx, x), deltas

    def head_covariance(self, e_support: torch.Tensor, r_support: torch.Tensor, mask: torch.Tensor,
                        user_feats: FeatureTensors | None) -> torch.Tensor:
        """The fold-in's Gaussian posterior over the (unblended) rating head, which the ranking head
        ``v + w`` shares: ``Sigma_u = (Phi_S^T Phi_S + Lambda_u)^-1`` (B, D, D), in units of the rating
        noise (support item vectors, emitted prior precision, calibrated multiplier applied)."""
        _, lam, _ = self.prior(e_support, r_support, mask, user_feats)                    # (B, D)
        phi = self.phi(e_support) * mask.unsqueeze(-1)                                     # (B, K, D)
        return torch.linalg.inv(phi.transpose(1, 2) @ phi + torch.diag_embed(lam))

    def bias_head(self, items_support: torch.Tensor, r_support: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The bias baseline's rating head (B, D): ``[0, ..., 0, b_u]`` with ``b_u = sum(r - mu_b - b_j^b)
        / (k + user_reg)`` (its own global mean and item biases, ``mu + b_j + bias_delta_j``), so that
        ``mu + b_i + head . phi_i + bias_delta_i`` is its rating exactly."""
        resid = self.residual_targets(items_support, r_support) - self.bias_delta[items_support]
        b_u = (resid * mask).sum(1) / (mask.sum(1) + self.bias_user_reg)
        return torch.cat([b_u.new_zeros(b_u.shape[0], self.dim), b_u.unsqueeze(-1)], -1)

    def mf_head(self, items_support: torch.Tensor, r_support: torch.Tensor, mask: torch.Tensor,
                prior: torch.Tensor | None = None, row: int = 0) -> torch.Tensor:
        """MF fold-in's ``[p_u, b_u]`` (B, mf_rank + 1): the ridge solution against the support items'
        ``[q_j, 1]`` of ``r - mu_mf - b_j^mf`` (= ``r - mu - b_j - delta_j``) from ``prior`` (B, mf_rank +
        1; default 0) with the regularisers of row ``row`` of :attr:`mf_reg`."""
        X = torch.cat([self.mf_factors[items_support], torch.ones_like(mask).unsqueeze(-1)], -1)   # (B, K, R + 1)
        y = self.residual_targets(items_support, r_support) - self.mf_delta[items_support]        # (B, K)
        lam = self.mf_reg[row].expand(mask.shape[0], -1)
        return fold_in(X, y * mask, mask, torch.zeros_like(lam) if prior is None else prior, lam)

    def mf_prior(self, user_feats: FeatureTensors | None, n: int) -> torch.Tensor:
        """MF's features prior ``[p_u, b_u]`` (n, mf_rank + 1) from the users' dense side features."""
        return dense_features(self.user_spec, user_feats, n) @ self.mf_prior_weights

    def blend_with_baselines(self, w: torch.Tensor, v: torch.Tensor, items_support: torch.Tensor,
                             r_support: torch.Tensor, mask: torch.Tensor, user_feats: FeatureTensors | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rating head blended with its special cases (:data:`BLEND`) by the weights of each
        user's support size (:attr:`rating_blend`): ``w`` (B, D) and the coefficients ``x`` (B, E)
        of the items' rating-only columns (:meth:`item_table`'s ``extra``: MF's weights times ``[p_u,
        1]``, then the bias baseline's weight); the ranking head ``v + w`` is left as it was."""
        k = mask.sum(1).long().clamp(max=self.rating_blend.shape[0] - 1)
        alpha, beta, gamma = self.rating_blend[k].unbind(-1)                               # (B,) x 3
        x = w.new_zeros(w.shape[0], self.extra_dim)
        if not bool(self.rating_blend[k].any()):
            return w, v, x
        blended = (1 - alpha - beta - gamma).unsqueeze(-1) * w
        blended = blended + alpha.unsqueeze(-1) * self.bias_head(items_support, r_support, mask)
        if self.mf_rank:
            R = self.mf_rank
            for weight, row in ((beta, 0), (gamma, 1)):                                    # zero / features prior
                if bool(weight.any()):
                    prior = self.mf_prior(user_feats, len(w)) if row else None
                    mf = self.mf_head(items_support, r_support, mask, prior, row)              # (B, R + 1)
                    blended[:, -1] += weight * mf[:, -1]                                   # its user bias
                    x[:, :R] += weight.unsqueeze(-1) * mf[:, :-1]
                    x[:, R] += weight                                                      # MF's item-bias deltas
        if self.bias_delta_active:
            x[:, -1] = alpha                                                               # the bias baseline's
        return blended, v + (w - blended), x

    @property
    def bias_delta_active(self) -> bool:
        """Whether the bias baseline's item biases differ from the network's (one more rating-only
        column: ``bias_delta``). Models saved before it existed have none."""
        return bool(self.bias_delta.any())

    @property
    def extra_dim(self) -> int:
        """The width E of the items' rating-only columns: MF's factors and item-bias deltas (when MF is
        among the special cases), then the bias baseline's item-bias deltas (when they differ)."""
        return (self.mf_rank + 1 if self.mf_rank else 0) + int(self.bias_delta_active)

    def prior(self, e_support: torch.Tensor, r_support: torch.Tensor, mask: torch.Tensor,
              user_feats: FeatureTensors | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What the hypernetwork emits before the fold-in: the rating head's prior mean ``m`` and
        precision (the calibrated multiplier applied) and the ranking residual ``v``, 3 x (B, D)."""
        h_sum = self.encoder.event_sum(e_support, self.standardise(r_support, mask), mask)    # (B, H)
        return self.prior_from_events(h_sum, mask.sum(1, keepdim=True),
                                      self.encoder.user_part(user_feats, h_sum.shape[0]))

    def prior_from_events(self, h_sum: torch.Tensor, k: torch.Tensor, user: torch.Tensor | None
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`prior` from the summed event encodings (B, H), history sizes (B, 1) and user part."""
        m, lam, v = self.hyper(self.encoder.pool(h_sum, k, user))                             # 3 x (B, D)
        return m, lam * self.prior_multiplier, v

    def standardise(self, r_support: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Raw ratings (B, K) -> what the history encoder reads."""
        return (r_support - self.mu) / self.r_scale * mask

    def residual_targets(self, items_support: torch.Tensor, r_support: torch.Tensor) -> torch.Tensor:
        """What the fold-in regresses on: ``r - mu - b_j`` (B, K)."""
        return r_support - self.mu - self.item_bias[items_support]

    def emit(self, e_all: torch.Tensor, item_index: torch.Tensor, support: Padded,
             user_feats: FeatureTensors | None) -> tuple[Heads, torch.Tensor]:
        """Heads for a padded support batch whose items are catalogue rows: ``e_all`` (N + 1, d)
        the catalogue's item vectors (last row: padding), ``item_index`` (N + 1,) each row's index
        in the id vocabulary (``n_items`` = no id embedding)."""
        return self.heads(e_all[support.items], item_index[support.items], support.ratings, support.mask, user_feats)

    def item_table(self, e: torch.Tensor, items: torch.Tensor) -> ItemTable:
        """The item side of the heads for item vectors ``e`` (..., d) and their vocabulary indices."""
        vectors = self.phi(e)
        if self.context is not None:
            vectors = torch.cat([vectors, self.context.targets(e, items)], -1)
        r = self.ii_active
        if r:
            vectors = torch.cat([vectors, self.ii_vectors[:, :r][items]], -1)
        extra = [self.mf_factors[items], self.mf_delta[items].unsqueeze(-1)] if self.mf_rank else []
        if self.bias_delta_active:
            extra.append(self.bias_delta[items].unsqueeze(-1))
        extra = torch.cat(extra, -1) if extra else vectors.new_zeros(*vectors.shape[:-1], 0)
        return ItemTable(vectors, self.item_bias[items], self.item_rank_bias[items], self.mu, self.dim + 1, extra)
