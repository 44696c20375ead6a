"""Load a sweep YAML (omegaconf), apply ``key=value`` overrides, validate once, expand the grid.

Every problem is a ``ConfigError`` with one line naming the key and what is allowed, raised before
anything is computed or written.
"""

from __future__ import annotations

import copy
import importlib
import math
import os
from dataclasses import dataclass, field, fields

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .attacks import ATTACKS, AttackSpec
from .config import DPConfig, FamilyConfig, SweepConfig, TargetSpec
from .data import SOURCES
from .errors import ConfigError
from .families import FAMILIES
from .training.dp import validate_dp

SOURCES_WITH_PATH = {"folder", "hdf5", "npz", "parquet"}


@dataclass
class Trial:
    """One Tune trial: one target, scored by every attack."""

    trial_id: str
    spec: TargetSpec
    eval_size: int
    attacks: list[AttackSpec] = field(default_factory=list)


def load(path: str, overrides: list[str] | None = None) -> tuple[SweepConfig, str]:
    """The validated sweep config and its resolved YAML text."""
    if not os.path.isfile(path):
        raise ConfigError(
            f"sweep file {path!r} does not exist; pass a YAML file such as sweeps/quickstart.yaml"
        )
    try:
        raw = OmegaConf.load(path)
        extra = OmegaConf.from_dotlist(list(overrides or []))
        for axis in ("families", "train_sizes", "epsilons", "seeds"):  # a scalar axis is a 1-point grid
            for c in (raw, extra):
                if axis in c and not OmegaConf.is_list(c[axis]):
                    c[axis] = [c[axis]]
        merged = OmegaConf.merge(OmegaConf.structured(SweepConfig), raw, extra)
        cfg: SweepConfig = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        msg = str(e).splitlines()[0]
        raise ConfigError(f"{path}: key {key!r}: {msg}") from None
    except Exception as e:  # YAML syntax and the like
        raise ConfigError(f"{path}: cannot read the sweep: {str(e).splitlines()[0]}") from None
    for m in cfg.plugins:
        try:
            importlib.import_module(m)
        except ImportError as e:
            raise ConfigError(f"plugins: cannot import {m!r} ({e}); allowed: importable module names") from None
    for key in ("output", "store"):
        v = getattr(cfg, key)
        if v and "://" not in v:
            setattr(cfg, key, os.path.abspath(os.path.expanduser(v)))  # Tune trials chdir: keep paths absolute
    if cfg.data.path and "://" not in cfg.data.path:
        cfg.data.path = os.path.abspath(os.path.expanduser(cfg.data.path))
    validate(cfg)
    return cfg, OmegaConf.to_yaml(merged)


