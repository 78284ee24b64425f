# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Cold-start analysis
#
# How fast does a new user's recommendation quality grow with the number of known interactions
# k, for which users, and is the hypernetwork worth it against the baselines? Everything here is
# read from one cold-start evaluation run in MLflow (`recsys-hyper evaluate`, or the nightly
# pipeline's last step): its results, its per-user metrics, the heads the hypernetwork emitted.

# %% tags=["parameters"]
tracking_uri = None          # default: $MLFLOW_TRACKING_URI, else the nearest mlflow.db
experiment = None            # default: every experiment
run_id = None                # default: the latest cold-start evaluation run
bootstrap_samples = 500

# %%
import tempfile
from pathlib import Path

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from recsys_hyper import tracking

warnings.filterwarnings("ignore", category=FutureWarning)      # libraries' notes, not findings
warnings.filterwarnings("ignore", category=DeprecationWarning)

# without a URI: $MLFLOW_TRACKING_URI, else the nearest mlflow.db (the one `make run` writes at the
# repository's root, found from notebooks/ too)
print("store:", tracking.open_store(tracking_uri))
runs = tracking.find_runs("cold-start-evaluation", experiment)
if runs.empty:
    raise SystemExit("no cold-start evaluation run in this store: run `recsys-hyper evaluate` or `make run` first")
run = runs.iloc[0] if run_id is None else runs.set_index("run_id").loc[run_id].rename(run_id)
run_id = run.name if run_id is not None else run["run_id"]
print(f"run {run_id}: data {run['params.data']}, seed {run['params.seed']}, "
      f"{run['params.evaluated_users']} evaluated users, split {run['params.split_digest'][:12]}")

artifacts = Path(tempfile.mkdtemp())
def artifact(name):
    """A logged artifact of the run, or None (runs from older versions may lack some)."""
    path = tracking.download_artifact(run_id, name, artifacts)
    if path is None:
        print(f"(this run has no {name}; the section that needs it is skipped)")
    return path

per_user = pd.read_parquet(artifact("per_user.parquet"))
methods = list(dict.fromkeys(per_user["method"]))
per_user.groupby(["method", "k"])[["mae", "ndcg@10", "recall@10"]].mean().unstack("k").round(4)

# %% [markdown]
# ## Quality vs k, with 95% bootstrap intervals over users
# Lower MAE and higher nDCG@10 / Recall@10 are better. Look at where the curves separate: a method
# that personalises gains as k grows; a population method stays flat (or falls for ranking, as
# the support items it would have recommended are excluded).

# %%
rng = np.random.default_rng(0)

def bootstrap(values, n=bootstrap_samples):
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return np.nan, np.nan, np.nan
    means = rng.choice(values, size=(n, len(values))).mean(1)
    return values.mean(), *np.percentile(means, [2.5, 97.5])

def curves(frame, ax, metric):
    for method in methods:
        g = frame[frame["method"] == method]
        stats = np.array([bootstrap(g.loc[g["k"] == k, metric].to_numpy()) for k in sorted(g["k"].unique())])
        ks = sorted(g["k"].unique())
        ax.plot(ks, stats[:, 0], marker="o", label=method, linewidth=2 if method.startswith("hyper") else 1)
        ax.fill_between(ks, stats[:, 1], stats[:, 2], alpha=0.15)
    ax.set_xlabel("k (known interactions)")
    ax.set_title(metric)
    ax.grid(alpha=0.3)

fig, axes = plt.subplots(1, 3, figsize=(15, 4))
for ax, metric in zip(axes, ["mae", "ndcg@10", "recall@10"]):
    curves(per_user, ax, metric)
axes[0].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The same curves per user segment
# History length (all of a test user's interactions) separates light from heavy users; age group
# and gender come from the users file when the data has one. Look for segments where the
# hypernetwork's advantage shrinks or grows.

