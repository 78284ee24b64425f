"""Generated hostile inputs (hypothesis): for any dataset directory or config file, a command
either succeeds with finite outputs or exits with status 2 and a message; never a traceback, never
NaN, and its inputs are never touched. The generators mix what real exports contain (ids of every
type, nulls, NaN and infinities, huge and negative numbers, dates, strings that are and are not
numbers or times, empty and missing files and columns) with well-formed rows, so that both sides
of the contract are exercised. Examples are derived deterministically (the same ones every run)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_hyper.cli import main

SETTINGS = dict(derandomize=True, deadline=None, suppress_health_check=list(HealthCheck), database=None)
NOW = 1_790_000_000

# -- columns of every kind a hostile export holds


def _ids(draw, n: int) -> pa.Array:
    kind = draw(st.sampled_from(["int", "int", "str", "float", "uint64", "null", "bool", "negative"]))
    pool = draw(st.integers(1, 12))
    values = [draw(st.integers(0, pool)) for _ in range(n)]
    if kind == "int":
        return pa.array(values, pa.int64())
    if kind == "negative":
        return pa.array([-v for v in values], pa.int64())
    if kind == "str":
        return pa.array([f"u{v}" if v % 5 else str(v) for v in values], pa.string())
    if kind == "float":
        return pa.array([v + (0.5 if draw(st.integers(0, 9)) == 0 else 0.0) for v in values], pa.float64())
    if kind == "uint64":
        big = draw(st.booleans())
        return pa.array([v + (2**63 if big else 0) for v in values], pa.uint64())
    if kind == "null":
        return pa.array([None if draw(st.integers(0, 7)) == 0 else v for v in values], pa.int64())
    return pa.array([bool(v % 2) for v in values], pa.bool_())


NUMBERS = st.one_of(st.floats(1, 5), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0.0, -1.0, 1e300, -1e300, 1e-300, float("nan"), float("inf")]))


def _ratings(draw, n: int) -> pa.Array | None:
    kind = draw(st.sampled_from(["good", "good", "hostile", "strings", "absent"]))
    if kind == "absent":
        return None
    if kind == "good":
        return pa.array([float(draw(st.integers(1, 5))) for _ in range(n)], pa.float64())
    if kind == "strings":
        return pa.array([draw(st.sampled_from(["4", "4.5", "five", "", "nan", "1e400"])) for _ in range(n)])
    return pa.array([draw(NUMBERS) for _ in range(n)], pa.float64())


def _times(draw, n: int) -> pa.Array:
    kind = draw(st.sampled_from(["seconds", "seconds", "ms", "iso", "mixed", "date", "float", "hostile"]))
    base = [NOW - draw(st.integers(0, 10**8)) for _ in range(n)]
    if kind == "seconds":
        return pa.array(base, pa.int64())
    if kind == "ms":
        return pa.array([t * 1000 for t in base], pa.int64())
    if kind == "iso":
        return pa.array([pd.Timestamp(t, unit="s").isoformat() for t in base])
    if kind == "mixed":
        return pa.array([str(t) if i % 3 else draw(st.sampled_from(["2021-01-02T03:04:05Z", "yesterday", "9" * 30]))
                         for i, t in enumerate(base)])
    if kind == "date":
        return pa.array([pd.Timestamp(t, unit="s").date() if i % 4 else draw(st.sampled_from(
            [pd.Timestamp("9999-12-31").date(), pd.Timestamp("1900-01-01").date()])) for i, t in enumerate(base)],
            pa.date32())
    if kind == "float":
        return pa.array([t + 0.25 for t in base], pa.float64())
    return pa.array([draw(st.sampled_from([0, -5, 2**62, NOW])) for _ in range(n)], pa.int64())


@st.composite
def datasets(draw):
    """A dataset directory's tables (name -> Arrow table, or bytes for a file that is no Parquet)."""
    n = draw(st.integers(0, 40))
    cols = {"user_id": _ids(draw, n), "item_id": _ids(draw, n), "timestamp": _times(draw, n)}
    rating = _ratings(draw, n)
    if rating is not None:
        cols["rating"] = rating
    drop = draw(st.sampled_from([None, None, None, "user_id", "timestamp"]))
    tables: dict = {"interactions.parquet": pa.table({k: v for k, v in cols.items() if k != drop})}
    if draw(st.booleans()):
        users = sorted({v for v in cols["user_id"].to_pylist() if v is not None}, key=str)
        feature = [draw(NUMBERS) for _ in users]
        tables["users.parquet"] = pa.table({"user_id": pa.array(users, cols["user_id"].type),
                                            "age": pa.array(feature, pa.float64()),
                                            "group": pa.array([draw(st.sampled_from(["a", "b", None]))
                                                               for _ in users])})
    if draw(st.integers(0, 9)) == 0:
        tables["items.parquet"] = b"PAR1 not parquet at all"
    return tables


