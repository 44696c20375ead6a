"""Deterministic DDIM (eta = 0) for every family, from the marginal coefficients alone.

With ``x_u = a_u x0 + s_u eps`` at integer step u (``Family.step_mean_std``) and the network's noise
prediction ``eps_hat = net(c_in(s_u) x_u, tau_u)``, one step from u down to v < u is

    x0_hat = (x_u - s_u eps_hat) / a_u,        x_v = a_v x0_hat + s_v eps_hat,

i.e. the Euler step of the probability-flow ODE ``d(x/a) = eps_hat d(s/a)``: DDIM for VP families and
``x_v = x_u + (s_v - s_u) eps_hat`` for VE ones (a = 1), so one sampler serves ddpm, smld, vpsde and
vesde alike (diffusers' DDIMScheduler covers only the VP-discrete case). The start is the prior at step
T-1, ``x = s_{T-1} eps`` (VP: s = 1 - 2e-5 at the defaults, i.e. N(0, I); VE: N(0, sigma_max^2 I)); the
initial noise of sample i is ``mia_ray.noise.normal`` keyed by (seed, i), so samples do not depend on the
batch. The last step evaluates the network at step 0 and returns its x0_hat, clipped to [-1, 1].
"""

from __future__ import annotations

import contextlib

import torch

from .. import noise as keyed
from ..errors import ConfigError
from ..families import Family

SAMPLER_TAG = 0xDD1  # separates the sampler's keyed noise from the attacks' (same seed, other streams)


def ddim_steps(family: Family, num_steps: int) -> torch.Tensor:
    """``num_steps`` evenly spaced integer steps from T-1 down to 0 (int64, strictly decreasing)."""
    if not isinstance(num_steps, int) or not 2 <= num_steps <= family.T:
        raise ConfigError(f"utility.sampler_steps = {num_steps!r}; allowed: an integer in [2, {family.T}]")
    grid = torch.linspace(family.T - 1, 0, num_steps, dtype=torch.float64).round().long()
    return torch.unique_consecutive(grid)


@torch.no_grad()
def ddim_sample(
    net,
    family: Family,
    n: int,
    shape: tuple[int, ...],
    seed: int = 0,
    num_steps: int = 50,
    batch_size: int = 256,
    device=None,
    amp: bool = False,
    first_id: int = 0,
) -> torch.Tensor:
    """``n`` samples ``[n, *shape]`` in [-1, 1] (float32, on ``device``) of ``eps_hat = net(x, tau)``.

    Sample i's initial noise is keyed by (seed, first_id + i); ``amp`` = bf16 autocast of the network on
    CUDA only (the update itself stays float32).
    """
    if n < 1 or batch_size < 1:
        raise ConfigError(f"utility: n = {n!r}, batch_size = {batch_size!r}; allowed: positive integers")
    device = torch.device(device) if device is not None else torch.device("cpu")
    steps = ddim_steps(family, num_steps)
    a, s = (c.double() for c in family.step_mean_std(steps))
    tau = family.tau(family.step_time(steps)).float()
    c_in = family.c_in(s).float()
    a, s = a.float(), s.float()
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if amp and device.type == "cuda" else contextlib.nullcontext()
    out = []
    for lo in range(0, n, batch_size):
        ids = torch.arange(first_id + lo, first_id + min(n, lo + batch_size), dtype=torch.int64)
        x = keyed.normal(keyed.combine(seed, ids, SAMPLER_TAG), tuple(shape)).to(device) * s[0]
        for k in range(len(steps)):
            with ctx:
                eps = net(c_in[k] * x, tau[k].expand(len(ids)).to(device)).float()
            x0 = (x - s[k] * eps) / a[k]
            if k + 1 < len(steps):
                x = a[k + 1] * x0 + s[k + 1] * eps
        out.append(x0.clamp_(-1.0, 1.0))
    return torch.cat(out)


__all__ = ["SAMPLER_TAG", "ddim_sample", "ddim_steps"]