# %%
per_user["history"] = per_user["k"] + per_user["n_query"]
per_user["history_segment"] = pd.qcut(per_user.groupby("user_id")["history"].transform("max"), 3,
                                      labels=["light", "medium", "heavy"], duplicates="drop")
users_file = Path(run.get("tags.data_dir") or run["params.data"]) / "users.parquet"
segments = ["history_segment"]
if users_file.exists():
    users = pd.read_parquet(users_file)
    per_user = per_user.merge(users, on="user_id", how="left")
    if "age" in per_user:
        per_user["age_group"] = pd.cut(per_user["age"], [0, 25, 35, 50, 200], labels=["<25", "25-34", "35-49", "50+"])
        segments.append("age_group")
    if "gender" in per_user:
        segments.append("gender")
def ordered(column):
    """A segment's values in their natural order (light -> heavy, <25 -> 50+), else by size."""
    present = column.dropna()
    if isinstance(column.dtype, pd.CategoricalDtype):
        return [v for v in column.cat.categories if (present == v).any()]
    return list(present.value_counts().index)

for segment in segments:
    values = ordered(per_user[segment])
    # one y-axis for the row: the panels compare segments, so they share a scale
    fig, axes = plt.subplots(1, len(values), figsize=(5 * len(values), 3.5), squeeze=False, sharey=True)
    for ax, value in zip(axes[0], values):
        part = per_user[per_user[segment] == value]
        curves(part, ax, "ndcg@10")
        ax.set_title(f"nDCG@10, {segment} = {value} ({part['user_id'].nunique():,} users)")
    axes[0][0].set_ylabel("nDCG@10 (95% bootstrap interval)")
    axes[0][0].legend(fontsize=7)
    plt.tight_layout()
    plt.show()

# %% [markdown]
# ## Zero-shot vs fine-tuned heads, and what adaptation costs
# Fine-tuning takes gradient steps on the emitted head; the zero-shot head is one forward pass
# (with a closed-form fold-in). The right panel is per-user adaptation latency, log scale:
# compare the hypernetwork with MeLU's local updates when the run includes it.

# %%
children = tracking.child_runs(run_id, run["experiment_id"], kind="cold-start-result")
table = pd.DataFrame({"method": children["tags.method"], "k": children["tags.k"].astype(int),
                      "mae": children["metrics.mae"], "ndcg@10": children["metrics.ndcg_at_10"],
                      "ms_per_user": children["metrics.adapt_ms_per_user"]}).sort_values(["method", "k"])
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
for method in [m for m in ("hyper", "hyper-finetune") if m in methods]:
    g = table[table["method"] == method]
    axes[0].plot(g["k"], g["mae"], marker="o", label=method)
    axes[1].plot(g["k"], g["ndcg@10"], marker="o", label=method)
axes[0].set_title("MAE"); axes[1].set_title("nDCG@10")
for ax in axes[:2]:
    ax.set_xlabel("k"); ax.legend(); ax.grid(alpha=0.3)
lat = table[table["k"] > 0].groupby("method")["ms_per_user"].median().sort_values()
axes[2].barh(lat.index, lat.to_numpy())
axes[2].set_xscale("log"); axes[2].set_xlabel("ms per user (median over k >= 1)"); axes[2].set_title("adaptation latency")
plt.tight_layout()
plt.show()
lat.round(4)

# %% [markdown]
# ## Are the prediction intervals honest? Reliability per k
# `predict --interval P` gives each new user's predicted rating a range meant to hold the actual
# rating with probability P. Left: the share of test users' query ratings inside the interval
# against P, one line per k: on the diagonal the intervals say what they do; above it they are
# wider than needed, below it overconfident (the grey band is +-3 points). Right: the interval's
# mean width, which should shrink as the user's events arrive.

# %%
from IPython.display import display

from recsys_hyper.evaluation.report import reliability_figure

coverage_file = artifact("coverage.parquet")
if coverage_file is None:
    print("no interval coverage in this run: it needs the hypernetwork on explicit ratings (`--methods hyper`)")