def _write(root: Path, tables: dict) -> Path:
    root.mkdir(parents=True)
    for name, table in tables.items():
        if isinstance(table, bytes):
            (root / name).write_bytes(table)
        else:
            pq.write_table(table, root / name)
    return root


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _well_formed(n_users: int = 30, n_items: int = 25, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    rows = {(u, int(i)) for u in range(n_users) for i in rng.choice(n_items, 8, replace=False)}
    users, items = zip(*sorted(rows))
    return pa.table({"user_id": pa.array(users, pa.int64()), "item_id": pa.array(items, pa.int64()),
                     "rating": pa.array(rng.integers(1, 6, len(users)).astype(float)),
                     "timestamp": pa.array(NOW - rng.integers(0, 10**7, len(users)), pa.int64())})


@settings(max_examples=120, **SETTINGS)
@given(datasets())
def test_validate_either_accepts_finite_data_or_explains(tables):
    from recsys_hyper.data import load_dataset

    with tempfile.TemporaryDirectory() as tmp:
        data = _write(Path(tmp) / "ds", tables)
        before = _snapshot(data)
        code, err = _run(["data", "validate", str(data), "--out", str(Path(tmp) / "clean")])
        assert code in (0, 2)
        assert _snapshot(data) == before                                     # the input is never touched
        if code == 2:
            assert err.startswith("error: ") and "Traceback" not in err
            assert not (Path(tmp) / "clean").exists()                         # nothing written on failure
            return
        ds = load_dataset(Path(tmp) / "clean")
        inter = ds.interactions
        assert np.isfinite(inter["rating"].to_numpy()).all()
        assert (inter["timestamp"] > 0).all()
        assert not inter[["user_id", "item_id"]].duplicated().any()
        if ds.users is not None:
            for col in ds.user_feature_columns():
                if pd.api.types.is_float_dtype(ds.users[col]):
                    assert not np.isinf(ds.users[col].to_numpy()).any()


def _run(argv) -> tuple[int, str]:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


@st.composite
def trainable(draw):
    """A well-formed dataset with hostile touches that validation may or may not accept: users'
    features with huge, tiny, missing or infinite values, re-rated pairs, a rating column as strings."""
    table = _well_formed(seed=draw(st.integers(0, 1000)))
    finite = st.one_of(st.floats(allow_nan=True, allow_infinity=False),
                       st.sampled_from([0.0, 1e300, -1e300, 1e-300, float("nan"), 30.0]))
    ages = [draw(finite) for _ in range(30)]
    if draw(st.integers(0, 3)) == 0:
        ages[draw(st.integers(0, 29))] = float("inf")                   # refused: a feature must be finite
    users = pa.table({"user_id": pa.array(range(30), pa.int64()), "age": pa.array(ages, pa.float64())})
    if draw(st.booleans()):
        table = pa.concat_tables([table, table.slice(0, 5)])                 # duplicates: the latest is kept
    return {"interactions.parquet": table, "users.parquet": users}


@settings(max_examples=8, **SETTINGS)
@given(trainable())
def test_train_and_recommend_either_give_finite_results_or_explain(tables):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = _write(tmp / "ds", tables)
        (tmp / "c.toml").write_text("[model]\ndim = 4\nhidden = 8\nz_dim = 8\ncontext_dim = 4\nitem_item_rank = 4\n"
                                    "[train]\nepochs = 1\nk_max = 3\nbatch_users = 16\n")
        before = _snapshot(data)
        code, err = _run(["train", "--data", str(data), "--out", str(tmp / "m"), "--config", str(tmp / "c.toml"),
                          "--no-track", "--no-progress"])
        assert _snapshot(data) == before
        if code == 2:
            assert err.startswith("error: ") and "Traceback" not in err
            assert not (tmp / "m").exists()
            return
        assert code == 0
        code, err = _run(["recommend", "--model", str(tmp / "m"), "--data", str(data), "--top-k", "5", "--out",
                          str(tmp / "r.parquet")])
        assert code == 0, err
        recs = pd.read_parquet(tmp / "r.parquet")
        assert len(recs) and np.isfinite(recs["score"].to_numpy()).all()
        pairs = pd.DataFrame({"user_id": [0, 1, 2], "item_id": [0, 1, 2]})
        pairs.to_parquet(tmp / "pairs.parquet")
        code, err = _run(["predict", "--model", str(tmp / "m"), "--data", str(data), "--pairs",
                          str(tmp / "pairs.parquet"), "--out", str(tmp / "p.parquet")])
        assert code == 0, err
        assert np.isfinite(pd.read_parquet(tmp / "p.parquet")["prediction"].to_numpy()).all()


# -- the config loader

VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), NUMBERS, st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)


