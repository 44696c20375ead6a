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


def test_cpu_timings_run_at_the_threads_of_the_sweeps_tasks(monkeypatch):
    """Training is timed at resources.train_cpus threads and the passes at scorer_cpus (what the tasks run with),
    not at every core of this machine; the threads are restored after."""
    import torch

    from mia_ray import estimate

    seen = {}
    monkeypatch.setattr(estimate, "time_train_steps", lambda *a, **k: seen.setdefault("train", torch.get_num_threads())
                        and 0.5)
    monkeypatch.setattr(estimate, "time_passes", lambda *a, **k: seen.setdefault("passes", torch.get_num_threads())
                        and (1e-3, 2e-3))
    quick = os.path.join(os.path.dirname(__file__), "..", "sweeps", "quickstart.yaml")
    cfg, _ = sweep_config.load(quick, ["resources.train_cpus=3", "resources.scorer_cpus=2"])
    before = torch.get_num_threads()
    t = estimate.measure(cfg, sweep_config.expand(cfg), device="cpu")
    assert seen == {"train": 3, "passes": 2} and torch.get_num_threads() == before
    assert t.device == "cpu (3 thread(s) per training task, 2 per scorer)" and t.train_dp_s_per_step == 0.5
