"""Safety net for training (issue 10 item 8): the privacy accounting, the EMA and the members trained on.

Each test recomputes its expectation independently of mia_ray's code path: epsilon from Opacus's RDP
analysis functions, the EMA from its recurrence over separately trained runs, the members from the seeded
split. Every spec here uses a seed other than 0 so that a seed dropped on the way cannot pass unnoticed.
"""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import tiny_spec
from opacus.accountants.analysis import rdp as rdp_analysis

import mia_ray.training.build as build_module
import mia_ray.training.train as train_module
from mia_ray.config import DPConfig
from mia_ray.data import make_split, open_source
from mia_ray.training import TargetStore, get_or_train, train_target


def _spec(seed=3, steps=5, batch_size=64, **kw):
    spec = tiny_spec(steps=steps, seed=seed, **kw)
    return replace(spec, train=replace(spec.train, batch_size=batch_size))


# --- differential privacy ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dp_run(digits64):
    """5 DP-SGD steps at sampling rate 16/64, with noise calibrated by Opacus for the 2 planned epochs (8
    steps): the budget actually spent is therefore clearly below the requested epsilon."""
    spec = replace(_spec(steps=5, batch_size=16), dp=DPConfig(epsilon=8.0, delta=1e-5))
    return spec, train_target(spec, digits64, device="cpu", progress=False)


def _rdp_epsilon(noise_multiplier: float, q: float, steps: int, delta: float) -> float:
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))  # Opacus' RDP default orders
    rdp = rdp_analysis.compute_rdp(q=q, noise_multiplier=noise_multiplier, steps=steps, orders=orders)
    eps, _ = rdp_analysis.get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    return float(eps)


def test_epsilon_spent_is_the_accountants_value(dp_run):
    spec, res = dp_run
    assert res.train_steps == 5
    assert res.noise_multiplier > 0
    q = spec.train.batch_size / spec.train_size
    expected = _rdp_epsilon(res.noise_multiplier, q, res.train_steps, spec.dp.delta)
    assert math.isclose(res.epsilon_spent, expected, rel_tol=1e-9), (res.epsilon_spent, expected)
    assert 0 < res.epsilon_spent < spec.dp.epsilon - 0.5  # 5 of the 8 planned steps


def test_noise_is_calibrated_to_the_requested_epsilon(dp_run):
    """Over the planned 2 epochs (8 steps) the recorded noise multiplier spends the requested epsilon
    (Opacus calibrates to within 0.01), never more."""
    spec, res = dp_run
    planned = _rdp_epsilon(res.noise_multiplier, spec.train.batch_size / spec.train_size, 8, spec.dp.delta)
    assert spec.dp.epsilon - 0.05 <= planned <= spec.dp.epsilon


def test_plain_training_spends_no_budget(digits64):
    res = train_target(_spec(steps=1), digits64, device="cpu", progress=False)
    assert res.epsilon_spent == math.inf and res.noise_multiplier == 0.0 and res.train_steps == 1


# --- EMA -------------------------------------------------------------------------------------------------


def _weights(unet) -> dict:
    return {k: v.detach().clone() for k, v in unet.state_dict().items()}


