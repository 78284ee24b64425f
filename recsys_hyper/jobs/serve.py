"""Serving jobs on a dataset directory: top K for every user (``recommend``) and ratings for pairs
(``predict``). Inputs are validated and the vocabulary checked before any work; the output is
written atomically. Users listed in ``users.parquet`` with no events (an empty or absent
``interactions.parquet`` included) are served from their features alone (k = 0)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_file
from ..data import load_dataset
from ..data import schema as S
from ..data.validation import Collector, coerce_id, read_parquet_checked
from ..errors import RecsysHyperError
from ..recommender import check_compatible
from ..recommender.base import capability
from .models import load_model
from .paths import check_file_out


def input_files(data: str | os.PathLike, model: str | os.PathLike | None = None) -> list[Path]:
    """The files of a dataset directory that a command reads (and the model directory, when
    ``model`` is one rather than an MLflow URI)."""
    from .. import tracking

    files = [Path(data) / name for name in (S.INTERACTIONS_FILE, S.USERS_FILE, S.ITEMS_FILE)]
    if model is not None and not tracking.is_model_uri(str(model)):
        files.append(Path(model))
    return files


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """``df`` as one Parquet file, written atomically."""
    with atomic_file(path) as tmp:
        df.to_parquet(tmp, index=False)


def recommend(model: str, data: str | os.PathLike, top_k: int, out: str | os.PathLike,
              include_seen: bool = False, allow_rating_mismatch: bool = False, explain: int | None = None,
              score_std: bool = False, explore: str | None = None, explore_weight: float = 1.0,
              seed: int = 0, exclude_items: str | os.PathLike | None = None) -> str:
    """Top ``top_k`` for every user of ``data`` into ``out``; returns the summary line. ``explain``:
    add each recommendation's explanation with that many history events; ``score_std``: each
    score's standard deviation under the user's head posterior; ``explore`` ("ucb" or "thompson",
    ``explore_weight``, ``seed``): rank with exploration (see ``HyperRecommender.adapt``)."""
    from .catalogue import excluded_items

    t0 = time.perf_counter()                  # the command's time: reading and checking the data included
    check_file_out(out, [*input_files(data, model), *([exclude_items] if exclude_items else [])])
    ds = load_dataset(data, allow_no_events=True)
    rec = load_model(model)
    check_compatible(rec, ds, allow_rating_mismatch)
    excluded = excluded_items(ds.items, exclude_items, rec.item_map_.kind)
    heads = None
    if explore:
        if not hasattr(rec, "score_std"):
            raise RecsysHyperError(f"{type(rec).__name__} does not explore; HyperRecommender does")
        heads = rec.adapt(ds.interactions, ds.users, item_features=ds.items, allow_rating_mismatch=allow_rating_mismatch,
                          explore=explore, explore_weight=explore_weight, seed=seed)
    recs = rec.recommend(ds.interactions, k=top_k, exclude_seen=not include_seen, users=ds.users,
                         item_features=ds.items, allow_rating_mismatch=allow_rating_mismatch, heads=heads,
                         exclude_items=excluded)
    if score_std:
        recs["score_std"] = capability(rec, "score_std")(ds.interactions, recs, users=ds.users, item_features=ds.items,
                                                          allow_rating_mismatch=allow_rating_mismatch)
    if explain:
        recs = rec.explain(ds.interactions, recs, users=ds.users, item_features=ds.items, top_events=explain,
                           allow_rating_mismatch=allow_rating_mismatch)
    write_parquet(recs, out)
    return (f"recommended {top_k} items to {recs[S.USER_ID].nunique():,} users"
            + (f", exploring ({explore})" if explore else "") + (" with explanations" if explain else "")
            + (f", {len(excluded):,} retired or excluded items left out" if len(excluded) else "")
            + f" in {time.perf_counter() - t0:.1f}s -> {out}")


def onboard(model: str, data: str | os.PathLike, n: int, out: str | os.PathLike, asked: str | os.PathLike | None = None,
            allow_rating_mismatch: bool = False) -> str:
    """The ``n`` items to ask every user of ``data`` about next into ``out``; ``asked``: a Parquet
    file of the (user_id, item_id) questions already put. Returns the summary line."""
    t0 = time.perf_counter()                  # the command's time: reading and checking the data included
    check_file_out(out, [*input_files(data, model), *([asked] if asked else [])])
    asked_frame = read_pairs(asked) if asked else None
    ds = load_dataset(data, allow_no_events=True)
    rec = load_model(model)
    check_compatible(rec, ds, allow_rating_mismatch)
    if asked_frame is not None:
        check_pair_ids(asked_frame, Path(asked).name, ds, rec.item_map_.kind)
    questions = rec.ask(ds.interactions, n=n, users=ds.users, asked=asked_frame, item_features=ds.items,
                        allow_rating_mismatch=allow_rating_mismatch)
    write_parquet(questions, out)
    return (f"chose {n} questions for {questions[S.USER_ID].nunique():,} users in {time.perf_counter() - t0:.1f}s "
            f"-> {out}")


def read_pairs(path: str | os.PathLike) -> pd.DataFrame:
    """The ``user_id, item_id`` rows to predict, checked like the data contract's files."""
    path = Path(path)
    c = Collector()
    table = read_parquet_checked(path, c, required=True)
    if table is not None:
        missing = [col for col in (S.USER_ID, S.ITEM_ID) if col not in table.column_names]
        for col in missing:
            c.add(path.name, col, f"is missing (columns present: {', '.join(table.column_names)})",
                  "PAIRS needs user_id and item_id columns")
        if not missing:
            for col in (S.USER_ID, S.ITEM_ID):
                coerce_id(table.column(col), path.name, col, c)
    c.raise_if_any()
    return table.to_pandas()


