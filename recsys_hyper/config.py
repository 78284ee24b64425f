"""Configuration, stated once: small frozen dataclasses whose fields declare their kind and range.

* :class:`Config` (``[model]`` and ``[train]``): the hypernetwork, loadable from TOML / YAML /
  JSON; unknown keys are rejected with the list of known ones.
* :class:`NightlyConfig`: the nightly pipeline's folders, budgets and tolerances.
* The names of what is tracked: the registered model and the experiments.

The command line reads its defaults from here, so each default is written once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from .errors import RecsysHyperError

#: the registered model every version is registered under (its aliases: challenger, champion)
REGISTERED_MODEL = "recsys-hyper"
TRAINING_EXPERIMENT = "recsys-hyper-training"
EVALUATION_EXPERIMENT = "recsys-hyper-cold-start"
NIGHTLY_EXPERIMENT = "recsys-hyper-nightly"

#: the cold-start evaluation's methods: name -> (what to fit, how to adapt). Methods sharing a fit
#: key share one fitted model. Here (not in the evaluation) so that the command line lists them
#: without importing the models.
EVALUATION_METHODS: dict[str, tuple[str, dict]] = {
    "popularity": ("popularity", {}),
    "item-mean": ("item-mean", {}),
    "bias": ("bias", {}),
    "mf": ("mf", {}),
    "mf-features": ("mf-features", {}),
    "ease": ("ease", {}),
    "melu": ("melu", {}),
    "hyper": ("hyper", {"mode": "zero-shot"}),
    "hyper-finetune": ("hyper", {"mode": "finetune", "steps": 5, "lr": 0.002}),
    # ranking that explores from the heads' posterior (recommend --explore): measured on request
    "hyper-ucb": ("hyper", {"explore": "ucb"}),
    "hyper-thompson": ("hyper", {"explore": "thompson"}),
}
#: the methods an evaluation runs unless told otherwise
DEFAULT_EVALUATION_METHODS = tuple(m for m in EVALUATION_METHODS if m not in ("hyper-ucb", "hyper-thompson"))
#: the cold-start protocol's defaults (:class:`~recsys_hyper.evaluation.protocol.Protocol`; here so
#: that the command line's help reads them without importing the protocol's pandas)
PROTOCOL_SHOTS: tuple[int, ...] = (0, 1, 3, 5, 10, 20)
PROTOCOL_SEED = 0
PROTOCOL_MIN_QUERY = 10


@dataclass(frozen=True)
class Rule:
    """What a config value may be: its kind (``int``, ``float``, ``bool``, ``str``, or a list of
    ints / floats: ``ints``, ``floats``), the range of its numbers (finite always; ``lo`` / ``hi``
    inclusive unless ``open_lo`` / ``open_hi``), the choices of a string, ``None`` allowed
    (``optional``), an empty list allowed (``empty``). Booleans are never numbers."""

    kind: str
    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False
    open_hi: bool = False
    choices: tuple = ()
    optional: bool = False
    empty: bool = True

    def describe(self) -> str:
        noun = {"int": "an int", "float": "a float", "bool": "true or false", "str": "one of",
                "ints": "a list of ints", "floats": "a list of floats"}[self.kind]
        if self.kind == "str":
            return f"{noun} {', '.join(repr(c) for c in self.choices)}"
        if self.lo is not None or self.hi is not None:
            lo = "-inf" if self.lo is None else _number(self.lo)
            hi = "inf" if self.hi is None else _number(self.hi)
            where = f"{'(' if self.open_lo or self.lo is None else '['}{lo}, {hi}{')' if self.open_hi or self.hi is None else ']'}"
            noun += f" {'each ' if self.kind in ('ints', 'floats') else ''}in {where}"
        elif self.kind in ("int", "float", "ints", "floats"):
            noun += " (finite)"
        if self.kind in ("ints", "floats") and not self.empty:
            noun = "a non-empty " + noun[2:]
        return noun + (" or None" if self.optional else "")

    def number_ok(self, v, integral: bool) -> bool:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            return False
        if integral and not isinstance(v, numbers.Integral):
            return False
        if not math.isfinite(v):
            return False
        if self.lo is not None and (v < self.lo or (self.open_lo and v == self.lo)):
            return False
        if self.hi is not None and (v > self.hi or (self.open_hi and v == self.hi)):
            return False
        return True

    def check(self, owner: str, name: str, value):
        """``value`` as stored (lists become tuples), or ``ValueError`` in scikit-learn's words."""
        if value is None and self.optional:
            return None
        ok, out = False, value
        if self.kind in ("int", "float"):
            ok = self.number_ok(value, self.kind == "int")
            out = (int if self.kind == "int" else float)(value) if ok else value
        elif self.kind == "bool":
            ok = isinstance(value, bool)
        elif self.kind == "str":
            ok = isinstance(value, str) and value in self.choices
        elif isinstance(value, (list, tuple)):
            ok = (self.empty or len(value) > 0) and all(self.number_ok(v, self.kind == "ints") for v in value)
            out = tuple((int if self.kind == "ints" else float)(v) for v in value) if ok else value
        if not ok:
            raise ValueError(f"The '{name}' parameter of {owner} must be {self.describe()}. Got {value!r} instead.")
        return out


