"""The data contract: dataset directories, validation, importers, synthetic data, id maps, episodes."""

from .dataset import Dataset, content_digest, load_dataset, validate_frames, write_dataset
from .episodes import Episode, EpisodeSampler, Histories, chronological_split, validation_episodes
from .idmap import UNKNOWN, IdMap, UnknownIdError
from .validation import ValidationReport

__all__ = [
    "Dataset", "content_digest", "load_dataset", "validate_frames", "write_dataset", "ValidationReport",
    "IdMap", "UNKNOWN", "UnknownIdError",
    "Episode", "Histories", "EpisodeSampler", "chronological_split", "validation_episodes",
]
