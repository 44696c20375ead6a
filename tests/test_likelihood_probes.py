"""Likelihood attack: the probe noise it reports is the Hutchinson estimator's true noise, more probes
shrink it, and scores do not depend on the torch thread count."""

import math

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL

from mia_ray.attacks import ATTACKS, DiffusionAdapter
from mia_ray.attacks.likelihood import LikelihoodParams, bits_per_dim, bits_per_dim_probes
from mia_ray.config import FamilyConfig
from mia_ray.families import make_family
from mia_ray.models import build_unet

D = 16


class LinearDriftAdapter:
    """dx/dt = A x on t in [0, 1] with a fixed non-symmetric A: the divergence is tr(A), and one
    Rademacher probe v estimates it by v^T A v, whose variance is sum_{i<j} (A_ij + A_ji)^2."""

    def __init__(self):
        g = torch.Generator().manual_seed(3)
        self.A = -0.5 * torch.eye(D, dtype=torch.float64) + 0.3 * torch.randn(D, D, generator=g, dtype=torch.float64)
        self.num_steps, self.device, self.t_range = 1000, torch.device("cpu"), (0.0, 1.0)

    def ode_drift(self, x, t):
        return (x.flatten(1) @ self.A.T).reshape(x.shape)

    def prior_logp(self, z):
        return -0.5 * z.flatten(1).pow(2).sum(1)

    def loss(self, x0, steps, noise):
        raise NotImplementedError

    def probe_std_bpd(self) -> float:
        s = self.A + self.A.T
        var = torch.triu(s, diagonal=1).pow(2).sum().item()  # per unit time; the span is 1
        return math.sqrt(var) / (D * math.log(2))


def test_reported_probe_noise_is_the_estimators_noise():
    adapter = LinearDriftAdapter()
    x = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    params = LikelihoodParams(rtol=1e-6, atol=1e-6, probes=8)
    out = ATTACKS.get("likelihood")().run(adapter, x, torch.arange(64), params)
    se = out.extra["probe_se"][0]
    predicted = adapter.probe_std_bpd() / math.sqrt(8)
    # the mean of 64 per-sample squared SEs (8 probes each, 7 d.o.f.) is within ~7 % (1 sd) of the truth
    assert np.sqrt(np.mean(se**2)) == pytest.approx(predicted, rel=0.25)
    per_probe = bits_per_dim_probes(adapter, x, torch.arange(64), params).numpy()
    np.testing.assert_allclose(out.statistic[0], per_probe.mean(1), rtol=0, atol=1e-12)
    # unbiased: log p(x) = log prior(expm(A) x) + tr(A) exactly; errors are ~N(0, predicted^2)
    end = x.flatten(1) @ torch.linalg.matrix_exp(adapter.A).T
    exact = -(adapter.prior_logp(end) + torch.trace(adapter.A)).numpy() / (D * math.log(2)) + 7.0
    z = (out.statistic[0] - exact) / predicted
    assert np.abs(z).max() < 4 and abs(z.mean()) < 4 / math.sqrt(64) and 0.7 < z.std() < 1.3


def test_one_probe_reports_no_standard_error_and_more_probes_shrink_the_noise():
    adapter = LinearDriftAdapter()
    x = torch.randn(32, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    attack = ATTACKS.get("likelihood")()
    one = attack.run(adapter, x, torch.arange(32), LikelihoodParams(probes=1))
    assert np.isnan(one.extra["probe_se"]).all()
    spread = {}
    for p in (1, 4):
        runs = [attack.run(adapter, x, torch.arange(32), LikelihoodParams(probes=p, seed=s)).statistic[0]
                for s in range(6)]
        spread[p] = np.std(runs, axis=0, ddof=1).mean()
    assert spread[4] < 0.7 * spread[1]  # ~1/2 expected


# --- thread count ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_adapter():
    """An untrained tiny UNet with perturbed weights (non-trivial GroupNorm affines): its CPU backward
    differs in the last bits between 1 and 2 torch threads."""
    torch.manual_seed(0)
    unet = build_unet(TINY_MODEL, 8, 1)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return DiffusionAdapter(make_family(FamilyConfig(name="vpsde")), unet)


def _vjp(adapter, x, threads):
    torch.set_num_threads(threads)
    xr = x.clone().requires_grad_(True)
    with torch.enable_grad():
        y = adapter.ode_drift(xr, torch.full((len(x),), 0.3))
        (g,) = torch.autograd.grad(y, xr, torch.ones_like(y))
    return g


def test_likelihood_scores_are_bitwise_independent_of_the_thread_count(random_adapter):
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    before = torch.get_num_threads()
    try:
        # precondition: the network's backward alone does depend on the thread count (so this can fail)
        assert not torch.equal(_vjp(random_adapter, x, 1), _vjp(random_adapter, x, 2))
        params = LikelihoodParams(rtol=1e-2, atol=1e-2, probes=2)
        scores = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            scores[threads] = bits_per_dim(random_adapter, x[:4], torch.arange(4), params)
            assert torch.get_num_threads() == threads  # restored after the solve
        assert torch.equal(scores[1], scores[2])
    finally:
        torch.set_num_threads(before)


def test_thread_count_is_restored_when_the_solve_fails(random_adapter):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError):
            bits_per_dim(random_adapter, torch.full((2, 1, 7, 7), float("nan")), torch.arange(2),
                         LikelihoodParams(rtol=1e-2, atol=1e-2))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
