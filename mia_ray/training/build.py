"""Get a target: the stored one, or train it on its members and store it (training and storage meet here)."""

from __future__ import annotations

import logging
import math
import os

import numpy as np

from ..config import TargetSpec
from ..data import make_split, open_source
from ..references import reference_ids
from .store import Target, TargetStore
from .train import train_target

log = logging.getLogger("mia_ray")


def get_or_train(
    store: TargetStore, spec: TargetSpec, images_fn=None, device=None, progress: bool = True
) -> Target:
    """``spec``'s stored target, or train one (on ``images_fn()``, default its members) and store it."""
    found = store.get(spec)
    if found is not None:
        run = found.meta.get("train_steps", spec.train.steps)
        if math.isfinite(spec.dp.epsilon) and run < spec.train.steps:
            log.warning("target %s: stored by a mia_ray that skipped empty Poisson batches (%d of %d rounds "
                        "stepped), so its epsilon_spent under-counts the rounds run; delete %s to retrain it",
                        found.target_id, run, spec.train.steps, os.path.dirname(found.checkpoint))
        store.clear_stale_temps(found.target_id)  # a concurrent writer of it (a shared reference) killed mid-save
        return found
    images = images_fn() if images_fn is not None else member_images(spec)
    heldout = heldout_images(spec) if images_fn is None else None
    res = train_target(spec, images, device=device, progress=progress, heldout=heldout)
    stats = {
        "epsilon_spent": res.epsilon_spent,
        "noise_multiplier": res.noise_multiplier,
        "final_loss": res.final_loss,  # NaN for DP targets: an un-noised statistic of the members
        "train_steps": res.train_steps,
        "train_seconds": res.train_seconds,
        "params": res.params,
        "heldout_loss": res.heldout_loss,
        "accountant": res.accountant,
        "epsilon_rdp": res.epsilon_rdp,
        "epsilon_prv": res.epsilon_prv,
    }
    store.put(spec, res.unet, stats)
    target = store.get(spec)
    target.trained_now = True
    return target


def member_images(spec: TargetSpec) -> np.ndarray:
    """The training members of ``spec``: the first ``train_size`` ids of its seeded split, or for a LiRA
    reference model its half of the universe (``mia_ray.references``); then its included canaries, when it
    has any (``mia_ray.canaries.training_ids``)."""
    source = open_source(spec.data)
    if spec.reference is not None:
        return source.load(reference_ids(len(source), spec.train_size, spec.seed, spec.reference))
    if spec.canaries is not None:
        from ..canaries import training_ids

        return source.load(training_ids(spec, len(source)))
    # members are the first train_size of the permutation whatever eval_size is
    split = make_split(len(source), spec.train_size, 1, spec.seed, source.describe())
    return source.load(split.members)


HELDOUT_MAX = 1024


def heldout_loss_ids(spec: TargetSpec, pool_size: int) -> np.ndarray:
    """Pool ids of the non-members for ``heldout_loss``: the ids after the members in the split's permutation
    (the same sequence the evaluation non-members are drawn from), up to min(train_size, HELDOUT_MAX); for a
    LiRA reference the ids after its universe (the target's members and evaluation non-members, half of which
    it trains on), as many as the pool leaves up to that; included canaries left out."""
    n = spec.train_size
    start = 2 * n if spec.reference is not None else n  # a reference's universe is perm[:2n] of the same split
    k = min(n, HELDOUT_MAX, pool_size - start)
    if k < 1:
        return np.zeros(0, np.int64)
    ids = make_split(pool_size, start, k, spec.seed).nonmembers
    if spec.canaries is not None:  # included canaries are trained on: never "held out" (issue 13)
        from ..canaries import canaries_of

        canary, included = canaries_of(spec, pool_size)
        ids = ids[~np.isin(ids, canary[included])]
    return ids


def heldout_images(spec: TargetSpec) -> np.ndarray:
    """The images of ``heldout_loss_ids`` (empty [0, C, H, W] when the pool leaves none)."""
    source = open_source(spec.data)
    ids = heldout_loss_ids(spec, len(source))
    if not len(ids):
        return np.zeros((0, spec.data.channels, spec.data.resolution, spec.data.resolution), np.float32)
    return source.load(ids)
