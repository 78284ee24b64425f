"""The closed-form fold-in: a batched ridge / Bayesian-linear-regression posterior.

Shared by the hypernetwork (whose prior is emitted per user) and the MF baseline (whose prior is
zero or predicted from features). Differentiable, so the hypernetwork is meta-trained through it.
"""

from __future__ import annotations

import torch


def fold_in(phi: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, prior_mean: torch.Tensor,
            prior_precision: torch.Tensor) -> torch.Tensor:
    """Batched ridge / Bayesian linear regression posterior mean, differentiable.

    phi (B, K, D) support item vectors, y (B, K) residual targets, mask (B, K) left-aligned
    (each row's events first, then padding, as :class:`~recsys_hyper.numerics.padding.Padded`
    builds it), prior_mean / prior_precision (B, D) -> w (B, D). With k = 0: the prior mean.

    ``w = (Phi^T Phi + Lambda)^-1 (Phi^T y + Lambda m)``. When the support is smaller than the
    head (K < D: the cold-start case) the same posterior comes from a K x K system (Woodbury):
    ``w = m + Lambda^-1 Phi^T (I + Phi Lambda^-1 Phi^T)^-1 (y - Phi m)``. Padded rows (phi = 0,
    y = 0) add identity rows there and change nothing.
    """
    if mask.shape[1] > 1 and bool((mask[:, 1:] > mask[:, :-1]).any()):
        raise ValueError("fold_in: mask must be left-aligned (events first, then padding)")
    phi = phi * mask.unsqueeze(-1)                                          # padded rows -> 0
    y = y * mask
    B, K, D = phi.shape
    # Each user takes the path of their own k (not of the batch's widest support), so a user's
    # head never depends on who else is in the batch.
    k = mask.sum(1)
    small = k < D
    if not bool(small.any()):
        return _fold_in_primal(phi, y, prior_mean, prior_precision)
    # supports are left-aligned: the small group needs only its widest support's columns
    width = int(k[small].max())
    if bool(small.all()):
        return _fold_in_dual(phi[:, :width], y[:, :width], prior_mean, prior_precision)
    w = torch.empty_like(prior_mean)
    s, b = small.nonzero(as_tuple=True)[0], (~small).nonzero(as_tuple=True)[0]
    w[s] = _fold_in_dual(phi[s, :width], y[s, :width], prior_mean[s], prior_precision[s])
    w[b] = _fold_in_primal(phi[b], y[b], prior_mean[b], prior_precision[b])
    return w


def _fold_in_dual(phi, y, m, lam) -> torch.Tensor:
    """K x K form; exact zero padding rows add identity rows to G and change nothing."""
    K = phi.shape[1]
    scaled = phi / lam.unsqueeze(1)                                         # Phi Lambda^-1 (B, K, D)
    G = scaled @ phi.transpose(1, 2) + torch.eye(K, dtype=phi.dtype)        # (B, K, K)
    r = y - (phi @ m.unsqueeze(-1)).squeeze(-1)                             # (B, K) residual vs prior
    alpha = torch.linalg.solve(G, r)                                        # (B, K)
    return m + (scaled.transpose(1, 2) @ alpha.unsqueeze(-1)).squeeze(-1)


def _fold_in_primal(phi, y, m, lam) -> torch.Tensor:
    """D x D form."""
    A = phi.transpose(1, 2) @ phi + torch.diag_embed(lam)                   # (B, D, D)
    b = (phi.transpose(1, 2) @ y.unsqueeze(-1)).squeeze(-1) + lam * m       # (B, D)
    return torch.linalg.solve(A, b)