def validate(cfg: SweepConfig) -> None:
    """Value checks that types cannot express."""
    if not cfg.name or "/" in cfg.name:
        raise ConfigError(f"name = {cfg.name!r}; allowed: a non-empty name without '/'")
    for axis in ("families", "train_sizes", "epsilons", "seeds"):
        if not getattr(cfg, axis):
            raise ConfigError(f"{axis} is empty; give at least one value")
    for f in cfg.families:
        FAMILIES.get(f, key="families")
    SOURCES.get(cfg.data.source, key="data.source")
    if cfg.data.source in SOURCES_WITH_PATH and not cfg.data.path:
        raise ConfigError(f"data.path is required for data.source = {cfg.data.source!r}")
    if cfg.data.channels not in (1, 3):
        raise ConfigError(f"data.channels = {cfg.data.channels}; allowed: 1 or 3")
    if cfg.data.resolution < 4:
        raise ConfigError(f"data.resolution = {cfg.data.resolution}; allowed: an integer >= 4")
    for e in cfg.epsilons:
        if not (e > 0):
            raise ConfigError(f"epsilons has {e}; allowed: numbers > 0, or inf for no DP")
    if not 0 < cfg.dp.delta < 1:
        raise ConfigError(f"dp.delta = {cfg.dp.delta}; allowed: 0 < delta < 1")
    if cfg.dp.max_grad_norm <= 0:
        raise ConfigError(f"dp.max_grad_norm = {cfg.dp.max_grad_norm}; allowed: > 0")
    validate_dp(cfg.dp)  # dp.accountant, dp.secure_mode
    for n in cfg.train_sizes:
        if n < 1:
            raise ConfigError(f"train_sizes has {n}; allowed: integers >= 1")
    if not 1 <= cfg.eval_size <= min(cfg.train_sizes):
        raise ConfigError(
            f"eval_size = {cfg.eval_size}; allowed: 1..{min(cfg.train_sizes)} "
            "(evaluation members are a subset "
            "of the smallest training set)"
        )
    fam = cfg.family
    if fam.num_steps < 2:
        raise ConfigError(f"family.num_steps = {fam.num_steps}; allowed: an integer >= 2")
    if not 0 < fam.beta_min < fam.beta_max:
        raise ConfigError("family.beta_min / beta_max: allowed 0 < beta_min < beta_max")
    if not 0 < fam.sigma_min < fam.sigma_max:
        raise ConfigError("family.sigma_min / sigma_max: allowed 0 < sigma_min < sigma_max")
    if not 0 < fam.eps < 1:
        raise ConfigError(f"family.eps = {fam.eps}; allowed: 0 < eps < 1")
    tr = cfg.train
    for key, v in (("train.steps", tr.steps), ("train.batch_size", tr.batch_size)):
        if v < 1:
            raise ConfigError(f"{key} = {v}; allowed: an integer >= 1")
    if tr.lr <= 0 or not 0 <= tr.ema_decay < 1:
        raise ConfigError("train.lr must be > 0 and train.ema_decay in [0, 1)")
    m = cfg.model
    if not m.block_out_channels or any(c % m.norm_num_groups for c in m.block_out_channels):
        raise ConfigError(
            f"model.block_out_channels = {m.block_out_channels}; allowed: a non-empty list of multiples of "
            f"model.norm_num_groups = {m.norm_num_groups}"
        )
    if cfg.data.resolution % (2 ** (len(m.block_out_channels) - 1)):
        raise ConfigError(
            f"data.resolution = {cfg.data.resolution} is not divisible by 2^(levels-1) = "
            f"{2 ** (len(m.block_out_channels) - 1)} for model.block_out_channels = {m.block_out_channels}"
        )
    attack_specs(cfg)
    r = cfg.resources
    for key in ("scorer_actors", "max_concurrent_trials", "batch_size"):
        if getattr(r, key) is not None and getattr(r, key) < 1:
            raise ConfigError(f"resources.{key} = {getattr(r, key)}; allowed: an integer >= 1")
    for key in ("scorer_cpus", "scorer_gpus", "train_cpus", "train_gpus"):
        if getattr(r, key) is not None and getattr(r, key) < 0:
            raise ConfigError(f"resources.{key} = {getattr(r, key)}; allowed: a number >= 0")
    if r.scorer_cpus <= 0:
        raise ConfigError("resources.scorer_cpus must be > 0 (an actor without CPUs gets no torch threads)")
    if cfg.bootstrap < 0:
        raise ConfigError(f"bootstrap = {cfg.bootstrap}; allowed: an integer >= 0")


def attack_specs(cfg: SweepConfig) -> list[AttackSpec]:
    """The configured attacks with typed, validated parameters."""
    if not cfg.attacks:
        raise ConfigError(f"attacks is empty; allowed: {', '.join(ATTACKS.names())}")
    out = []
    for name, params in cfg.attacks.items():
        attack = ATTACKS.get(name, key="attacks")
        params = dict(params or {})
        max_samples = params.pop("max_samples", None)
        allowed = [f.name for f in fields(attack.Params)]
        try:
            typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(attack.Params), params))
        except OmegaConfBaseException as e:
            key = getattr(e, "full_key", "?")
            raise ConfigError(
                f"attacks.{name}.{key}: {str(e).splitlines()[0]}; "
                f"allowed keys: {', '.join(allowed)}, max_samples"
            ) from None
        if max_samples is not None and (not isinstance(max_samples, int) or max_samples < 1):
            raise ConfigError(
                f"attacks.{name}.max_samples = {max_samples!r}; allowed: an integer >= 1 or null"
            )
        attack().validate(typed, cfg.family.num_steps, f"attacks.{name}")
        out.append(AttackSpec(name, typed, max_samples))
    return out


def eps_label(e: float) -> str:
    return "inf" if math.isinf(e) else f"{e:g}"


def expand(cfg: SweepConfig) -> list[Trial]:
    """One trial per target of the grid, in a stable order."""
    attacks = attack_specs(cfg)
    fam = {f.name: getattr(cfg.family, f.name) for f in fields(cfg.family)}
    trials = []
    for family in cfg.families:
        for n in cfg.train_sizes:
            for e in cfg.epsilons:
                for seed in cfg.seeds:
                    spec = TargetSpec(
                        family=FamilyConfig(name=family, **fam),
                        model=copy.deepcopy(cfg.model),
                        train=copy.deepcopy(cfg.train),
                        dp=DPConfig(
                            epsilon=float(e), **{f.name: getattr(cfg.dp, f.name) for f in fields(cfg.dp)}
                        ),
                        data=copy.deepcopy(cfg.data),
                        train_size=n,
                        seed=seed,
                    )
                    tid = f"{family}-n{n}-eps{eps_label(e)}-s{seed}-{spec.target_id[:8]}"
                    trials.append(Trial(tid, spec, cfg.eval_size, attacks))
    return trials


def store_root(cfg: SweepConfig) -> str:
    return cfg.store or f"{cfg.output.rstrip('/')}/store"


def results_root(cfg: SweepConfig) -> str:
    return f"{cfg.output.rstrip('/')}/{cfg.name}"
