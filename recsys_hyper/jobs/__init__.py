"""Jobs: what the command line and the nightly pipeline run, composed from the library (train and
register, serve, batch scoring, cold-start evaluation, the nightly pipeline, dataset jobs). The
command line only parses arguments and calls these."""

from ..lazy import lazy_exports

#: loaded on first use: ``recsys-hyper score`` imports the scoring job, not MLflow and the nightly
_EXPORTS = {
    "evaluate": ("render_notebook", "run_cold_start_evaluation"),
    "models": ("load_alias", "load_model"),
    "nightly": ("NightlyConfig", "NightReport", "run_nightly"),
    "score": ("score_with_spark",),
    "train": ("Trained", "train_and_register"),
}
__all__, __getattr__ = lazy_exports(__name__, _EXPORTS, globals())