@st.composite
def configs(draw):
    from recsys_hyper.config import ModelConfig, TrainConfig

    doc: dict = {}
    for section, cls in (("model", ModelConfig), ("train", TrainConfig)):
        kind = draw(st.sampled_from(["table", "table", "table", "absent", "scalar"]))
        if kind == "absent":
            continue
        if kind == "scalar":
            doc[section] = draw(VALUES)
            continue
        names = list(cls.RULES)
        keys = draw(st.lists(st.sampled_from(names + ["unknown_key"]), max_size=4, unique=True))
        table = {}
        for key in keys:
            default = getattr(cls(), key, None) if key != "unknown_key" else None
            table[key] = draw(st.one_of(VALUES, st.just(default)))
        doc[section] = table
    if draw(st.integers(0, 9)) == 0:
        doc["extra"] = {}
    return doc


def _dump(doc: dict, fmt: str) -> str | None:
    if fmt == "json":
        return json.dumps(doc, allow_nan=True)
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump(doc)
    return None


@settings(max_examples=300, **SETTINGS)
@given(configs(), st.sampled_from(["json", "yaml"]))
def test_any_config_file_loads_to_finite_checked_values_or_explains(doc, fmt):
    from recsys_hyper import RecsysHyperError, load_config

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"c.{fmt}"
        path.write_text(_dump(doc, fmt))
        try:
            cfg = load_config(path)
        except RecsysHyperError as exc:
            assert str(exc).startswith(str(path))
            return
    for part in (cfg.model, cfg.train):
        for name, rule in type(part).RULES.items():
            value = getattr(part, name)
            rule.check(type(part).__name__, name, value)                       # what was loaded is valid
            for v in (value if isinstance(value, tuple) else [value]):
                if isinstance(v, float):
                    assert math.isfinite(v)


@settings(max_examples=8, **SETTINGS)
@given(configs())
def test_train_with_any_config_file_runs_or_exits_2_before_any_work(doc):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = _write(tmp / "ds", {"interactions.parquet": _well_formed()})
        (tmp / "c.json").write_text(json.dumps(doc, allow_nan=True))
        from recsys_hyper import RecsysHyperError, load_config

        try:
            load_config(tmp / "c.json")
        except RecsysHyperError:
            code, err = _run(["train", "--data", str(data), "--out", str(tmp / "m"), "--config", str(tmp / "c.json"),
                              "--no-track", "--no-progress"])
            assert code == 2 and err.startswith("error: ") and "Traceback" not in err
            assert not (tmp / "m").exists()
        # a valid config is not trained with here (it may ask for a million epochs): the loader's
        # own test checks what it holds