def _number(v: float) -> str:
    return f"{int(v):,}" if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"


def check_fields(obj, rules: dict[str, Rule]) -> None:
    """Check (and normalise: lists to tuples) every field of a frozen config dataclass."""
    for name, rule in rules.items():
        value = rule.check(type(obj).__name__, name, getattr(obj, name))
        if value is not getattr(obj, name) or type(value) is not type(getattr(obj, name)):
            object.__setattr__(obj, name, value)


#: sizes are capped so that a typo cannot allocate gigabytes before anything is checked
MAX_WIDTH = 4096


@dataclass(frozen=True)
class ModelConfig:
    """Sizes and regularisers of the networks (see :mod:`recsys_hyper.networks.hyper`)."""

    dim: int = 32                      # item vector size d (the head has d + 1 weights)
    hidden: int = 64
    z_dim: int = 64
    id_dropout: float = 0.25           # share of items whose id embedding is dropped per step
    user_feature_dropout: float = 0.3  # share of users whose features are dropped per step
    init_precision: float = 20.0       # prior precision of the head at initialisation
    context_dim: int = 32              # learned item-item path of the ranking score (0: off)
    item_item_rank: int = 64           # rank of the EASE term of the ranking score (0: off)

    RULES: ClassVar[dict[str, Rule]] = {
        "dim": Rule("int", 1, MAX_WIDTH), "hidden": Rule("int", 1, MAX_WIDTH), "z_dim": Rule("int", 1, MAX_WIDTH),
        "id_dropout": Rule("float", 0, 1, open_hi=True), "user_feature_dropout": Rule("float", 0, 1, open_hi=True),
        "init_precision": Rule("float", 0, 1e6, open_lo=True),
        "context_dim": Rule("int", 0, MAX_WIDTH), "item_item_rank": Rule("int", 0, MAX_WIDTH),
    }

    def __post_init__(self) -> None:
        check_fields(self, self.RULES)


