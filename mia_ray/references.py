"""LiRA reference models (Carlini et al. 2022): which samples each one trains on. Pure: numpy only.

A target with ``train_size`` n has a *universe* U of 2n pool ids: its n members, its evaluation non-members and
further non-members, all taken in order from the seeded permutation of its split (``make_split`` draws members
= perm[:n], non-members = perm[n:n+eval_size]; so U = perm[:2n]). Reference r trains on exactly n ids of U
(a "half"), with the target's recipe. Halves come in complementary pairs: references 2p and 2p+1 split U by one
seeded permutation of pair p, so with an even number of references every sample of U is IN for exactly half of
them, and half r does not depend on how many references a sweep asks for (a sweep with 16 reuses the 8 of a
sweep with 8).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .config import TargetSpec
from .errors import ConfigError

_PAIR_KEY = 0x11A  # domain separator of the halves' generator (never the split's seed stream)


def universe(pool_size: int, train_size: int, seed: int) -> np.ndarray:
    """The 2n pool ids references draw their halves from: perm[:2n] of ``make_split``'s permutation."""
    if 2 * train_size > pool_size:
        raise ConfigError(
            f"attacks.lira.references: a reference universe needs 2 x train_size = {2 * train_size} pool "
            f"images, the pool has {pool_size}; lower train_sizes"
        )
    perm = np.random.default_rng(seed).permutation(pool_size)  # the same draw as make_split's
    return perm[: 2 * train_size].astype(np.int64)


def half_mask(train_size: int, seed: int, index: int) -> np.ndarray:
    """Boolean [2n] over the universe: True where reference ``index`` trains (exactly n True)."""
    if index < 0:
        raise ValueError(f"reference index {index} < 0")
    order = np.random.default_rng([seed, _PAIR_KEY, index // 2]).permutation(2 * train_size)
    mask = np.zeros(2 * train_size, bool)
    mask[order[:train_size] if index % 2 == 0 else order[train_size:]] = True
    return mask


def reference_ids(pool_size: int, train_size: int, seed: int, index: int) -> np.ndarray:
    """The pool ids reference ``index`` trains on (n ids of the universe)."""
    return universe(pool_size, train_size, seed)[half_mask(train_size, seed, index)]


def inclusion(pool_size: int, train_size: int, seed: int, sample_ids, count: int) -> np.ndarray:
    """Boolean [count, len(sample_ids)]: whether reference r trained on each sample (ids must lie in U)."""
    u = universe(pool_size, train_size, seed)
    pos = {int(i): k for k, i in enumerate(u)}
    try:
        idx = np.array([pos[int(i)] for i in np.asarray(sample_ids).reshape(-1)], dtype=np.int64)
    except KeyError as e:
        raise ValueError(f"sample {e.args[0]} is outside the reference universe") from None
    return np.array([half_mask(train_size, seed, r)[idx] for r in range(count)], dtype=bool).reshape(count, len(idx))


def reference_specs(spec: TargetSpec, count: int) -> list[TargetSpec]:
    """The ``count`` reference specs of a target: its recipe, ``reference = 0..count-1``."""
    return [dataclasses.replace(spec, reference=r) for r in range(count)]