def test_ema_weights_follow_the_recurrence(digits64):
    """EMA of decay d over 3 steps: e_0 = w_0, e_i = d e_{i-1} + (1 - d) w_i, where w_i are the raw weights
    after i steps (a run of i steps without EMA: EMA draws no random numbers, so the runs coincide)."""
    decay = 0.6
    raw = [_weights(train_target(_spec(steps=i), digits64, device="cpu", progress=False).unet)
           for i in range(4)]
    got = _weights(train_target(replace(_spec(steps=3), train=replace(_spec(steps=3).train, ema_decay=decay)),
                                digits64, device="cpu", progress=False).unet)
    params = [k for k in got if got[k].is_floating_point() and not torch.equal(raw[0][k], raw[3][k])]
    assert len(params) > 10  # training moved most tensors
    for k in params:
        ema = raw[0][k].double()
        for w in raw[1:]:
            ema = decay * ema + (1 - decay) * w[k].double()
        np.testing.assert_allclose(got[k].double().numpy(), ema.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
        assert not torch.equal(got[k], raw[3][k]) and not torch.equal(got[k], raw[0][k]), k


# --- members ---------------------------------------------------------------------------------------------


class _Captured(Exception):
    pass


def _captured_training_images(monkeypatch, spec, tmp_path) -> np.ndarray:
    """The images the store hands to training for ``spec`` (training itself is cut short)."""
    seen = {}

    def capture(spec_, images, **kw):
        seen["images"] = np.array(images)
        raise _Captured

    monkeypatch.setattr(build_module, "train_target", capture)
    with pytest.raises(_Captured):
        get_or_train(TargetStore(str(tmp_path)), spec, progress=False)
    return seen["images"]


def test_store_trains_on_the_members_of_the_targets_seed(monkeypatch, tmp_path):
    spec = _spec(seed=7, train_size=64)
    images = _captured_training_images(monkeypatch, spec, tmp_path)
    source = open_source(spec.data)
    split = make_split(len(source), spec.train_size, 1, spec.seed, source.describe())
    np.testing.assert_array_equal(images, source.load(split.members))
    seed0 = make_split(len(source), spec.train_size, 1, 0, source.describe())
    assert not np.array_equal(np.sort(split.members), np.sort(seed0.members))  # the test can fail


# --- the optimiser's knobs and the data order (mutants that survived: docs/mutation.md) ------------------


def _train(digits64, **train_kw):
    spec = _spec(steps=train_kw.pop("steps", 1))
    spec = replace(spec, train=replace(spec.train, **train_kw))
    return train_target(spec, digits64, device="cpu", progress=False).unet


def _max_change(a, b) -> float:
    wa, wb = _weights(a), _weights(b)
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa if wa[k].is_floating_point())


def test_warmup_scales_the_first_step(digits64):
    """Adam's first update is lr * sign(grad) (to within its epsilon): the largest weight change of one
    step is lr without warm-up and lr / 10 with a 10-step linear warm-up."""
    init, lr = _train(digits64, steps=0), _spec().train.lr
    assert _max_change(_train(digits64, steps=1), init) == pytest.approx(lr, rel=0.02)
    assert _max_change(_train(digits64, steps=1, warmup=10), init) == pytest.approx(lr / 10, rel=0.02)


def test_gradient_clipping_is_applied(digits64):
    clipped, free = _train(digits64, steps=3, grad_clip=1e-3), _train(digits64, steps=3, grad_clip=0.0)
    assert _max_change(clipped, free) > 1e-5


def test_every_epoch_sees_every_member_once(monkeypatch, digits64):
    """64 members in batches of 16: each run of 4 steps draws every member exactly once."""
    batches = []
    real = train_module.make_family

    def spy_family(cfg):
        fam = real(cfg)
        loss = fam.loss
        fam.loss = lambda net, x0, *a: batches.append(x0.detach().clone()) or loss(net, x0, *a)
        return fam

    monkeypatch.setattr(train_module, "make_family", spy_family)
    res = train_target(_spec(steps=8, batch_size=16), digits64, device="cpu", progress=False)
    assert [len(b) for b in batches] == [16] * 8
    flat = digits64.reshape(64, -1)
    for epoch in (batches[:4], batches[4:]):
        drawn = torch.cat(epoch).reshape(64, -1).numpy()
        rows = sorted(int(np.flatnonzero((flat == x).all(1))[0]) for x in drawn)
        assert rows == list(range(64))
    assert res.unet.config.sample_size == digits64.shape[-1]


def test_dp_training_is_deterministic(dp_run, digits64):
    """Same spec, same weights: the DP noise and the Poisson batches are seeded."""
    spec, res = dp_run
    again = train_target(spec, digits64, device="cpu", progress=False)
    assert _max_change(again.unet, res.unet) == 0.0
    assert again.epsilon_spent == res.epsilon_spent