@dataclass(frozen=True)
class TrainConfig:
    """Episodic meta-training."""

    epochs: int = 40
    max_steps: int | None = None       # optimisation steps in all, spread over the epochs (each epoch samples its
                                       # users afresh); None: every epoch passes over every training user
    max_minutes: float | None = None   # stop after this long (the epoch under way is validated and kept)
    max_val_users: int = 2000          # validation users: a seeded sample of at most this many
    full_softmax_items: int = 20_000   # larger catalogues: a sampled softmax with log-Q correction
    negatives: int = 2048              # sampled negatives per step (popularity^0.75) for that softmax
    batch_users: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    k_max: int = 20                    # support sizes are drawn from 0..k_max
    support_strategy: str = "prefix"   # "prefix" (chronological, augmented) or "random"
    augment_prob: float = 0.5
    augment_window: float = 2.0
    max_query: int = 64
    rank_weight: float = 0.5           # weight of the ranking (softmax over the catalogue) loss
    positive_threshold: float = 4.0    # explicit data: query items rated >= this are ranking positives
    head_l2: float = 1e-2              # L2 on the emitted residual heads
    val_fraction: float = 0.15         # of the training users, held out for early stopping
    val_shots: tuple[int, ...] = (0, 1, 3, 5, 10, 20)
    patience: int = 8                  # validation is noisy with few users: stopping early costs quality
    # what the best epoch (and early stopping) is chosen by on validation users: "loss" the training
    # objective; "metrics" the measured figures, log(MAE) - log(nDCG@10) (nDCG@10 alone on implicit data)
    select_epoch_by: str = "metrics"
    calibrate: bool = True             # choose the prior-strength multipliers on validation users
    # the head's prior-strength multiplier; the large values all but switch the head's vector off
    # (leaving the bias baseline's user-bias fold-in) where it does not help the validation users
    calibration_grid: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 64.0, 512.0)
    calibration_bias_grid: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)  # the user bias's own; () = tied
    item_item_lambdas: tuple[float, ...] = (1e2, 1e3, 1e4, 1e5, 1e6, 1e7)   # EASE's ridge, chosen on validation
    item_item_weights: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0, 3.0)         # its weight (x a data scale), ditto
    item_item_min_gain: float = 0.01   # kept only if it lifts validation nDCG@10 by this share
    # the rating's blend with its exact special cases (the bias baseline, MF fold-in from a zero and
    # from a features prior), per support size k, on this grid of weights: the special cases' own
    # weights (summing to 1) by cross-fitting over every training user, then the network's share on
    # the validation users; () = never (all need bias_init "fitted" and explicit ratings)
    rating_blend_grid: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    mf_special_case: bool = True       # MF fold-in among them (MF tuned as the MF baseline is); False: bias only
    mf_max_users: int = 50_000         # MF is fitted on at most this many training users (a seeded sample)
    crossfit_folds: int = 5            # folds of the cross-fitting the closed-form choices are made by
    crossfit_max_users: int = 20_000   # users the cross-fitting holds at most (a seeded sample of the training users)
    bias_init: str = "fitted"          # item biases start as the bias baseline's fit (tuned), or "shrunk-mean"
    train_item_bias: bool = False      # False: item biases stay at their initial values
    seed: int = 0

    RULES: ClassVar[dict[str, Rule]] = {
        "epochs": Rule("int", 1, 1_000_000), "max_steps": Rule("int", 1, 10**12, optional=True),
        "max_minutes": Rule("float", 0, 10**7, open_lo=True, optional=True),
        "max_val_users": Rule("int", 1, 10**9), "full_softmax_items": Rule("int", 1, 10**12),
        "negatives": Rule("int", 1, 10**7), "batch_users": Rule("int", 1, 10**7),
        "lr": Rule("float", 0, 1e3, open_lo=True), "weight_decay": Rule("float", 0, 1e3),
        "grad_clip": Rule("float", 0, 1e12, open_lo=True), "k_max": Rule("int", 0, 100_000),
        "support_strategy": Rule("str", choices=("prefix", "random")), "augment_prob": Rule("float", 0, 1),
        "augment_window": Rule("float", 1, 1e6), "max_query": Rule("int", 1, 10**7),
        "rank_weight": Rule("float", 0, 1e6), "positive_threshold": Rule("float"), "head_l2": Rule("float", 0, 1e6),
        "val_fraction": Rule("float", 0, 1, open_lo=True, open_hi=True),
        "val_shots": Rule("ints", 0, 100_000, empty=False), "patience": Rule("int", 1, 1_000_000),
        "select_epoch_by": Rule("str", choices=("loss", "metrics")),
        "calibrate": Rule("bool"), "calibration_grid": Rule("floats", 0, 1e12, open_lo=True, empty=False),
        "calibration_bias_grid": Rule("floats", 0, 1e12, open_lo=True),
        "item_item_lambdas": Rule("floats", 0, 1e30, open_lo=True, empty=False),
        "item_item_weights": Rule("floats", 0, 1e6, empty=False), "item_item_min_gain": Rule("float", 0, 1e6),
        "rating_blend_grid": Rule("floats", 0, 1), "mf_special_case": Rule("bool"),
        "mf_max_users": Rule("int", 1, 10**9), "crossfit_folds": Rule("int", 2, 100),
        "crossfit_max_users": Rule("int", 2, 10**9),
        "bias_init": Rule("str", choices=("shrunk-mean", "fitted")), "train_item_bias": Rule("bool"),
        "seed": Rule("int", 0, 2**32 - 1),
    }

    def __post_init__(self) -> None:
        check_fields(self, self.RULES)


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "Config":
        if not isinstance(d, dict):
            raise RecsysHyperError(f"{source}: expected a mapping with [model] and [train] sections; got "
                                   f"{type(d).__name__} {d!r:.80}")
        unknown = set(d) - {"model", "train"}
        if unknown:
            raise RecsysHyperError(f"{source}: unknown section(s) {sorted(map(str, unknown))}; the sections are "
                                   f"[model] and [train]")
        return cls(model=_build(ModelConfig, d.get("model", {}), f"{source} [model]"),
                   train=_build(TrainConfig, d.get("train", {}), f"{source} [train]"))

    def replace(self, **train_overrides) -> "Config":
        """A copy with some training fields replaced (``None`` values ignored); a value out of its
        range raises :class:`~recsys_hyper.errors.RecsysHyperError`."""
        kept = {k: v for k, v in train_overrides.items() if v is not None}
        if not kept:
            return self
        try:
            return dataclasses.replace(self, train=dataclasses.replace(self.train, **kept))
        except ValueError as exc:
            raise RecsysHyperError(str(exc)) from None


def _build(cls, values, source: str):
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise RecsysHyperError(f"{source}: the section must be a table of keys (e.g. dim = 32); got "
                               f"{type(values).__name__} {values!r:.80}; fix the config file")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(str(k) for k in set(values) - set(names))
    if unknown:
        raise RecsysHyperError(f"{source}: unknown key(s) {unknown}; known keys: {', '.join(names)}")
    try:
        return cls(**values)
    except ValueError as exc:
        raise RecsysHyperError(f"{source}: {exc} Fix the value in the config file.") from None


