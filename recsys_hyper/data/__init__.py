"""The data contract: dataset directories, validation, importers, synthetic data, id maps, episodes.

Names load on first use (:mod:`recsys_hyper.lazy`): the command line reads the synthetic presets
to build ``--help`` without importing pandas."""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "dataset": ("Dataset", "content_digest", "load_dataset", "validate_frames", "write_dataset"),
    "episodes": ("Episode", "EpisodeSampler", "Histories", "chronological_split", "validation_episodes"),
    "idmap": ("UNKNOWN", "IdMap", "UnknownIdError"),
    "validation": ("ValidationReport",),
}
_NAMES, __getattr__ = lazy_exports(__name__, _EXPORTS, globals())

__all__ = list(_NAMES)


def __dir__() -> list[str]:
    return sorted(__all__)
