"""``pipeline nightly --engine spark`` gives the one-machine night's answers: the same snapshot
rows, split, gate decisions and recommendations (to 1e-4), on the embedded default landing and
on a 20,000-user one made hostile: a bad file is quarantined with the same reason, forgotten
users' events are refused by the Spark merge too, and retired items are never recommended.
(pyspark comes with the [spark] extra, which make and CI install; Java 17 is needed.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyspark", reason="the [spark] extra is not installed (make and CI install it)")

from recsys_hyper import Config, ModelConfig, TrainConfig  # noqa: E402
from recsys_hyper.data import load_dataset  # noqa: E402
from recsys_hyper.jobs.nightly import NightlyConfig, run_nightly  # noqa: E402

#: a small network without the closed-form searches: what is compared is the data each step is given
FAST = Config(model=ModelConfig(dim=8, hidden=16, z_dim=16),
              train=TrainConfig(epochs=2, k_max=5, patience=2, max_val_users=300, calibrate=False,
                                mf_special_case=False, item_item_weights=(0.0,), crossfit_max_users=2000))
DATES = ["2026-11-21", "2026-11-22"]
#: what a step's state records that is not an answer (times, memory, paths, run ids)
NOT_ANSWERS = ("at", "seconds", "peak_rss_mib", "path", "run_id", "model_dir", "valid_files", "seen",
               "users_per_second", "evaluation")


def _cfg(landing: Path, work: Path, engine: str, **kw) -> NightlyConfig:
    return NightlyConfig(landing=landing, work=work, model_config=FAST, eval_methods=("popularity", "hyper"),
                         eval_shots=(0, 1, 3), gate_shots=(0, 1, 3), top_k=10, progress=False, engine=engine,
                         spark_master="local[2]", registered_model=f"night-{engine}", **kw)


def _state(work: Path, date: str) -> dict:
    state = json.loads((work / "state" / f"date={date}.json").read_text())
    done = state.get("done", state)
    return {step: {k: v for k, v in out.items() if k not in NOT_ANSWERS and not k.endswith("_version")}
            for step, out in done.items() if isinstance(out, dict) and not step.startswith("_")}


def _recommendations(work: Path, date: str) -> pd.DataFrame:
    recs = pd.read_parquet(work / "scores" / "recommendations" / f"date={date}")
    return recs.sort_values(["user_id", "rank"]).reset_index(drop=True)


def _both_engines(landing: Path, root: Path, between=None, **kw) -> tuple[Path, Path]:
    """Both nights on each engine, each engine on its own copy of ``landing`` (a night moves its
    bad files to its quarantine); ``between(work)`` runs after the first night."""
    works = {}
    for engine in ("local", "spark"):
        works[engine] = root / f"work-{engine}"
        cfg = _cfg(Path(shutil.copytree(landing, root / f"landing-{engine}")), works[engine], engine, **kw)
        for date in DATES:
            run_nightly(date, cfg)
            if between is not None and date == DATES[0]:
                between(works[engine])
    return works["local"], works["spark"]


def _assert_same_answers(local: Path, spark: Path) -> None:
    ours, theirs = load_dataset(local / "snapshot"), load_dataset(spark / "snapshot")
    pd.testing.assert_frame_equal(ours.interactions, theirs.interactions)           # row for row, in order
    for date in DATES:
        pd.testing.assert_frame_equal(pd.read_parquet(local / "splits" / f"date={date}.parquet"),
                                      pd.read_parquet(spark / "splits" / f"date={date}.parquet"))
        a, b = _state(local, date), _state(spark, date)
        for step in ("validate", "merge", "split", "train", "evaluate", "gate", "cohort"):
            assert a[step] == b[step], (date, step)
        quarantined = [sorted(p.read_text().replace(f"landing-{engine}", "landing")   # each engine's landing copy
                              for p in (w / "quarantine").rglob("*.reason.txt"))
                       for engine, w in (("local", local), ("spark", spark))]
        assert quarantined[0] == quarantined[1]
        ra, rb = _recommendations(local, date), _recommendations(spark, date)
        assert len(ra) and len(ra) == len(rb)
        pd.testing.assert_frame_equal(ra[["user_id", "item_id", "rank"]], rb[["user_id", "item_id", "rank"]])
        np.testing.assert_allclose(ra["score"], rb["score"], atol=1e-4)
        cohort = [pd.read_parquet(w / "cohorts" / f"date={date}" / "recommendations.parquet") for w in (local, spark)]
        pd.testing.assert_frame_equal(*cohort)


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


def test_the_default_landing_gives_the_same_answers_on_spark(store):
    from recsys_hyper.jobs.landing import make_synthetic_landing

    landing = store / "landing"
    make_synthetic_landing(landing, days=2, seed=0)          # `make run`'s landing (the default preset), two nights
    local, spark = _both_engines(landing, store)
    _assert_same_answers(local, spark)
    files = sorted((spark / "snapshot" / "interactions.parquet").glob("date=*/part-*.parquet"))
    assert files and all(f.name.startswith("part-0000") for f in files)        # written by Spark, in parts


def test_a_hostile_20000_user_landing_gives_the_same_answers_and_errors_on_spark(store, monkeypatch):
    """20,000 users, with duplicates across files tied on time, events delivered again (some
    re-rated at the same time, some older), a file with ratings off the scale, users forgotten and
    the two most popular items retired between the nights."""
    from recsys_hyper.cli import main
    from recsys_hyper.jobs.landing import make_synthetic_landing

    from .test_lifecycle import FORGET, _files_holding

    landing = store / "landing"
    make_synthetic_landing(landing, days=2, preset_name="tiny", seed=3, n_users=20_000, n_items=500)
    first, second = (sorted((landing / "events" / f"date={d}").rglob("*.parquet")) for d in DATES)
    night1 = pd.concat(map(pd.read_parquet, first), ignore_index=True)
    night1.head(30).assign(rating=lambda f: 6.0 - f["rating"]).to_parquet(first[0].with_name("zz-rerated.parquet"))
    again = pd.concat([night1.iloc[100:140],                                           # held: the same events
                       night1.iloc[140:150].assign(rating=lambda f: 6.0 - f["rating"]),   # new: re-rated, same time
                       night1.iloc[150:155].assign(timestamp=lambda f: f["timestamp"] - 10)])  # held: older
    again.to_parquet(second[0].with_name("zz-again.parquet"))
    night1.head(5).assign(rating=9.0).to_parquet(second[0].with_name("bad-scale.parquet"))
    both = sorted(set(night1["user_id"]) & set(pd.concat(map(pd.read_parquet, second))["user_id"]))[:2]
    renamed = {old: FORGET + n for n, old in enumerate(both)}
    for f in [*(landing / "events").rglob("*.parquet"), landing / "users.parquet"]:
        frame = pd.read_parquet(f)
        frame.assign(user_id=frame["user_id"].replace(renamed)).to_parquet(f, index=False)
    ids = sorted(renamed.values())
    erase = store / "erase.txt"
    erase.write_text("\n".join(map(str, ids)) + "\n")
    monkeypatch.chdir(store)
    popular = night1["item_id"].value_counts().index[:2]

    def forget_and_retire(work: Path) -> None:
        assert main(["pipeline", "forget", "--work", str(work), "--users", str(erase)]) == 0
        catalogue_file = work.parent / f"landing-{work.name.split('-')[1]}" / "items.parquet"
        catalogue = pd.read_parquet(catalogue_file)
        catalogue.assign(retired=catalogue["item_id"].isin(popular)).to_parquet(catalogue_file)

    local, spark = _both_engines(landing, store, between=forget_and_retire, first_max_steps=40, warm_max_steps=20,
                                 max_eval_users=500)
    _assert_same_answers(local, spark)
    assert not _recommendations(spark, DATES[1])["item_id"].isin(popular).any()      # retired: never recommended
    assert _recommendations(spark, DATES[0])["item_id"].isin(popular).any()
    merged = _state(spark, DATES[1])["merge"]
    assert merged["repeated_events"] >= 45 and merged["forgotten_events"] > 0
    assert _state(spark, DATES[0])["merge"]["duplicates_dropped"] == 30
    assert "bad-scale.parquet" in str(_state(spark, DATES[1])["validate"]["quarantined"])
    assert _files_holding(spark, ids) == []                   # no byte of a forgotten id in the Spark night's work


def test_training_across_spark_tasks_is_one_group_of_processes_and_tracked_as_on_one_machine(store):
    """``--train-processes 2``: the challenger is meta-trained by two Spark tasks (TorchDistributor,
    DDP), warm-started from the champion on the second night, saved, tracked and gated as on one
    machine, and it learns as well as one process on the same users."""
    import mlflow

    from recsys_hyper.jobs.landing import make_synthetic_landing
    from recsys_hyper.recommender import HyperRecommender

    landing = store / "landing"
    make_synthetic_landing(landing, days=2, preset_name="tiny", seed=5, n_users=600, n_items=200)
    cfg = _cfg(landing, store / "work", "spark", train_processes=2, max_eval_users=200)

    def trained(date: str) -> dict:
        assert run_nightly(date, cfg).promoted is not None
        return json.loads((cfg.work / "state" / f"date={date}.json").read_text())["done"]["train"]

    first = trained(DATES[0])
    model = HyperRecommender.load(first["model_dir"])
    client = mlflow.MlflowClient()
    run = client.get_run(client.get_model_version(cfg.registered_model, first["version"]).run_id)
    assert first["processes"] == 2 and run.data.tags["processes"] == "2" and not first["warm_started"]
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == len(model.training_.history)
    split = pd.read_parquet(cfg.work / "splits" / f"date={DATES[0]}.parquet").set_index("user_id")["split"]
    ds = load_dataset(cfg.work / "snapshot")                            # the first night's snapshot
    ds = type(ds)(ds.interactions[ds.interactions["user_id"].map(split).ne("test")].reset_index(drop=True),
                  ds.users, ds.items, implicit=ds.implicit, source=ds.source)
    one = HyperRecommender(FAST).fit(ds, split.index[split == "validation"], progress=False)
    assert model.n_val_users_ == one.n_val_users_ and model.n_train_users_ == one.n_train_users_
    ours, theirs = (m.training_.history[m.training_.best_epoch] for m in (model, one))
    assert abs(ours["val_mae"] - theirs["val_mae"]) < 0.03, (ours["val_mae"], theirs["val_mae"])
    from recsys_hyper.errors import RecsysHyperError
    from recsys_hyper.jobs import spark_night

    with pytest.raises(RecsysHyperError, match=f"^{cfg.work / 'snapshot'}: fitting HyperRecommender diverged"):
        spark_night.fit_on_executors(spark_night.session(cfg), ds, store / "hot", FAST.replace(lr=900.0),
                                     split.index[split == "validation"].to_numpy(), None, 2, progress=False)
    assert not [f for f in store.glob(".hot.*") if not f.name.endswith(".checkpoints")]   # data, errors removed
    second = trained(DATES[1])
    assert second["processes"] == 2 and second["warm_started"]
    assert _recommendations(cfg.work, DATES[1])["user_id"].nunique() == len(load_dataset(cfg.work / "snapshot").user_ids())


def test_training_processes_need_the_spark_engine(tmp_path):
    from recsys_hyper.errors import RecsysHyperError

    with pytest.raises(RecsysHyperError, match="--train-processes 2 .* needs --engine spark"):
        _cfg(tmp_path, tmp_path / "work", "local", train_processes=2)