def load_config(path: str | os.PathLike | None) -> Config:
    """Read a TOML, YAML or JSON config file; ``None`` gives the defaults."""
    if path is None:
        return Config()
    p = Path(path)
    if not p.is_file():
        raise RecsysHyperError(f"{p}: config file not found")
    text = p.read_text()
    try:
        if p.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif p.suffix == ".json":
            data = json.loads(text)
        else:
            raise RecsysHyperError(f"{p}: unknown config format; use .toml, .yaml or .json")
    except RecsysHyperError:
        raise
    except Exception as exc:  # parse errors of any of the three formats
        raise RecsysHyperError(f"{p}: cannot be parsed ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise RecsysHyperError(f"{p}: expected a mapping with [model] and [train] sections")
    return Config.from_dict(data, source=str(p))


@dataclass(frozen=True)
class NightlyConfig:
    """The nightly pipeline (see :mod:`recsys_hyper.jobs.nightly`): where it reads and writes, its
    budgets, the gate's tolerances, and what the evaluation steps measure."""

    landing: Path = Path("data/landing")
    work: Path = Path("artifacts/nightly")
    model_config: Config = field(default_factory=Config)
    full_retrain: bool = False
    warm_max_steps: int | None = 2000  # a warm start refines: a step budget, whatever the number of users
    first_max_steps: int | None = None  # a first (or --full) training: full passes over every user unless set
    max_eval_users: int = 5000         # the gate's and the cold-start step's users: a seeded sample of at most this many
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    tolerance_mae: float = 0.005       # the challenger may be this much worse in MAE ...
    tolerance_ndcg: float = 0.005      # ... and in nDCG@10 (validation users, mean over k)
    gate_shots: tuple[int, ...] = (0, 1, 3, 5, 10)
    top_k: int = 100
    eval_methods: tuple[str, ...] = ("popularity", "bias", "ease", "hyper")   # cheap, strong baselines
    eval_shots: tuple[int, ...] = (0, 1, 3, 5, 10)
    experiment: str = NIGHTLY_EXPERIMENT
    progress: bool = True
    allow_out_of_order: bool = False   # run a night older than one already merged (it trains on the later data)
    allow_rating_mismatch: bool = False  # merge landing files whose ratings fall outside the snapshot's scale
    registered_model: str = REGISTERED_MODEL
    adopt_store: bool = False          # a store that does not know the work folder's champion: gate against its files
    engine: str = "local"              # "spark": the data steps as Spark jobs, scoring on Spark (see jobs.spark_night)
    spark_master: str | None = None    # the Spark master URL (default: $SPARK_MASTER, else local[*])
    train_users: int | None = None     # train on a seeded sample of at most this many training users (None: all)
    train_processes: int = 1           # > 1: train across this many Spark tasks (TorchDistributor; --engine spark)

    RULES: ClassVar[dict[str, Rule]] = {
        "warm_max_steps": Rule("int", 1, 10**12, optional=True), "first_max_steps": Rule("int", 1, 10**12, optional=True),
        "max_eval_users": Rule("int", 1, 10**9), "val_fraction": Rule("float", 0, 1, open_lo=True, open_hi=True),
        "test_fraction": Rule("float", 0, 1, open_lo=True, open_hi=True), "tolerance_mae": Rule("float"),
        "tolerance_ndcg": Rule("float"), "gate_shots": Rule("ints", 0, 100_000, empty=False),
        "top_k": Rule("int", 1, 10**7), "eval_shots": Rule("ints", 0, 100_000, empty=False),
        "train_users": Rule("int", 1, 10**12, optional=True), "engine": Rule("str", choices=("local", "spark")),
        "train_processes": Rule("int", 1, 100_000),
    }

    def __post_init__(self) -> None:
        check_fields(self, self.RULES)
        if self.val_fraction + self.test_fraction >= 1:
            raise RecsysHyperError(f"val_fraction + test_fraction must be below 1; got {self.val_fraction} + "
                                   f"{self.test_fraction}")
        if self.train_processes > 1 and self.engine != "spark":
            raise RecsysHyperError(f"--train-processes {self.train_processes} spreads training over Spark tasks: it "
                                   f"needs --engine spark (on one machine, `torchrun --nproc_per_node N "
                                   f"recsys-hyper train` trains a model on N processes)")
        if not isinstance(self.registered_model, str) or not self.registered_model.strip():
            raise RecsysHyperError(f"--registered-model must be a name; got {self.registered_model!r}")
        # every path the night records is absolute: a killed night resumes from any working directory
        object.__setattr__(self, "landing", Path(self.landing).resolve())
        object.__setattr__(self, "work", Path(self.work).resolve())


def default(cls, name: str):
    """The default of field ``name`` of the dataclass ``cls`` (for the command line's options)."""
    f = cls.__dataclass_fields__[name]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