else:
    coverage = pd.read_parquet(coverage_file)
    display(reliability_figure(coverage))
    reported = coverage[coverage["level"].isin([0.5, 0.8, 0.9])]
    covered = reported.pivot_table(index=["method", "k"], columns="level", values="covered")
    miss = 100 * (covered - covered.columns.to_numpy()).abs().max().max()
    print(f"share inside the 50%, 80% and 90% intervals; largest miss {miss:.1f} points")
    display(covered.round(3))

# %% [markdown]
# ## The mapping history -> head: a 2-D map of emitted heads
# Each point is a test user's head emitted from their 5 earliest interactions, projected with PCA.
# Colours: user features and, on synthetic data, the user's true taste cluster. Heads of users
# with the same taste should gather, even when their features differ.

# %%
from sklearn.decomposition import PCA

heads_file = artifact("heads.parquet")
heads = pd.read_parquet(heads_file) if heads_file else pd.DataFrame({"user_id": [], "rank_head": []})
pca = None if len(heads) < 2 else PCA(n_components=2, random_state=0)
xy = np.zeros((len(heads), 2)) if pca is None else pca.fit_transform(np.stack(heads["rank_head"].to_numpy()))
truth = users_file.with_name("ground_truth_users.parquet")
if truth.exists():
    heads = heads.merge(pd.read_parquet(truth), on="user_id", how="left")
# users' numeric features (age) as a colour scale; categories (true cluster, occupation, gender)
# as a legend, the largest first (at most 10 named, the rest "other")
colour_by = [c for c in ("cluster", "occupation", "gender", "age") if c in heads.columns]
fig, axes = plt.subplots(1, max(1, len(colour_by)), figsize=(5.5 * max(1, len(colour_by)), 4.5), squeeze=False)
for ax, col in zip(axes[0], colour_by or [None]):
    if col is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=14)
    elif pd.api.types.is_numeric_dtype(heads[col]) and col != "cluster":
        points = ax.scatter(xy[:, 0], xy[:, 1], c=heads[col], cmap="viridis", s=14)
        fig.colorbar(points, ax=ax, label=col)
    else:
        top = heads[col].value_counts().index[:10]
        for i, value in enumerate(top):
            mask = (heads[col] == value).to_numpy()
            ax.scatter(xy[mask, 0], xy[mask, 1], s=14, color=plt.cm.tab10(i), label=f"{value} ({mask.sum()})")
        rest = (~heads[col].isin(top)).to_numpy()
        if rest.any():
            ax.scatter(xy[rest, 0], xy[rest, 1], s=10, color="lightgrey", label=f"other ({rest.sum()})")
        ax.legend(title=col, fontsize=7, title_fontsize=8, loc="best", markerscale=1.2)
    share = pca.explained_variance_ratio_ if pca is not None else (0.0, 0.0)
    ax.set_xlabel(f"PC1 of the emitted head ({share[0]:.0%} of the variance)")
    ax.set_ylabel(f"PC2 ({share[1]:.0%})")
    ax.set_title(f"emitted heads of {len(heads):,} test users" + (f", by {col}" if col else ""))
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Real new users, night over night
# The nightly pipeline serves each night's new users from their first day's events and, the next
# night, scores what they were recommended and predicted against what they did then. One point per
# cohort: look for drops after a new champion (the `served_by` version changes) and for cohorts
# that return less.

# %%
from IPython.display import display

steps = tracking.find_runs("nightly-step")
cohort_runs = steps[steps.get("tags.step", pd.Series(dtype=str)) == "cohort"] if not steps.empty else steps
if cohort_runs.empty or "params.cohort_measured" not in cohort_runs:
    print("no nightly cohort in this store yet: run the nightly pipeline for two nights or more (make run)")
