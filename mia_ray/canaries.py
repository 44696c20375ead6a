"""Which pool images a target trains on beyond its members (canaries), and which images are held out for utility.

Both are pure functions of the pool size and the target spec (plus the sweep's largest training set for the
held-out images), so the training task, the trial and a user re-checking the results compute the same ids:

* **canaries** (``spec.canaries = CanarySpec(m, eval_size)``): ``audit.canary_inclusion`` over the pool ids
  outside the split's members and its ``eval_size`` evaluation non-members; the included ones are added to the
  members for training. The rest of the split (members, evaluation members and non-members) is unchanged.
* **utility held-out** images: the seed's split permutation from position ``heldout_from`` (the sweep's largest
  training set) on, this target's canaries left out, the first ``count``. So they are members of no target of
  the sweep, and the same set for every target of the seed without canaries (a canary target swaps at most m).
"""

from __future__ import annotations

import numpy as np

from .audit import canary_candidates, canary_inclusion
from .config import TargetSpec
from .data import make_split


def canaries_of(spec: TargetSpec, pool_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(canary ids sorted, included mask) of ``spec``; empty arrays when it has no canaries."""
    if spec.canaries is None:
        return np.zeros(0, np.int64), np.zeros(0, bool)
    split = make_split(pool_size, spec.train_size, spec.canaries.eval_size, spec.seed)
    candidates = canary_candidates(pool_size, split.members, split.nonmembers)
    return canary_inclusion(candidates, spec.canaries.m, spec.seed)


def training_ids(spec: TargetSpec, pool_size: int) -> np.ndarray:
    """The pool ids ``spec`` trains on: its members, then its included canaries (sorted)."""
    members = make_split(pool_size, spec.train_size, 1, spec.seed).members
    ids, included = canaries_of(spec, pool_size)
    return np.concatenate([members, ids[included]]).astype(np.int64)


def heldout_count(pool_size: int, heldout_from: int, wanted: int, canaries: int = 0) -> int:
    """How many held-out images there are for every target: ``wanted``, capped by what the pool leaves."""
    return int(max(0, min(wanted, pool_size - heldout_from - canaries)))


def heldout_ids(spec: TargetSpec, pool_size: int, heldout_from: int, count: int) -> np.ndarray:
    """The utility held-out ids of ``spec`` (module docstring), in permutation order."""
    perm = np.random.default_rng(spec.seed).permutation(pool_size)[heldout_from:]  # make_split's permutation
    canary, _ = canaries_of(spec, pool_size)
    perm = perm[~np.isin(perm, canary)]
    if len(perm) < count:
        raise ValueError(f"utility: {count} held-out images asked, the pool leaves {len(perm)}")
    return perm[:count].astype(np.int64)


__all__ = ["canaries_of", "heldout_count", "heldout_ids", "training_ids"]
