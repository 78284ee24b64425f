"""Jobs: what the command line and the nightly pipeline run, composed from the library (train and
register, serve, batch scoring, cold-start evaluation, the nightly pipeline, dataset jobs). The
command line only parses arguments and calls these."""

from .evaluate import render_notebook, run_cold_start_evaluation
from .models import load_alias, load_model
from .nightly import NightlyConfig, NightReport, run_nightly
from .score import score_with_spark
from .train import Trained, train_and_register

__all__ = ["render_notebook", "run_cold_start_evaluation", "load_alias", "load_model", "NightlyConfig",
           "NightReport", "run_nightly", "score_with_spark", "Trained", "train_and_register"]
