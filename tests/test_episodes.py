"""Id maps, per-user histories and support / query episodes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys_hyper.data import EpisodeSampler, Histories, IdMap, UnknownIdError, chronological_split, load_dataset


def _frame():
    # user 10: 6 events, two of them at the same time (tie broken by item id); user 20: 2 events
    return pd.DataFrame({
        "user_id": [10, 10, 10, 10, 10, 10, 20, 20],
        "item_id": [5, 3, 9, 1, 7, 2, 3, 1],
        "rating": np.arange(8, dtype=np.float32),
        "timestamp": [50, 10, 30, 20, 30, 60, 2, 1],
    })


# -- IdMap

def test_idmap_round_trip_and_unknown_handling(tmp_path):
    m = IdMap.from_values([30, 10, 20, 10], name="item")
    assert m.values.tolist() == [10, 20, 30] and m.kind == "int64"
    assert m.index([20, 30, 99], unknown="mark").tolist() == [1, 2, -1]
    with pytest.raises(UnknownIdError, match=r"1 items are unknown to this model \(e.g. \[99\]\)"):
        m.index([20, 99])
    with pytest.raises(TypeError, match="int64 in this map but"):
        m.index(["10"])
    assert m.ids([2, 0]).tolist() == [30, 10]
    m.save(tmp_path / "items.parquet")
    assert IdMap.load(tmp_path / "items.parquet") == m
    s = IdMap.from_values(["b", "a"])
    s.save(tmp_path / "s.parquet")
    assert IdMap.load(tmp_path / "s.parquet").index(["a", "b"]).tolist() == [0, 1]


def test_idmap_rejects_duplicates():
    with pytest.raises(ValueError, match="must be unique"):
        IdMap([1, 1])


# -- Histories

def test_histories_are_chronological_with_ties_by_item_id():
    items = IdMap.from_values(_frame()["item_id"])
    h, n_unknown = Histories.from_interactions(_frame(), items)
    assert n_unknown == 0 and h.user_ids.tolist() == [10, 20]
    got = items.ids(h.user(0)[0]).tolist()
    assert got == [3, 1, 7, 9, 5, 2]  # times 10, 20, 30 (item 7 before 9), 30, 50, 60
    assert items.ids(h.user(1)[0]).tolist() == [1, 3]
    assert np.all(np.diff(h.user(0)[2]) >= 0)


def test_histories_count_unknown_items_and_keep_requested_users():
    items = IdMap.from_values([1, 2, 3])
    h, n_unknown = Histories.from_interactions(_frame(), items, user_ids=[20, 99, 10])
    assert n_unknown == 3  # items 5, 9, 7 of user 10
    assert h.user_ids.tolist() == [20, 99, 10] and h.lengths.tolist() == [2, 0, 3]


# -- episodes

def test_chronological_split_support_is_the_k_earliest(tiny_dir):
    ds = load_dataset(tiny_dir)
    items = IdMap.from_values(ds.interactions["item_id"])
    h, _ = Histories.from_interactions(ds.interactions, items)
    for k in (0, 1, 3, 5):
        support, query = chronological_split(h, k, min_query=10)
        assert len(support) == len(query) == int((h.lengths >= k + 10).sum())
        assert (support.lengths == k).all() and (query.lengths >= 10).all()
        for u in range(0, len(support), 17):
            s_items, _, s_t = support.user(u)
            q_items, _, q_t = query.user(u)
            assert not set(s_items) & set(q_items)                  # disjoint
            if k:
                assert s_t.max() <= q_t.min()                        # support precedes query
            full = h.user(int(np.flatnonzero(h.user_ids == support.user_ids[u])[0]))[0]
            np.testing.assert_array_equal(np.concatenate([s_items, q_items]), full)


def test_sampler_prefix_augmentation_stays_in_the_early_window(tiny_dir):
    ds = load_dataset(tiny_dir)
    items = IdMap.from_values(ds.interactions["item_id"])
    h, _ = Histories.from_interactions(ds.interactions, items)
    sampler = EpisodeSampler(k_max=10, strategy="prefix", augment_prob=1.0, window=2.0)
    support, query = sampler.sample(h, np.random.default_rng(0), k=4)
    pos = {}
    for u in range(len(h)):
        it = h.user(u)[0]
        pos[h.user_ids[u]] = {int(i): p for p, i in enumerate(it)}
    non_prefix = 0
    for u in range(len(support)):
        where = sorted(pos[support.user_ids[u]][int(i)] for i in support.user(u)[0])
        assert len(where) == 4 and max(where) < 8                       # inside the earliest 2k events
        non_prefix += where != [0, 1, 2, 3]
        assert len(query.user(u)[0]) == h.lengths[h.user_ids == support.user_ids[u]][0] - 4
    assert non_prefix > len(support) // 2                               # augmentation really varies


def test_sampler_draws_every_k_and_is_deterministic(tiny_dir):
    ds = load_dataset(tiny_dir)
    h, _ = Histories.from_interactions(ds.interactions, IdMap.from_values(ds.interactions["item_id"]))
    sampler = EpisodeSampler(k_max=5, max_query=7)
    s1, q1 = sampler.sample(h, np.random.default_rng(3))
    s2, q2 = sampler.sample(h, np.random.default_rng(3))
    np.testing.assert_array_equal(s1.items, s2.items)
    np.testing.assert_array_equal(q1.items, q2.items)
    assert set(s1.lengths.tolist()) == set(range(6))
    assert q1.lengths.max() == 7 and q1.lengths.min() >= 1


def test_sampler_random_strategy_ignores_time(tiny_dir):
    ds = load_dataset(tiny_dir)
    h, _ = Histories.from_interactions(ds.interactions, IdMap.from_values(ds.interactions["item_id"]))
    long = h.select(np.flatnonzero(h.lengths >= 30))
    support, _ = EpisodeSampler(k_max=5, strategy="random").sample(long, np.random.default_rng(0), k=5)
    late = 0
    for u in range(len(support)):
        times = long.user(u)[2]
        late += support.user(u)[2].max() > np.sort(times)[15]
    assert late > len(support) // 2


@pytest.mark.parametrize("kwargs, message", [
    ({"k_max": -1}, "k_max"), ({"strategy": "later"}, "strategy"), ({"augment_prob": 2.0}, "augment_prob"),
    ({"window": 0.5}, "window"), ({"min_query": 0}, "min_query"),
])
def test_sampler_rejects_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EpisodeSampler(**kwargs)
