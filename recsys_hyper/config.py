"""Model and training configuration: small frozen dataclasses, loadable from TOML / YAML / JSON.

A config file has up to two tables, ``[model]`` and ``[train]``; unknown keys are rejected with
the list of known ones.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import RecsysHyperError


def _check(cls_name: str, name: str, ok: bool, expected: str, got: object) -> None:
    if not ok:
        raise ValueError(f"The '{name}' parameter of {cls_name} must be {expected}. Got {got!r} instead.")


@dataclass(frozen=True)
class ModelConfig:
    """Sizes and regularisers of the networks (see :mod:`recsys_hyper.model.modules`)."""

    dim: int = 32                      # item vector size d (the head has d + 1 weights)
    hidden: int = 64
    z_dim: int = 64
    id_dropout: float = 0.25           # share of items whose id embedding is dropped per step
    user_feature_dropout: float = 0.3  # share of users whose features are dropped per step
    init_precision: float = 20.0       # prior precision of the head at initialisation
    context_dim: int = 32              # learned item-item path of the ranking score (0: off)
    item_item_rank: int = 64           # rank of the EASE term of the ranking score (0: off)

    def __post_init__(self) -> None:
        for name in ("dim", "hidden", "z_dim"):
            v = getattr(self, name)
            _check("ModelConfig", name, isinstance(v, int) and v >= 1, "a positive int", v)
        for name in ("id_dropout", "user_feature_dropout"):
            v = getattr(self, name)
            _check("ModelConfig", name, isinstance(v, (int, float)) and 0 <= v < 1, "a float in [0, 1)", v)
        _check("ModelConfig", "init_precision", self.init_precision > 0, "a positive float", self.init_precision)
        for name in ("context_dim", "item_item_rank"):
            v = getattr(self, name)
            _check("ModelConfig", name, isinstance(v, int) and v >= 0, "an int >= 0", v)


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
    calibrate: bool = True             # choose the prior-strength multipliers on validation users
    # the head's prior-strength multiplier; the large values all but switch the head's vector off
    # (leaving the bias baseline's user-bias fold-in) where it does not help the validation users
    calibration_grid: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 64.0, 512.0)
    calibration_bias_grid: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)  # the user bias's own; () = tied
    item_item_lambdas: tuple[float, ...] = (1e2, 1e3, 1e4, 1e5, 1e6, 1e7)   # EASE's ridge, chosen on validation
    item_item_weights: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0, 3.0)         # its weight (x a data scale), ditto
    item_item_min_gain: float = 0.01   # kept only if it lifts validation nDCG@10 by this share
    bias_init: str = "fitted"          # item biases start as the bias baseline's fit (tuned), or "shrunk-mean"s
    train_item_bias: bool = False      # False: item biases stay at their initial values
    seed: int = 0

    def __post_init__(self) -> None:
        _check("TrainConfig", "max_steps", self.max_steps is None or (
            isinstance(self.max_steps, int) and self.max_steps >= 1), "a positive int or None", self.max_steps)
        _check("TrainConfig", "max_minutes", self.max_minutes is None or self.max_minutes > 0, "a positive float or None",
               self.max_minutes)
        for name in ("epochs", "batch_users", "max_query", "patience", "max_val_users", "full_softmax_items",
                     "negatives"):
            v = getattr(self, name)
            _check("TrainConfig", name, isinstance(v, int) and v >= 1, "a positive int", v)
        _check("TrainConfig", "k_max", isinstance(self.k_max, int) and self.k_max >= 0, "an int >= 0", self.k_max)
        _check("TrainConfig", "support_strategy", self.support_strategy in ("prefix", "random"),
               "'prefix' or 'random'", self.support_strategy)
        _check("TrainConfig", "val_fraction", 0 < self.val_fraction < 1, "a float in (0, 1)", self.val_fraction)
        for name in ("lr", "grad_clip"):
            _check("TrainConfig", name, getattr(self, name) > 0, "a positive float", getattr(self, name))
        for name in ("weight_decay", "rank_weight", "head_l2"):
            _check("TrainConfig", name, getattr(self, name) >= 0, "a float >= 0", getattr(self, name))
        _check("TrainConfig", "calibration_grid", len(self.calibration_grid) > 0 and min(self.calibration_grid) > 0,
               "a non-empty list of positive floats", self.calibration_grid)
        _check("TrainConfig", "calibration_bias_grid", all(a > 0 for a in self.calibration_bias_grid),
               "a list of positive floats", self.calibration_bias_grid)
        _check("TrainConfig", "item_item_lambdas", len(self.item_item_lambdas) > 0 and min(self.item_item_lambdas) > 0,
               "a non-empty list of positive floats", self.item_item_lambdas)
        _check("TrainConfig", "item_item_weights", all(w >= 0 for w in self.item_item_weights),
               "a list of floats >= 0", self.item_item_weights)
        _check("TrainConfig", "item_item_min_gain", self.item_item_min_gain >= 0, "a float >= 0",
               self.item_item_min_gain)
        _check("TrainConfig", "bias_init", self.bias_init in ("shrunk-mean", "fitted"), "'shrunk-mean' or 'fitted'",
               self.bias_init)


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "Config":
        unknown = set(d) - {"model", "train"}
        if unknown:
            raise RecsysHyperError(f"{source}: unknown section(s) {sorted(unknown)}; the sections are [model] and [train]")
        return cls(model=_build(ModelConfig, d.get("model", {}), f"{source} [model]"),
                   train=_build(TrainConfig, d.get("train", {}), f"{source} [train]"))

    def replace(self, **train_overrides) -> "Config":
        """A copy with some training fields replaced (``None`` values ignored)."""
        kept = {k: v for k, v in train_overrides.items() if v is not None}
        return dataclasses.replace(self, train=dataclasses.replace(self.train, **kept)) if kept else self


def _build(cls, values: dict, source: str):
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise RecsysHyperError(f"{source}: unknown key(s) {unknown}; known keys: {', '.join(names)}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return cls(**converted)
    except ValueError as exc:
        raise RecsysHyperError(f"{source}: {exc}") from None
    except TypeError:  # a value of the wrong type failed a comparison in the checks
        wrong = [f"{k} = {v!r} (expected {type(names[k].default).__name__})" for k, v in converted.items()
                 if not isinstance(v, (type(names[k].default), int) if isinstance(names[k].default, float)
                                   else type(names[k].default))]
        raise RecsysHyperError(f"{source}: wrong type for {', '.join(wrong) or 'a value'}; fix the value in the "
                               f"config file") from None


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
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib

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
