"""Grouped histories in, one row per user out: the shape of the MLflow pyfunc and of row-wise
Spark UDFs (``mlflow.pyfunc.spark_udf``), where each input row is a user with the lists of their
events (what Spark's ``collect_list`` gives)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ..data import schema as S
from ..data.frames import explode_histories
from ..errors import RecsysHyperError, check_count
from .base import Recommender, capability


def recommend_grouped(model: Recommender, grouped: pd.DataFrame, k: int = 10, exclude_seen: bool = True,
                      explain: int | None = None, ask: int | None = None,
                      interval: float | None = None) -> pd.DataFrame:
    """Grouped histories in (one row per user: ``user_id`` and the lists ``item_id``, ``rating``,
    ``timestamp``), one row per input row out: ``user_id``, ``item_ids``, ``scores`` (top ``k``,
    best first). ``explain`` (events per item): also ``explanations``, one JSON object per
    recommended item (``score_prior``, ``score_features``, ``score_history``, ``because``; see
    :meth:`~recsys_hyper.recommender.HyperRecommender.explain`); ``ask`` (questions per user): also
    ``questions``, the items to ask about next (see :meth:`~recsys_hyper.recommender.HyperRecommender.ask`);
    ``interval`` (a level, e.g. 0.9): also ``ratings``, ``lower`` and ``upper``, each recommended
    item's predicted rating and its prediction interval at that level (see
    :meth:`~recsys_hyper.recommender.HyperRecommender.predict_interval`; explicit ratings only).
    They need a model that explains, asks and gives intervals (the hypernetwork)."""
    check_count(k, "k", "recommend")
    users = pd.DataFrame({S.USER_ID: _user_ids(grouped)})
    if len(users) == 0:                           # an empty batch (a Spark partition with no user)
        columns = ["item_ids", "scores"] + ["explanations"] * bool(explain) + ["ratings", "lower", "upper"] * bool(
            interval) + ["questions"] * bool(ask)
        return pd.DataFrame({S.USER_ID: users[S.USER_ID].to_numpy(), **{col: [] for col in columns}})
    twice = users[S.USER_ID].duplicated(keep=False).to_numpy()
    if twice.any():
        repeated = pd.unique(users[S.USER_ID].to_numpy()[twice])
        raise RecsysHyperError(f"grouped histories: {len(repeated)} user ids are in more than one row (e.g. "
                               f"{repeated[:5].tolist()}); each row holds all of one user's events: group them by "
                               f"user first (Spark: groupBy('user_id').agg(collect_list(...)))")
    history = explode_histories(grouped.assign(**{S.USER_ID: users[S.USER_ID].to_numpy()}))
    recs = model.recommend(history, k=k, exclude_seen=exclude_seen, users=users, user_ids=users[S.USER_ID].to_numpy())
    agg = {"item_ids": (S.ITEM_ID, list), "scores": ("score", list)}
    if explain:
        recs = capability(model, "explain")(history, recs, users=users, top_events=explain)
        recs["explanation"] = [json.dumps({"score_prior": float(p), "score_features": float(f),
                                           "score_history": float(h),
                                           "because": [{k_: (v.item() if hasattr(v, "item") else v)
                                                        for k_, v in e.items()} for e in because]})
                               for p, f, h, because in zip(recs["score_prior"], recs["score_features"],
                                                           recs["score_history"], recs["because"])]
        agg["explanations"] = ("explanation", list)
    if interval:
        rated = capability(model, "predict_interval")(history, recs[[S.USER_ID, S.ITEM_ID]], level=interval,
                                                       users=users)
        recs = recs.assign(**{col: rated[src].to_numpy() for col, src in (("_rating", "prediction"),
                                                                          ("_lower", "lower"), ("_upper", "upper"))})
        agg.update({"ratings": ("_rating", list), "lower": ("_lower", list), "upper": ("_upper", list)})
    aligned = recs.groupby(S.USER_ID, sort=False).agg(**agg).reindex(users[S.USER_ID])
    out = pd.DataFrame({S.USER_ID: users[S.USER_ID].to_numpy(),
                        **{col: [v if isinstance(v, list) else [] for v in aligned[col]] for col in agg}})
    if ask:
        questions = capability(model, "ask")(history, n=ask, users=users, user_ids=users[S.USER_ID].to_numpy())
        lists = questions.groupby(S.USER_ID, sort=False)[S.ITEM_ID].agg(list).reindex(users[S.USER_ID])
        out["questions"] = [v if isinstance(v, list) else [] for v in lists]
    return out


def _user_ids(grouped: pd.DataFrame):
    """The rows' user ids as the data contract types them: whole-number floats (what JSON and a
    column with gaps turn integers into) as int64; anything else that is no id is refused."""
    ids = grouped[S.USER_ID].to_numpy() if S.USER_ID in grouped else None
    if ids is None:
        raise RecsysHyperError(f"grouped histories: no user_id column (columns present: {list(grouped.columns)})")
    if ids.dtype.kind == "f":
        if not (np.isfinite(ids).all() and (ids == np.floor(ids)).all()):
            bad = ids[~(np.isfinite(ids) & (ids == np.floor(ids)))]
            raise RecsysHyperError(f"grouped histories: {len(bad)} user ids are not whole numbers (e.g. "
                                   f"{bad[:5].tolist()}); user ids must be integers or strings")
        if (np.abs(ids) > 2**53).any():
            raise RecsysHyperError("grouped histories: user ids beyond 2^53 arrived as floating-point numbers, "
                                   "which cannot hold them exactly; send them as integers or strings")
        return ids.astype(np.int64)
    if ids.dtype.kind in "iu":
        return ids.astype(np.int64)
    if ids.dtype.kind in "OUT":
        bad = [v for v in ids if not isinstance(v, (str, int, np.integer)) or isinstance(v, (bool, np.bool_))]
        if bad:
            raise RecsysHyperError(f"grouped histories: {len(bad)} user ids are neither integers nor strings (e.g. "
                                   f"{bad[:3]!r}); user ids must be integers or strings")
        kinds = {isinstance(v, str) for v in ids}
        if kinds == {False}:
            return np.asarray([int(v) for v in ids], dtype=np.int64)
        if len(kinds) > 1:
            raise RecsysHyperError("grouped histories: user ids mix integers and strings; send one type")
        return ids
    raise RecsysHyperError(f"grouped histories: user ids of type {ids.dtype} are neither integers nor strings; "
                           f"user ids must be integers or strings")
