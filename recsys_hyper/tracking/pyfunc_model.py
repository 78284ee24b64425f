"""The MLflow pyfunc of a recsys-hyper model, logged as *models from code*.

MLflow runs this file when the model is loaded; it wraps a saved model directory (the artifact
``model_dir``). ``predict`` takes *grouped* histories, one row per user: ``user_id`` and the
lists ``item_id``, ``rating``, ``timestamp`` (what Spark's ``collect_list`` gives; an empty list
is a user with no history), and returns one row per input row: ``user_id``, ``item_ids`` and
``scores`` (the top ``k``, best first). One row in, one row out, so it also runs as
``mlflow.pyfunc.spark_udf(..., result_type="item_ids array<long>, scores array<float>")``.
Params: ``k`` (default 10), ``exclude_seen`` (default true), ``explain`` (default 0: off; N > 0
adds ``explanations``, one JSON object per recommended item with its N most influential history
events; see ``HyperRecommender.explain``), ``ask`` (default 0: off; N > 0 adds ``questions``, the
N items to ask the user about next; see ``HyperRecommender.ask``), ``interval`` (default 0: off;
a level P in (0, 1) adds ``ratings``, ``lower``, ``upper``: each recommended item's predicted
rating and the interval holding the user's rating with probability P, as ``predict --interval P``
gives it; explicit-rating models only).

The input is checked as the commands check a dataset (``recommender.checks.checked_histories``):
a rating outside the training scale, an item id of another type, a batch with no known item,
lists of different lengths are refused with a message that names what to fix (served: HTTP 400,
``INVALID_PARAMETER_VALUE``, no stack trace).
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class HyperRecommenderPyfunc(PythonModel):
    def load_context(self, context) -> None:
        from recsys_hyper.recommender import HyperRecommender

        self.rec = HyperRecommender.load(context.artifacts["model_dir"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from recsys_hyper.errors import RecsysHyperError
        from recsys_hyper.recommender import recommend_grouped

        try:
            p = checked_params(params)
            return recommend_grouped(self.rec, model_input, k=p["k"], exclude_seen=p["exclude_seen"],
                                     explain=p["explain"] or None, ask=p["ask"] or None,
                                     interval=p["interval"] or None)
        except RecsysHyperError as exc:   # the caller's input: a 400 that says what to fix, no stack trace
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None


#: the params the model takes, their defaults and what each must be
PARAMS = {"k": (10, "a whole number >= 1"), "exclude_seen": (True, "true or false"),
          "explain": (0, "a whole number >= 0"), "ask": (0, "a whole number >= 0"),
          "interval": (0.0, "0 (off) or a level between 0.01 and 0.99")}


def checked_params(params: dict | None) -> dict:
    """The request's params with their defaults, each checked (a null, a fraction where a count is
    wanted, a string where a flag is wanted): what is refused names the param, the value and what
    it must be."""
    import math

    from recsys_hyper.errors import RecsysHyperError

    given = dict(params or {})
    unknown = sorted(set(given) - set(PARAMS))
    if unknown:
        raise RecsysHyperError(f"unknown params {unknown}: this model takes {', '.join(PARAMS)}")
    out = {}
    for name, (default, what) in PARAMS.items():
        value = given.get(name, default)
        ok = value is not None and not (isinstance(value, bool) and name != "exclude_seen")
        if ok and name == "exclude_seen":
            ok = isinstance(value, bool)
        elif ok and name == "interval":
            ok = isinstance(value, (int, float)) and math.isfinite(value) and (value == 0 or 0 < value < 1)
        elif ok:
            ok = isinstance(value, (int, float)) and float(value).is_integer() and value >= (1 if name == "k" else 0)
            value = int(value) if ok else value
        if not ok:
            raise RecsysHyperError(f"params: '{name}' is {value!r}; it must be {what} (leave it out for the "
                                   f"default, {default!r})")
        out[name] = value
    return out


mlflow.models.set_model(HyperRecommenderPyfunc())
