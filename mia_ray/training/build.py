"""Get a target: the stored one, or train it on its members and store it (training and storage meet here)."""

from __future__ import annotations

import numpy as np

from ..config import TargetSpec
from ..data import make_split, open_source
from ..references import reference_ids
from .store import Target, TargetStore
from .train import train_target


def get_or_train(
    store: TargetStore, spec: TargetSpec, images_fn=None, device=None, progress: bool = True
) -> Target:
    """``spec``'s stored target, or train one (on ``images_fn()``, default its members) and store it."""
    found = store.get(spec)
    if found is not None:
        return found
    images = images_fn() if images_fn is not None else member_images(spec)
    res = train_target(spec, images, device=device, progress=progress)
    stats = {
        "epsilon_spent": res.epsilon_spent,
        "noise_multiplier": res.noise_multiplier,
        "final_loss": res.final_loss,
        "train_steps": res.train_steps,
        "train_seconds": res.train_seconds,
        "params": res.params,
    }
    store.put(spec, res.unet, stats)
    target = store.get(spec)
    target.trained_now = True
    return target


def member_images(spec: TargetSpec) -> np.ndarray:
    """The training members of ``spec``: the first ``train_size`` ids of its seeded split, or for a LiRA
    reference model its half of the universe (``mia_ray.references``)."""
    source = open_source(spec.data)
    if spec.reference is not None:
        return source.load(reference_ids(len(source), spec.train_size, spec.seed, spec.reference))
    # members are the first train_size of the permutation whatever eval_size is
    split = make_split(len(source), spec.train_size, 1, spec.seed, source.describe())
    return source.load(split.members)
