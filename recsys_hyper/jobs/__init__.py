"""Jobs: what the command line and the nightly pipeline run, composed from the library (train and
register, serve, batch scoring, cold-start evaluation, the nightly pipeline, dataset jobs). The
command line only parses arguments and calls these."""

import importlib

#: loaded on first use: ``recsys-hyper score`` imports the scoring job, not MLflow and the nightly
_EXPORTS = {
    "evaluate": ("render_notebook", "run_cold_start_evaluation"),
    "models": ("load_alias", "load_model"),
    "nightly": ("NightlyConfig", "NightReport", "run_nightly"),
    "score": ("score_with_spark",),
    "train": ("Trained", "train_and_register"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = list(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
