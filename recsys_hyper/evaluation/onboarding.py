"""The offline elicitation protocol: how fast does each way of asking a new user questions make
their recommendations good?

For every cold-test user, the first half of their history (chronological) is the *pool* of items
they can answer about and the second half the *test* set. A strategy asks about one item at a
time, up to ``max_questions``; an asked item in the pool is answered with the user's real rating
and joins their history, one outside it counts as asked but unanswered. After every question the
user's head is rebuilt from the answers and measured on the test set: MAE of its ratings
(explicit data) and full-catalogue nDCG@10 (answered items excluded; relevant = test items rated
>= the threshold, every test item for implicit data).

Strategies, side by side on the same users:

* ``random``: an item drawn uniformly from the catalogue;
* ``popularity``: the most-rated training items first;
* ``log-pop-entropy``: ``log(popularity) x entropy of the item's training ratings`` (Rashid et
  al., IUI 2002); on implicit data the entropy is 0 everywhere, so it ranks by popularity;
* ``model``: :meth:`HyperRecommender.ask <recsys_hyper.recommender.hyper.HyperRecommender.ask>`
  as shipped (its default ``uncertainty`` weight, chosen on validation users);
* ``model-uncertainty``: ``ask`` with ``uncertainty=1``: the fall of the head's uncertainty
  where it matters for ranking times the chance of an answer, the full expected-information rule;
* ``chronological``: the user's next event in time (always answered: the k-earliest baseline of
  the cold-start protocol).

The goal this measures: the number of questions a strategy needs to reach the test quality that
``chronological`` reaches with ``reference_questions`` (10) events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ..data.episodes import Episode, Histories, capped_sample
from ..errors import RecsysHyperError
from ..numerics.measure import mean_mae, mean_ndcg
from ..recommender.base import indexed

STRATEGIES = ("random", "popularity", "log-pop-entropy", "model", "model-uncertainty", "chronological")
REPORTED = (1, 3, 5, 10, 20)


@dataclass
class OnboardingResult:
    """``curve``: one row per (strategy, questions) with ``answered`` (mean answers per user),
    ``mae`` and ``ndcg@10``; ``reference``: chronological's quality after ``reference_questions``;
    ``to_reach``: per strategy, the questions needed to reach it (NaN: not within the budget)."""

    curve: pd.DataFrame
    reference: dict
    to_reach: pd.DataFrame
    users: int
    params: dict = field(default_factory=dict)
    seconds: float = 0.0

    def table(self, questions=REPORTED) -> pd.DataFrame:
        """The curve at ``questions``, one row per (strategy, questions)."""
        return self.curve[self.curve["questions"].isin(questions)].reset_index(drop=True)

    def markdown(self, measure: str, questions=REPORTED, digits: int = 4) -> str:
        """One measure as a Markdown table: a row per strategy, a column per number of questions."""
        t = self.table(questions).pivot(index="strategy", columns="questions", values=measure)
        t = t.reindex([s for s in STRATEGIES if s in t.index])
        head = f"| {measure} after N questions | " + " | ".join(str(q) for q in t.columns) + " |"
        rule = "|---|" + "---:|" * len(t.columns)
        body = [f"| {name} | " + " | ".join(f"{v:.{digits}f}" for v in row) + " |" for name, row in t.iterrows()]
        return "\n".join([head, rule, *body])

    def figure(self):
        """nDCG@10, MAE and answers against the number of questions, a line per strategy, the
        reference (chronological after ``reference_questions`` events) dashed."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(15, 4.2))
        axes = fig.subplots(1, 3)
        measures = (("ndcg@10", "nDCG@10 on the test half"), ("mae", "MAE on the test half (lower is better)"),
                    ("answered", "questions answered"))
        for ax, (col, title) in zip(axes, measures):
            for strategy, g in self.curve.groupby("strategy", sort=False):
                ax.plot(g["questions"], g[col], "-" if strategy.startswith("model") else "--", label=strategy,
                        linewidth=2 if strategy == "model" else 1.2)
            if col in self.reference:
                ax.axhline(self.reference[col], color="grey", linestyle=":", linewidth=1,
                           label=f"chronological, {self.reference['questions']} events")
            ax.set_xlabel("questions asked")
            ax.set_title(title)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"Onboarding: quality vs questions asked ({self.users} cold users)")
        fig.tight_layout()
        return fig


