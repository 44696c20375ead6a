"""Every ODE pair (dopri5, dop853): scipy's own solver's steps, exact Gaussian bits/dim, batch-invariant rows."""

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from test_attacks import FAMILY_NAMES, GaussianAdapter
from test_likelihood_ddpm import ExactLadderNet, LadderAdapter, exact_bpd_at_step0
from test_likelihood_probes import random_adapter  # noqa: F401 (fixture)

from mia_ray.attacks import ATTACKS
from mia_ray.attacks.likelihood import LikelihoodParams, bits_per_dim, bits_per_dim_probes_nfe
from mia_ray.attacks.ode import SOLVERS, solve
from mia_ray.config import FamilyConfig
from mia_ray.errors import ConfigError
from mia_ray.families import make_family

SCIPY_NAME = {"dopri5": "RK45", "dop853": "DOP853"}
W = 0.5 * torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _f(t, y, rows=None):
    return torch.tanh(y @ W) * torch.cos(3 * t)[:, None] + 0.1 * y


@pytest.mark.parametrize("tol", [1e-8, 1e-3])
@pytest.mark.parametrize("method", list(SOLVERS))
def test_solver_takes_scipys_steps(method, tol):
    """Same tableau, error norm and step control as scipy's solver: the same evaluations and the same answer
    (at a loose tolerance too, where DOP853's error denominator is small: a mutant ignoring it survived)."""
    y0 = torch.randn(3, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y, nfe = solve(_f, y0, 0.0, 2.0, tol, tol, method=method)
    for i in range(3):
        ref = solve_ivp(lambda t, v: _f(torch.tensor([t]), torch.from_numpy(v)[None])[0].numpy(), (0.0, 2.0),
                        y0[i].numpy(), method=SCIPY_NAME[method], rtol=tol, atol=tol)
        assert int(nfe[i]) == ref.nfev
        np.testing.assert_allclose(y[i].numpy(), ref.y[:, -1], rtol=0, atol=tol / 10)  # the same steps: same answer


def test_solver_names_what_is_allowed_and_stops_at_max_steps():
    from mia_ray.attacks.ode import tableau

    with pytest.raises(ConfigError, match=r"^ODE solver 'rk4' unknown; allowed: dopri5, dop853$"):
        tableau("rk4")
    y0 = torch.zeros(2, 6, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"^ODE solver: 2 sample\(s\) did not reach t1 in 3 steps$"):
        solve(_f, y0 + 1, 0.0, 2.0, 1e-10, 1e-10, max_steps=3)


def test_dop853_needs_fewer_evaluations_at_tight_tolerance():
    y0 = torch.randn(8, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    _, n5 = solve(_f, y0, 0.0, 2.0, 1e-8, 1e-8, method="dopri5")
    _, n8 = solve(_f, y0, 0.0, 2.0, 1e-8, 1e-8, method="dop853")
    assert n8.sum() < n5.sum()


@pytest.mark.parametrize("method", list(SOLVERS))
@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_likelihood_matches_exact_gaussian_nll(name, method):
    gen = torch.Generator().manual_seed(0)
    mu = torch.linspace(-0.5, 0.5, 16, dtype=torch.float64).reshape(1, 4, 4)
    x = mu + 0.3 * torch.randn(3, 1, 4, 4, generator=gen, dtype=torch.float64)
    adapter = GaussianAdapter(make_family(FamilyConfig(name=name)), mu, 0.3)
    bpd = bits_per_dim(adapter, x, torch.arange(3), LikelihoodParams(rtol=1e-5, atol=1e-5, solver=method))
    np.testing.assert_allclose(bpd.numpy(), adapter.exact_bpd(x).numpy(), atol=0.01)


@pytest.mark.parametrize("method", list(SOLVERS))
@pytest.mark.parametrize("s", [0.3, 0.01])
def test_ddpm_ladder_likelihood_is_exact(s, method):
    gen = torch.Generator().manual_seed(0)
    mu = torch.linspace(-0.5, 0.5, 16, dtype=torch.float64).reshape(1, 4, 4)
    x = mu + s * torch.randn(3, 1, 4, 4, generator=gen, dtype=torch.float64)
    adapter = LadderAdapter(make_family(FamilyConfig(name="ddpm")), ExactLadderNet(mu, s))
    bpd = bits_per_dim(adapter, x, torch.arange(3), LikelihoodParams(rtol=1e-5, atol=1e-5, solver=method))
    np.testing.assert_allclose(bpd.numpy(), exact_bpd_at_step0(x, mu, s).numpy(), atol=0.01)


@pytest.mark.parametrize("method", list(SOLVERS))
def test_bits_per_dim_and_evaluations_are_bitwise_independent_of_the_batch(random_adapter, method):  # noqa: F811
    """A sample's bits/dim and step sequence are its own on CPU: one batch of 6 equals chunks of 4 and 2 and
    each sample alone (forwards are padded to >= 16 rows, steps rounded from float64)."""
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    ids = torch.arange(6)
    tol = {"dopri5": 1e-2, "dop853": 1e-1}[method]  # rows still take 92-116 / 218-242 evaluations (1e-3: 40 s)
    params = LikelihoodParams(rtol=tol, atol=tol, probes=2, solver=method)
    whole, n_whole = bits_per_dim_probes_nfe(random_adapter, x, ids, params)
    assert len(set(n_whole.tolist())) > 1  # rows really took different step sequences
    parts = [bits_per_dim_probes_nfe(random_adapter, x[sl], ids[sl], params) for sl in (slice(0, 4), slice(4, 6))]
    assert torch.equal(torch.cat([p[0] for p in parts]), whole)
    assert torch.equal(torch.cat([p[1] for p in parts]), n_whole)
    alone, _ = bits_per_dim_probes_nfe(random_adapter, x[5:6], ids[5:6], params)
    assert torch.equal(alone, whole[5:6])


def test_solver_setting_is_checked():
    attack = ATTACKS.get("likelihood")()
    with pytest.raises(ConfigError, match="attacks.likelihood.solver"):
        attack.validate(LikelihoodParams(solver="rk4"), 1000, "attacks.likelihood")
    for method in SOLVERS:
        attack.validate(LikelihoodParams(solver=method), 1000, "attacks.likelihood")


@pytest.mark.parametrize("method", list(SOLVERS))
def test_a_first_step_probe_beyond_t1_that_overflows_does_not_stall_the_solve(method):
    """The starting step probes f at t0 + h0, and h0 may lie beyond t1: where f overflowed there (a VE-SDE with
    sigma_min = 3e-4: sigma(5)^2 is inf in float32) the first step was 0, and the likelihood attack never left
    t0 (100,000 steps of 6 network calls, then RuntimeError, at scoring time). A zero or non-finite first step
    now probes at t1 instead; a finite one is unchanged."""
    calls = torch.zeros(2, dtype=torch.long)

    def f(t, y, rows):  # a slow drift that is infinite beyond t1 = 1
        calls[rows] += 1
        return torch.where(t[:, None] > 1, torch.full_like(y, float("inf")), 1e-3 * torch.ones_like(y))

    y0 = torch.full((2, 4), 50.0)
    y, nfe = solve(f, y0, 0.0, 1.0, 1e-3, 1e-3, max_steps=100, method=method)
    torch.testing.assert_close(y, y0 + 1e-3)
    assert (nfe < 100).all()
    assert torch.equal(nfe, calls)  # the second probe is counted
