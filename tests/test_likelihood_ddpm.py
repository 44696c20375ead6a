"""The DDPM family's continuous view is its trained ladder: exact answers on Gaussian data.

The network of a DDPM is trained at the integer steps k of the ladder (std sqrt(1 - alpha_bar_k)) with
time input k. Here the network is the exact noise predictor of Gaussian data ~ N(mu, s^2 I) on that
ladder (recomputed from the definition with numpy, log(alpha_bar) interpolated linearly between steps as
a smooth time embedding would), and the likelihood goes through the family's own ``ode_drift``: the bits
per dim must be the exact log-density of the ladder's marginal at step 0.
"""

import math

import numpy as np
import pytest
import torch

from mia_ray.attacks.likelihood import BITS_OFFSET, LikelihoodParams, bits_per_dim
from mia_ray.config import FamilyConfig
from mia_ray.families import make_family

T = 1000


def ladder_abar() -> torch.Tensor:
    betas = np.linspace(0.1 / T, 20 / T, T)
    return torch.from_numpy(np.cumprod(1 - betas))


class ExactLadderNet:
    """eps_hat(x, tau) of data N(mu, s^2 I) perturbed on the DDPM ladder at (fractional) step tau."""

    def __init__(self, mu, s):
        self.mu, self.s2 = mu, s * s
        self.log_abar = ladder_abar().log()

    def __call__(self, x, tau):
        tau = tau.double().clamp(0, T - 1)
        k = tau.floor().clamp(max=T - 2).long()
        u = tau - k
        abar = ((1 - u) * self.log_abar[k] + u * self.log_abar[k + 1]).exp().reshape(-1, 1, 1, 1)
        a, var_noise = abar.sqrt(), 1 - abar
        return (x.double() - a * self.mu) * var_noise.sqrt() / (abar * self.s2 + var_noise)


class LadderAdapter:
    """A ModelAdapter whose PF-ODE drift is the family's own, around the exact ladder network."""

    def __init__(self, family, net):
        self.family, self.net = family, net
        self.num_steps, self.device, self.t_range = family.T, torch.device("cpu"), family.t_range

    def ode_drift(self, x, t):
        return self.family.ode_drift(self.net, x, t)

    def prior_logp(self, z):
        return self.family.prior_logp(z)

    def loss(self, x0, steps, noise):
        raise NotImplementedError


def exact_bpd_at_step0(x, mu, s):
    abar0 = ladder_abar()[0]
    var = abar0 * s * s + 1 - abar0
    d = x[0].numel()
    nll = 0.5 * d * torch.log(2 * math.pi * var) + 0.5 * (x - abar0.sqrt() * mu).flatten(1).pow(2).sum(1) / var
    return nll / (d * math.log(2)) + BITS_OFFSET


@pytest.mark.parametrize("s", [0.3, 0.03, 0.01])
def test_ddpm_likelihood_matches_exact_gaussian_nll_of_the_ladder(s):
    """Measured max errors (bits/dim, rtol = atol = 1e-5) at s = 0.3 / 0.03 / 0.01: 0.0015 / 0.0015 / 0.0017;
    with the continuous VP std in place of the ladder's (the former view) 0.005 / 0.14 / 0.29."""
    gen = torch.Generator().manual_seed(0)
    mu = torch.linspace(-0.5, 0.5, 16, dtype=torch.float64).reshape(1, 4, 4)
    x = mu + s * torch.randn(3, 1, 4, 4, generator=gen, dtype=torch.float64)
    adapter = LadderAdapter(make_family(FamilyConfig(name="ddpm")), ExactLadderNet(mu, s))
    bpd = bits_per_dim(adapter, x, torch.arange(3), LikelihoodParams(rtol=1e-5, atol=1e-5))
    np.testing.assert_allclose(bpd.numpy(), exact_bpd_at_step0(x, mu, s).numpy(), atol=0.01)


def test_ddpm_continuous_view_is_the_ladder_at_every_step():
    fam = make_family(FamilyConfig(name="ddpm"))
    steps = torch.arange(T)
    mean, std = fam.mean_std(fam.step_time(steps))
    ladder_mean, ladder_std = fam.step_mean_std(steps)  # what the network was trained at
    np.testing.assert_allclose(mean.numpy(), ladder_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(std.numpy(), ladder_std.numpy(), rtol=1e-9)
    abar = ladder_abar()  # diffusers builds the ladder in float32: 1 - alpha_bar_0 = 1e-4 to ~6e-4
    np.testing.assert_allclose(std.numpy(), (1 - abar).sqrt().numpy(), rtol=1e-3)
    assert fam.tau(fam.step_time(steps)).tolist() == pytest.approx(steps.double().tolist(), abs=1e-9)
    assert fam.t_range == (0.0, 1.0)  # the ODE starts at step 0, the least noise the network was trained at


@pytest.mark.parametrize("t", [0.0, 1e-4, 0.3, 0.5004, 1.0])
def test_ddpm_drift_is_the_derivative_of_its_marginal(t):
    """beta(t) = -d log(alpha_bar)/dt, continuous in t (one-sided at the ends)."""
    fam = make_family(FamilyConfig(name="ddpm"))
    h = 1e-7
    lo, hi = max(t - h, 0.0), min(t + h, 1.0)
    tt = torch.tensor([lo, hi], dtype=torch.float64)
    log_m2 = 2 * fam.mean_std(tt)[0].log()
    beta_fd = -(log_m2[1] - log_m2[0]) / (hi - lo)
    f, g2 = fam.drift_diffusion2(torch.ones(1, dtype=torch.float64), torch.tensor(t, dtype=torch.float64))
    assert g2.item() == pytest.approx(beta_fd.item(), rel=1e-5)
    assert f.item() == pytest.approx(-0.5 * g2.item(), rel=1e-12)
    # close to the VP SDE the ladder discretises (-log(1 - b) = b + b^2/2 + ... per step of b <= 0.02;
    # step k sits about half a step after t = k / (T - 1))
    assert g2.item() == pytest.approx(0.1 + t * 19.9, rel=0.02, abs=0.02)
