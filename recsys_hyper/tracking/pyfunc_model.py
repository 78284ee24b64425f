"""The MLflow pyfunc of a recsys-hyper model, logged as *models from code*.

MLflow runs this file when the model is loaded; it wraps a saved model directory (the artifact
``model_dir``). ``predict`` takes a DataFrame of histories (the data contract's interaction
columns) and returns each user's top-``k`` recommendations: ``user_id, item_id, score, rank``.
Params: ``k`` (default 10), ``exclude_seen`` (default true).
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class HyperRecommenderPyfunc(PythonModel):
    def load_context(self, context) -> None:
        from recsys_hyper.model import HyperRecommender

        self.rec = HyperRecommender.load(context.artifacts["model_dir"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        params = params or {}
        return self.rec.recommend(model_input, k=int(params.get("k", 10)),
                                  exclude_seen=bool(params.get("exclude_seen", True)))


mlflow.models.set_model(HyperRecommenderPyfunc())
