"""--estimate's step timing: the loop time of k + 1 steps minus that of 1 step, both after an untimed warm-up."""

import math
import os
from types import SimpleNamespace

import pytest

from mia_ray import sweep_config
from mia_ray.estimate import time_train_steps


def test_a_first_call_warm_up_is_not_taken_for_the_one_step_baseline(monkeypatch):
    """A process's first training loop pays one-off costs. Timed as the 1-step baseline and subtracted, they made
    the step time negative, clamped to 1e-9 s: --estimate in a fresh process billed 0 h of plain training."""
    from mia_ray.training import train as train_module

    calls = []

    def fake_train_target(spec, images, device=None, progress=True):  # 2 s once, then 0.25 s + 10 ms per step
        calls.append(spec.train.steps)
        return SimpleNamespace(train_seconds=(2.0 if len(calls) == 1 else 0.0) + 0.25 + 0.01 * spec.train.steps)

    monkeypatch.setattr(train_module, "train_target", fake_train_target)
    quick = os.path.join(os.path.dirname(__file__), "..", "sweeps", "quickstart.yaml")
    cfg, _ = sweep_config.load(quick, [])
    assert time_train_steps(sweep_config.expand(cfg)[0].spec, math.inf, 3, "cpu") == pytest.approx(0.01)