# -- the scoring path's guard: a row with a NaN or a +inf is found, whatever else the row holds

SPECIALS = [float("nan"), float("inf"), float("-inf"), 3e38, -3e38, 1e30]


@settings(max_examples=200, **SETTINGS)
@given(st.integers(1, 6), st.integers(1, 40),
       st.lists(st.tuples(st.integers(0, 5), st.integers(0, 39), st.sampled_from(SPECIALS)), max_size=12))
def test_non_finite_rows_finds_exactly_the_rows_with_a_nan_or_a_positive_infinity(b, n, specials):
    import torch

    from recsys_hyper.numerics.scores import non_finite_rows

    scores = torch.from_numpy(np.random.default_rng(b * 100 + n).normal(size=(b, n)).astype(np.float32))
    for row, col, value in specials:
        scores[row % b, col % n] = value
    exact = torch.isnan(scores).any(1) | torch.isposinf(scores).any(1)
    assert torch.equal(non_finite_rows(scores), exact)


# -- histories' order: the packed-key sort is the lexsort, for any times (negative, tied, spanning 2^62)


@settings(max_examples=200, **SETTINGS)
@given(st.integers(1, 2_000), st.integers(1, 3_000), st.integers(0, 300),
       st.sampled_from([0, -2**40, 2**62, 1_790_000_000]), st.sampled_from([1, 2, 1_000, 2**61]))
def test_events_are_ordered_by_user_time_and_item_as_the_lexsort_orders_them(n_users, n_items, n, t0, step):
    from recsys_hyper.data.episodes import chronological_order

    rng = np.random.default_rng(n_users * 7 + n)
    u = rng.integers(0, n_users, n)
    i = rng.integers(0, n_items, n)
    t = t0 + rng.integers(-3, 4, n) * step                  # ties, negative times, spans past 63 bits
    expected = np.lexsort((i, t, u))
    assert np.array_equal(chronological_order(u, t, i, n_users, n_items), expected)
    assert np.array_equal(chronological_order(u.copy(), t, i, n_users, n_items, overwrite_u=True), expected)


# -- side features of every pandas dtype a library caller may hand over


@settings(max_examples=40, **SETTINGS)
@given(st.data())
def test_side_features_of_any_pandas_dtype_encode_as_their_plain_values(data):
    """Nullable and categorical dtypes (pd.NA, not NaN, as the missing value) are encoded exactly
    as the same values in plain object / float columns: missing is missing, never an error."""
    from recsys_hyper.numerics.features import FeatureSpec

    n = data.draw(st.integers(1, 12))
    cats = [data.draw(st.sampled_from(["a", "b", "c", None])) for _ in range(n)]
    nums = [data.draw(st.one_of(st.none(), st.integers(-5, 90))) for _ in range(n)]
    flags = [data.draw(st.sampled_from([True, False, None])) for _ in range(n)]
    plain = pd.DataFrame({"user_id": np.arange(n), "cat": pd.Series(cats, dtype=object),
                          "num": [np.nan if v is None else float(v) for v in nums],
                          "flag": pd.Series([None if v is None else str(v) for v in flags], dtype=object)})
    typed = pd.DataFrame({"user_id": np.arange(n),
                          "cat": pd.array(cats, dtype=data.draw(st.sampled_from(["string", "string[pyarrow]",
                                                                                 "category", "str"]))),
                          "num": pd.array(nums, dtype=data.draw(st.sampled_from(["Int64", "Float64", "float64"]))),
                          "flag": pd.array(flags, dtype="boolean")})
    spec = FeatureSpec.fit(plain, "user_id", min_count=1)
    ids = np.array([*data.draw(st.lists(st.integers(0, n + 2), min_size=1, max_size=8))])
    a, b = spec.transform(plain, ids), spec.transform(typed, ids)
    assert a.cat.tolist() == b.cat.tolist() and a.num.tolist() == b.num.tolist()


