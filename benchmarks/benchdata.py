"""What several benchmarks share: the datasets they run on, and the hypernetwork fitted on the
cold-start protocol's training users (its validation users decide what it tunes; the cold-test
users are left for the benchmark). Imported by the scripts beside it (``python benchmarks/X.py``
puts this folder on the path)."""

from __future__ import annotations

import sys
from pathlib import Path

from recsys_hyper import HyperRecommender
from recsys_hyper.data import load_dataset
from recsys_hyper.data.movielens import read_movielens
from recsys_hyper.data.synthetic import generate, preset
from recsys_hyper.evaluation.protocol import VALIDATION, Protocol, split_users, training_dataset

ML100K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"


def dataset(name: str, work: Path, synthetic_preset: str | None = None):
    """``ml-100k`` (read in place from ../shared), or a synthetic preset generated into ``work``
    (``synthetic_preset`` names the preset when ``name`` is not one, e.g. "synthetic" -> "default")."""
    if name == "ml-100k":
        if not (ML100K / "u.data").is_file():
            sys.exit(f"MovieLens 100K is not at {ML100K}")
        return read_movielens(ML100K)
    generate(preset(synthetic_preset or name, seed=0), work / name, overwrite=True, progress=False)
    return load_dataset(work / name)


def fitted_on_split(ds, seed: int = 0):
    """The protocol's seeded user split and the hypernetwork fitted on its training users."""
    split = split_users(ds, Protocol(seed=seed))
    model = HyperRecommender().fit(training_dataset(ds, split), validation_users=split.users(VALIDATION),
                                   progress=False)
    return split, model