def split_pools(h: Histories) -> tuple[Histories, Histories]:
    """Each user's first half (chronological; the pool they can answer from) and second half
    (the test set); users with fewer than 2 events are dropped."""
    h = h.select(np.flatnonzero(h.lengths >= 2))
    pos = h.positions_in_user()
    half = np.repeat(h.lengths // 2, h.lengths)
    return h.mask(pos < half), h.mask(pos >= half)


def run_onboarding(model, train: Histories, test_users: Histories, users: pd.DataFrame | None = None,
                   strategies=STRATEGIES, max_questions: int = 20, reference_questions: int = 10,
                   threshold: float = 4.0, cutoff: int = 10, seed: int = 0, progress: bool = True,
                   ask_kw: dict | None = None, max_users: int = 2000) -> OnboardingResult:
    """Run the protocol for a fitted :class:`~recsys_hyper.recommender.hyper.HyperRecommender`.

    ``train``: the training users' histories (the popularity and entropy strategies' statistics),
    ``test_users``: the cold-test users' whole histories, both in the model's item indices;
    ``users``: user features; ``ask_kw``: options of the ``model`` strategy's ``ask``;
    ``max_users``: at most this many cold users take part (a seeded sample), so the protocol's
    cost and memory (users x catalogue) stay bounded on large data."""
    from ..progress import progress as progress_bar

    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise RecsysHyperError(f"unknown onboarding strategy(ies) {unknown}; choose from {', '.join(STRATEGIES)}")
    if max_questions < 1:
        raise RecsysHyperError(f"max_questions must be >= 1, got {max_questions}")
    t0 = time.perf_counter()
    ask_kw = dict(ask_kw or {})
    test_users = test_users.select(capped_sample(len(test_users), max_users, [seed, 4099]))
    pool, test = split_pools(test_users)
    if len(pool) == 0:
        raise RecsysHyperError("no test user has 2 or more events: the protocol needs a pool and a test set")
    N, B = len(model.item_map_), len(pool)
    answer = torch.full((B, N), float("nan"))                                # the rating a user would give
    answer[torch.from_numpy(pool.owners()), torch.from_numpy(pool.items)] = torch.from_numpy(pool.ratings)
    fixed = _fixed_orders(train, N, model.implicit_)
    rng = np.random.default_rng(seed)
    rows, bar = [], progress_bar(total=len(strategies) * max_questions, desc="onboarding", unit="question",
                                 enabled=progress)
    for strategy in strategies:
        asked = np.full((B, max_questions), -1, np.int64)
        for q in range(max_questions):
            if strategy == "chronological":
                take = q < pool.lengths
                asked[take, q] = pool.items[pool.indptr[:-1][take] + q]
            else:
                asked[:, q] = _next_question(strategy, model, pool, answer, asked[:, :q], fixed, rng, users, ask_kw)
            support = _answers(pool, answer, asked[:, :q + 1])
            mae, ndcg = _quality(model, support, test, users, threshold, cutoff)
            rows.append({"strategy": strategy, "questions": q + 1, "answered": float(support.lengths.mean()),
                         "mae": mae, "ndcg@10": ndcg})
            bar.update(1)
    bar.close()
    curve = pd.DataFrame(rows)
    ref = curve[(curve["strategy"] == "chronological") & (curve["questions"] == reference_questions)]
    if ref.empty:                      # chronological not run: measure the reference on its own
        mae, ndcg = _quality(model, _prefix(pool, reference_questions), test, users, threshold, cutoff)
    else:
        mae, ndcg = float(ref["mae"].iloc[0]), float(ref["ndcg@10"].iloc[0])
    reference = {"questions": reference_questions, "mae": mae, "ndcg@10": ndcg}
    reach = []
    for strategy, part in curve.groupby("strategy", sort=False):
        ok_mae = part.loc[part["mae"] <= mae, "questions"]
        ok_ndcg = part.loc[part["ndcg@10"] >= ndcg, "questions"]
        reach.append({"strategy": strategy, "questions_to_mae": float(ok_mae.min()) if len(ok_mae) else np.nan,
                      "questions_to_ndcg@10": float(ok_ndcg.min()) if len(ok_ndcg) else np.nan})
    params = {**ask_kw, "users": B, "max_users": max_users, "max_questions": max_questions, "reference_questions": reference_questions,
              "threshold": threshold, "cutoff": cutoff, "seed": seed}
    return OnboardingResult(curve, reference, pd.DataFrame(reach), B, params, time.perf_counter() - t0)


def _fixed_orders(train: Histories, n_items: int, implicit: bool) -> dict[str, np.ndarray]:
    """Per-item scores of the strategies that ask everyone the same things."""
    counts = np.bincount(train.items, minlength=n_items).astype(np.float64)
    entropy = np.zeros(n_items)
    if not implicit:
        levels = np.unique(train.ratings)
        per_level = np.stack([np.bincount(train.items[train.ratings == r], minlength=n_items) for r in levels], 1)
        p = per_level / np.maximum(per_level.sum(1, keepdims=True), 1)
        entropy = -(p * np.log(np.where(p > 0, p, 1))).sum(1)
    log_pop = np.log1p(counts)
    # ties (implicit data: entropy 0) fall back to popularity
    return {"popularity": counts, "log-pop-entropy": log_pop * entropy + 1e-9 * counts}


def _next_question(strategy, model, pool, answer, asked, fixed, rng, users, ask_kw) -> np.ndarray:
    """One more item per user (catalogue rows), never one already asked."""
    B, N = answer.shape
    taken = torch.zeros(B, N, dtype=torch.bool)
    done = asked >= 0
    taken[torch.from_numpy(np.nonzero(done)[0]), torch.from_numpy(asked[done])] = True
    if strategy in fixed:
        scores = torch.from_numpy(fixed[strategy]).expand(B, N).clone()
    elif strategy == "random":
        scores = torch.from_numpy(rng.random((B, N)))
    else:
        weight = {"uncertainty": 1.0} if strategy == "model-uncertainty" else ask_kw
        items, _ = indexed(model, users).ask(_answers(pool, answer, asked), 1,
                                             asked=_rows_as_histories(pool.user_ids, asked), **weight)
        return items[:, 0]
    return scores.masked_fill(taken, float("-inf")).argmax(1).numpy()


def _rows_as_histories(user_ids: np.ndarray, items: np.ndarray) -> Histories:
    """(B, Q) item rows (-1: none) -> histories of those items, one row per user."""
    keep = items >= 0
    lengths = keep.sum(1)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    flat = items[keep]
    return Histories(user_ids, indptr, flat, np.ones(len(flat), np.float32), np.zeros(len(flat), np.int64))


def _answers(pool: Histories, answer: torch.Tensor, asked: np.ndarray) -> Histories:
    """The answered questions of every user (asked items in their pool), in the order asked."""
    B, Q = asked.shape
    ratings = np.full((B, Q), np.nan, np.float32)
    done = asked >= 0
    b, q = np.nonzero(done)
    ratings[b, q] = answer[torch.from_numpy(b), torch.from_numpy(asked[b, q])].numpy()
    keep = ~np.isnan(ratings)
    lengths = keep.sum(1)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    order = np.broadcast_to(np.arange(Q), (B, Q))
    return Histories(pool.user_ids, indptr, asked[keep], ratings[keep], order[keep].astype(np.int64))


def _prefix(h: Histories, k: int) -> Histories:
    return h.mask(h.positions_in_user() < k)


def _quality(model, support: Histories, test: Histories, users, threshold: float, cutoff: int) -> tuple[float, float]:
    """Test MAE (explicit data; NaN for implicit) and full-catalogue nDCG@``cutoff``."""
    view = indexed(model, users)
    episode = [Episode(0, np.arange(len(support)), support, test)]
    mae = float("nan") if model.implicit_ else mean_mae(view, episode)
    return mae, mean_ndcg(view, episode, threshold=threshold, cutoff=cutoff)