@settings(max_examples=60, **SETTINGS)
@given(st.data())
def test_a_small_batch_of_categories_encodes_as_the_whole_column_path_does(data):
    """Serving-sized batches look categories up value by value; every batch, of any dtype and mix of
    missing, unknown, numeric, boolean and bytes values, gets the codes of the whole-column path."""
    import recsys_hyper.numerics.features as features

    values = st.one_of(st.sampled_from(["a", "b", "c", "zz", "", "1", "True", "b'a'"]),
                       st.sampled_from([None, np.nan, pd.NA, 1, 1.0, True, b"a", b"c"]))
    n = data.draw(st.integers(1, 14))
    fitted = [data.draw(st.sampled_from(["a", "b", "c", "1", "True", None])) for _ in range(n)]
    served = [data.draw(values) for _ in range(n)]
    dtype = data.draw(st.sampled_from(["object", "str", "category"]))
    frame = pd.DataFrame({"user_id": np.arange(n), "cat": pd.Series(served, dtype=object)})
    if dtype != "object":
        try:
            frame["cat"] = frame["cat"].astype(dtype)
        except (TypeError, ValueError):
            pass                                            # a mix this dtype cannot hold: kept as objects
    spec = features.FeatureSpec.fit(pd.DataFrame({"user_id": np.arange(n), "cat": pd.Series(fitted, dtype=object)}),
                                    "user_id", min_count=1)
    ids = np.array(data.draw(st.lists(st.integers(0, n + 2), min_size=1, max_size=10)))
    small, saved = spec.transform(frame, ids).cat, features.SMALL_BATCH
    try:
        features.SMALL_BATCH = 0
        whole = spec.transform(frame, ids).cat
    finally:
        features.SMALL_BATCH = saved
    assert small.tolist() == whole.tolist()


def test_a_categorical_column_of_bytes_is_encoded_with_the_vocabulary_it_was_fitted_on():
    """A Parquet binary column reads as bytes; fitting reads its values as text, and so must serving
    (each value its own code, as the same column of strings gets), never the unknown code 0."""
    from recsys_hyper.numerics.features import FeatureSpec

    raw = pd.DataFrame({"user_id": np.arange(60), "job": [b"eng", b"art", b"law"] * 20})
    text = raw.assign(job=raw["job"].map(bytes.decode))
    spec = FeatureSpec.fit(raw, "user_id")
    codes = spec.transform(raw, raw["user_id"].to_numpy()).cat
    assert (codes > 0).all()
    assert codes.tolist() == spec.transform(text, text["user_id"].to_numpy()).cat.tolist()


def test_bytes_that_are_not_utf8_text_are_refused_with_the_column_named():
    """Fitting or serving a categorical side feature whose bytes are not UTF-8 text fails with the
    table, the column, how many values and examples, not a decoding traceback."""
    from recsys_hyper.errors import RecsysHyperError
    from recsys_hyper.numerics.features import FeatureSpec

    good = pd.DataFrame({"user_id": np.arange(60), "job": [b"eng", b"art", b"law"] * 20})
    bad = good.assign(job=[b"\xff\xfe" if i % 4 == 0 else b"eng" for i in range(60)])
    with pytest.raises(RecsysHyperError, match=r"users.parquet: column 'job': 15 value\(s\) are bytes that are not UTF-8"):
        FeatureSpec.fit(bad, "user_id")
    spec = FeatureSpec.fit(good, "user_id")
    with pytest.raises(RecsysHyperError, match=r"column 'job': 1 value\(s\).*\\xff\\xfe"):
        spec.transform(bad, np.array([0, 1, 2]))


# -- the nightly's boundary: any landing file is merged clean or quarantined with its reason


@pytest.fixture(scope="module")
def merged_night(tmp_path_factory) -> tuple[Path, Path, str]:
    """A landing folder of two nights and a work folder with the first night merged (no training)."""
    from recsys_hyper.jobs.landing import make_synthetic_landing

    root = tmp_path_factory.mktemp("nightly-boundary")
    first, second = make_synthetic_landing(root / "landing", days=2, preset_name="tiny", seed=3, n_users=60,
                                           n_items=40)
    _night_steps(root / "landing", root / "work", first)
    return root / "landing", root / "work", second


