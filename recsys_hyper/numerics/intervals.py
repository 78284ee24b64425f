"""Prediction intervals for new users' ratings, calibrated on validation users (split conformal).

At fit time the model predicts the held-out ratings of validation users from their k earliest
events, for each k of the validation shots; the absolute errors at each k give the interval's
half-width at every level (the finite-sample conformal quantile), and their root mean square the
predictive standard deviation. A new user with k known events gets the half-width of the largest
calibrated k not above theirs, so the interval narrows as events arrive exactly as much as the
errors did on validation users. Coverage is marginal (over users and their rated items, each
rated pair counting once), not per user or per item.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: the levels stored (a requested level is rounded up to the next stored one)
LEVELS = tuple(round(0.01 * i, 2) for i in range(1, 100))
#: the levels the cold-start evaluation reports in its results (and logs to MLflow)
REPORTED = (0.5, 0.8, 0.9)
#: the levels of the evaluation's reliability curve (nominal against observed coverage)
RELIABILITY = tuple(round(0.05 * i, 2) for i in range(1, 20))


@dataclass
class Intervals:
    """Half-widths per calibrated k (rows) and level (columns), the predictive standard
    deviation per k, and the number of validation pairs behind each k. ``noise_var``: the rating
    noise variance that puts the heads' posterior in rating units (see :meth:`fit_noise`), or None."""

    shots: list[int]
    half_width: np.ndarray               # (len(shots), len(LEVELS))
    std: np.ndarray                      # (len(shots),)
    pairs: list[int]
    noise_var: float | None = None

    @classmethod
    def calibrate(cls, errors_by_k: dict[int, np.ndarray]) -> "Intervals | None":
        """From the absolute errors of validation pairs at each k (k -> errors)."""
        kept = {k: np.sort(np.abs(e[np.isfinite(e)])) for k, e in sorted(errors_by_k.items())}
        kept = {k: e for k, e in kept.items() if len(e)}
        if not kept:
            return None
        widths, stds = [], []
        for e in kept.values():
            n = len(e)
            # the conformal quantile: the ceil((n + 1) p)-th smallest error (all of them beyond n)
            ranks = [min(n, math.ceil((n + 1) * p)) - 1 for p in LEVELS]
            widths.append(e[ranks])
            stds.append(float(np.sqrt(np.mean(e ** 2))))
        return cls(list(kept), np.array(widths, dtype=np.float64), np.array(stds), [len(e) for e in kept.values()])

    def lookup(self, k: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
        """(half-width, standard deviation) for users with ``k`` known events at ``level`` (one of
        :data:`LEVELS`' range; a level between two is rounded up)."""
        column = int(np.searchsorted(np.array(LEVELS), level - 1e-9))
        row = np.clip(np.searchsorted(np.array(self.shots), np.asarray(k), side="right") - 1, 0, len(self.shots) - 1)
        return self.half_width[row, column], self.std[row]

    def fit_noise(self, errors: np.ndarray, head_variance: np.ndarray) -> None:
        """The rating noise variance ``s2`` from validation pairs' errors and the variance of their
        head's score in units of the noise (``phi_i^T Sigma_u phi_i``): the Gaussian model says
        ``E[error^2] = s2 (1 + phi_i^T Sigma_u phi_i)``, so ``s2`` is the ratio of the sums."""
        ok = np.isfinite(errors) & np.isfinite(head_variance)
        if ok.any():
            self.noise_var = float(np.sum(np.square(errors[ok])) / np.sum(1.0 + head_variance[ok]))

    def bounds(self, predicted: np.ndarray, k: np.ndarray, level: float,
               rating_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lower, upper, std) of predictions ``predicted`` of users with ``k`` known events (per
        prediction) at ``level``, the bounds clipped to ``rating_range``; NaN where the prediction is."""
        half, std = self.lookup(k, level)
        lo, hi = rating_range
        return (np.clip(predicted - half, lo, hi), np.clip(predicted + half, lo, hi),
                np.where(np.isnan(predicted), np.nan, std))

    def coverage(self, predicted: np.ndarray, actual: np.ndarray, k: np.ndarray, rating_range: tuple[float, float],
                 levels=RELIABILITY) -> list[dict]:
        """How often the intervals of ``predicted`` (users with ``k`` known events, per pair) hold
        ``actual``, at each of ``levels``: one row per level with ``level``, ``covered`` (the share
        of the scoreable pairs inside), ``mean_width`` and ``pairs`` (each pair counts once)."""
        ok = np.isfinite(predicted)
        predicted, actual, k = predicted[ok], np.asarray(actual, np.float64)[ok], np.asarray(k)[ok]
        rows = []
        for level in levels:
            lower, upper, _ = self.bounds(predicted, k, level, rating_range)
            inside = (lower <= actual + 1e-6) & (actual <= upper + 1e-6)
            rows.append({"level": float(level), "covered": float(inside.mean()) if len(inside) else float("nan"),
                         "mean_width": float((upper - lower).mean()) if len(inside) else float("nan"),
                         "pairs": int(len(inside))})
        return rows

    def to_dict(self) -> dict:
        return {"shots": self.shots, "levels": list(LEVELS), "half_width": self.half_width.round(6).tolist(),
                "std": self.std.round(6).tolist(), "pairs": self.pairs, "noise_var": self.noise_var}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Intervals | None":
        if not d or list(d.get("levels", [])) != list(LEVELS):
            return None
        return cls(list(d["shots"]), np.array(d["half_width"], dtype=np.float64), np.array(d["std"]), list(d["pairs"]),
                   d.get("noise_var"))