else:
    c = cohort_runs.dropna(subset=["params.cohort_measured"]).sort_values("params.cohort_measured")
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.5))
    for ax, (metric, name) in zip(axes, (("recall_at_10", "Recall@10"), ("ndcg_at_10", "nDCG@10"), ("mae", "MAE"))):
        ax.plot(c["params.cohort_measured"], c[f"metrics.cohort_{metric}"], marker="o")
        ax.set_title(f"{name} of each night's new users, the next day")
        ax.set_xlabel("cohort (first night)")
        ax.tick_params(axis="x", rotation=30)
        ax.grid(alpha=0.3)
    plt.tight_layout()
    plt.show()
    display(c[["params.cohort_measured", "metrics.cohort_users_measured", "metrics.cohort_returning",
               "metrics.cohort_recall_at_10", "metrics.cohort_ndcg_at_10", "metrics.cohort_mae"]])

# %% [markdown]
# ## Onboarding: which questions make a new user's recommendations good fastest?
# The offline elicitation protocol (logged by `recsys-hyper evaluate --onboarding`): each test
# user can answer about the first half of their history; a strategy asks one item at a time; the
# answers rebuild the head, which is measured on the second half. The dotted line is what the
# user's first 10 events (chronological) give: the fewer questions a strategy needs to cross it,
# the better.

# %%
onboarding = tracking.child_runs(run_id, run["experiment_id"], kind="onboarding-evaluation")
curve_file = tracking.download_artifact(onboarding.iloc[0]["run_id"], "onboarding_curve.parquet", artifacts) \
    if not onboarding.empty else None
if curve_file is None:
    print("no onboarding measurement for this run: run `recsys-hyper evaluate --onboarding` (make evaluate does)")
else:
    curve = pd.read_parquet(curve_file)
    reference = onboarding.iloc[0]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for ax, (col, name) in zip(axes, (("ndcg@10", "nDCG@10 on the test half"), ("mae", "MAE (lower is better)"),
                                      ("answered", "questions answered"))):
        for strategy, g in curve.groupby("strategy", sort=False):
            ax.plot(g["questions"], g[col], "-" if strategy.startswith("model") else "--", label=strategy,
                    linewidth=2.2 if strategy == "model" else 1.2)
        ref = reference.get(f"metrics.reference_{col.replace('@', '_at_')}")
        if ref is not None and ref == ref:
            ax.axhline(ref, color="grey", linestyle=":", label="first 10 events")
        ax.set_xlabel("questions asked")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    plt.tight_layout()
    plt.show()
    print(f"explanations: removing the most-blamed event lowers a recommended item's score by "
          f"{reference['metrics.faithfulness_drop_top']:.3f} on average, a random event by "
          f"{reference['metrics.faithfulness_drop_random']:.3f}")

# %% [markdown]
# ## One new user, as their first 1, 3 and 5 interactions arrive
# The top 10 for the same user after each new interaction, each with its explanation: the history
# event that moved its score most (with its contribution) and how much of the score comes from
# the population prior, the user's features and their events. The list should move from popular
# items towards the user's taste, and the reasons from the prior towards the user's own events.

# %%
example_file = artifact("example_user.parquet")
example = pd.read_parquet(example_file) if example_file else pd.DataFrame({"item_id": [], "known": [], "rank": []})
label = "title" if "title" in example else ("genres" if "genres" in example else "item_id")
names = dict(zip(example["item_id"], example[label].map(lambda v: ", ".join(v) if isinstance(v, (list, np.ndarray))
                                                        else v)))
def because(events):
    """The most influential event, by name, with its contribution."""
    if events is None or len(events) == 0:
        return ""
    top = events[0]
    return f"{names.get(top['item_id'], top['item_id'])} ({top['contribution']:+.2f})"

for n, g in example.groupby("known"):
    g = g.sort_values("rank")
    table = pd.DataFrame({"recommended": g["item_id"].map(names).to_numpy(),
                          "because of": [because(e) for e in g.get("because", [None] * len(g))]})
    for part in ("score_prior", "score_features", "score_history"):
        if part in g:
            table[part.replace("score_", "from ")] = g[part].round(2).to_numpy()
    print(f"after {n} interactions:")
    display(table)