def _night_steps(landing: Path, work: Path, date: str) -> None:
    """The night's validate and merge steps, as run_nightly runs them."""
    from recsys_hyper.config import NightlyConfig
    from recsys_hyper.jobs import nightly
    from recsys_hyper.jobs.state import NightState, work_identity

    cfg = NightlyConfig(landing=landing, work=work, progress=False)
    state = NightState.load(cfg.work, date)
    for step in ("validate", "merge"):
        state.complete(step, **getattr(nightly, f"_{step}")(date, cfg, state, work_identity(cfg.work)))


@st.composite
def landing_exports(draw):
    """A landing file as an export job writes it: well-formed ids and times with ratings on the
    scale, or some of them off it (finite: a typo, another scale), or missing / infinite; or any
    hostile table."""
    mode = draw(st.sampled_from(["on scale", "off scale", "off scale", "not finite", "any"]))
    if mode == "any":
        return draw(datasets())["interactions.parquet"]
    n = draw(st.integers(1, 30))
    odd = {"on scale": st.nothing(), "off scale": st.sampled_from([0.0, -3.0, 5.5, 10.0, 100.0, 1e30, 1e-300, -1e30]),
           "not finite": st.sampled_from([float("nan"), float("inf"), float("-inf")])}[mode]
    ratings = [draw(st.sampled_from([1.0, 2.0, 3.0, 4.0, 5.0])) for _ in range(n)]
    for _ in range(draw(st.integers(1, 3)) if mode != "on scale" else 0):
        ratings[draw(st.integers(0, n - 1))] = draw(odd)
    return pa.table({"user_id": pa.array([draw(st.integers(0, 80)) for _ in range(n)], pa.int64()),
                     "item_id": pa.array([draw(st.integers(0, 50)) for _ in range(n)], pa.int64()),
                     "rating": pa.array(ratings, pa.float64()),
                     "timestamp": pa.array([NOW - draw(st.integers(0, 10**6)) for _ in range(n)], pa.int64())})


@settings(max_examples=60, **SETTINGS)
@given(landing_exports())
def test_a_nights_landing_file_is_merged_clean_or_quarantined_with_its_reason(merged_night, export):
    import shutil

    from recsys_hyper.data import load_dataset
    from recsys_hyper.errors import RecsysHyperError
    from recsys_hyper.jobs import snapshot

    landing_src, work_src, date = merged_night
    with tempfile.TemporaryDirectory() as tmp:
        landing, work = Path(shutil.copytree(landing_src, Path(tmp) / "landing")), Path(tmp) / "work"
        shutil.copytree(work_src, work)
        scale = snapshot.rating_range(work / "snapshot")
        night = landing / "events" / f"date={date}"
        pq.write_table(export, night / "export.parquet")
        sent = (night / "export.parquet").read_bytes()
        try:
            _night_steps(landing, work, date)
        except RecsysHyperError as exc:                              # a clear stop, the snapshot as it was
            assert str(exc) and not (work / "snapshot" / "interactions.parquet" / f"date={date}").exists()
            return
        quarantined = work / "quarantine" / f"date={date}" / "export.parquet"
        if quarantined.exists():                                     # kept as sent, with why and how to fix it
            assert quarantined.read_bytes() == sent and not (night / "export.parquet").exists()
            reason = quarantined.with_name("export.parquet.reason.txt").read_text()
            assert "export.parquet" in reason and "move it back to" in reason
        else:                                                        # merged: left where it was
            assert (night / "export.parquet").read_bytes() == sent
        ds = load_dataset(work / "snapshot")
        ratings = ds.interactions["rating"].to_numpy()
        assert np.isfinite(ratings).all() and scale[0] <= ratings.min() and ratings.max() <= scale[1]
        assert (ds.interactions["timestamp"] > 0).all()
        assert pd.api.types.is_integer_dtype(ds.interactions["user_id"])
        assert pd.api.types.is_integer_dtype(ds.interactions["item_id"])
