"""The nightly training pipeline: landing folder, per-date state and lock, the steps."""

from .nightly import NightlyConfig, NightReport, run_nightly

__all__ = ["NightlyConfig", "NightReport", "run_nightly"]
