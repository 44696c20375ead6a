"""Tiny sweep YAML files for the end-to-end tests (a one-target digits sweep, overridable key by key) and a
reader of the tables they produce."""

from __future__ import annotations

import copy

import pandas as pd
import pyarrow.dataset as pads
import yaml

TINY = {
    "name": "t",
    "families": ["ddpm"],
    "train_sizes": [64],
    "epsilons": [float("inf")],
    "seeds": [0],
    "eval_size": 16,
    "data": {"source": "digits"},
    "model": {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 8},
    "train": {"steps": 5, "batch_size": 64, "lr": 0.002},
    "attacks": {"loss": {"steps": [0, 50, 100, 999]}},
    "bootstrap": 20,
    "resources": {"scorer_actors": 1, "scorer_cpus": 1, "max_concurrent_trials": 1, "batch_size": 8},
}


def write_sweep(path, store: str, base: dict | None = None, **over) -> str:
    """Write ``base`` (default TINY) with ``store`` and ``over`` applied; a dict value merges into a dict key."""
    cfg = copy.deepcopy(base or TINY)
    cfg["store"] = store
    for k, v in over.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return str(path)


def load_sweep(tmp_path, overrides=(), **over):
    """``sweep_config.load`` of a tiny sweep written to ``tmp_path / "s.yaml"`` with ``over``, plus ``overrides``."""
    from mia_ray import sweep_config

    path = write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"), **over)
    return sweep_config.load(path, list(overrides))


def read(root: str, table: str) -> pd.DataFrame:
    """One results table (``metrics``, ``scores``, ``targets``, ``splits``) of a sweep root, as pandas."""
    return pads.dataset(f"{root}/{table}", format="parquet").to_table().to_pandas()