def _kind(s: pd.Series) -> str:
    return "int64" if pd.api.types.is_integer_dtype(s) else "string"


def check_pair_ids(pairs: pd.DataFrame, name: str, ds, item_kind: str) -> None:
    """The pairs' ids must have the histories' user id type and the model's item id type."""
    from ..errors import DataValidationError, Problem

    problems = []
    users = ds.users[S.USER_ID] if ds.interactions.empty and ds.users is not None else ds.interactions[S.USER_ID]
    if len(pairs) and len(users) and _kind(pairs[S.USER_ID]) != _kind(users):
        problems.append(Problem(name, S.USER_ID, f"has {_kind(pairs[S.USER_ID])} ids but the histories' user ids "
                                f"are {_kind(users)}", "store user ids with the same type in both files"))
    if len(pairs) and _kind(pairs[S.ITEM_ID]) != item_kind:
        problems.append(Problem(name, S.ITEM_ID, f"has {_kind(pairs[S.ITEM_ID])} ids but the model's item ids are "
                                f"{item_kind}", "store item ids with the type the model was trained on"))
    if problems:
        raise DataValidationError(problems)


def predict(model: str, data: str | os.PathLike, pairs: str | os.PathLike, out: str | os.PathLike,
            allow_rating_mismatch: bool = False, interval: float | None = None) -> str:
    """Predictions for the pairs of ``pairs``, heads from the histories of ``data``; returns the
    summary line. ``interval``: also ``lower``, ``upper`` (a prediction interval at that level)
    and ``std`` per pair."""
    check_file_out(out, [*input_files(data, model), pairs])
    frame = read_pairs(pairs)
    ds = load_dataset(data, allow_no_events=True)
    rec = load_model(model)
    check_compatible(rec, ds, allow_rating_mismatch)
    check_pair_ids(frame, Path(pairs).name, ds, rec.item_map_.kind)
    if interval is not None:
        table = rec.predict_interval(ds.interactions, frame, level=interval, users=ds.users, item_features=ds.items,
                                     allow_rating_mismatch=allow_rating_mismatch)
        pred = table["prediction"].to_numpy()
        extra = {c: pd.array(table[c].to_numpy(), dtype="Float32") for c in ("lower", "upper", "std")}
    else:
        pred = rec.predict(ds.interactions, frame, users=ds.users, item_features=ds.items,
                           allow_rating_mismatch=allow_rating_mismatch)
        extra = {}
    # a pair the model cannot score (an item it has never seen, with no features) is written as a
    # missing value (null), never as NaN
    result = frame.assign(prediction=pd.array(pred.astype(np.float32), dtype="Float32"), **extra)
    write_parquet(result, out)
    n_missing = int(np.isnan(pred).sum())
    return (f"predicted {len(result):,} pairs" + (f" ({n_missing:,} unscoreable: null)" if n_missing else "")
            + f" -> {out}")
