"""Likelihood attack (Hu & Pang §4.2): bits/dim from the probability-flow ODE; score = -bpd.

log p_0(x) = log p_prior(x(t1)) + int_{t0}^{t1} div f~(x(t), t) dt for dx/dt = f~ (the PF-ODE drift),
with the divergence estimated by Hutchinson's trick (Rademacher probes, fixed per sample for the whole
solve, keyed by sample id). All samples of a batch share each network call, but every sample has its
own adaptive step size and error test (``ode.solve``), so its bits/dim do not depend on its batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import noise as keyed
from ..errors import ConfigError
from .base import ATTACKS, Attack, AttackOutput
from .loss import _MIN_ROWS
from .ode import solve

BITS_OFFSET = 7.0  # data in [-1, 1] is 8-bit data scaled by 1/127.5: + log2(128) per dim (score_sde)


@dataclass
class LikelihoodParams:
    rtol: float = 1e-3  # default chosen by measured accuracy: see benchmarks/attacks.py and the README
    atol: float = 1e-3
    probes: int = 1  # Rademacher probes per sample (averaged)
    seed: int = 0


@ATTACKS.register("likelihood")
class LikelihoodAttack(Attack):
    Params = LikelihoodParams

    def validate(self, params, num_steps, key):
        if not (params.rtol > 0 and params.atol > 0):
            raise ConfigError(f"{key}.rtol and {key}.atol must be > 0 (got {params.rtol}, {params.atol})")
        if params.probes < 1:
            raise ConfigError(f"{key}.probes = {params.probes}; allowed: an integer >= 1")

    def run(self, adapter, images, sample_ids, params):
        bpd = bits_per_dim(adapter, images.to(adapter.device), sample_ids.to(adapter.device), params)
        bpd = bpd.double().cpu().numpy()[None, :]
        return AttackOutput([None], -bpd, bpd)


def bits_per_dim(adapter, x0: torch.Tensor, sample_ids: torch.Tensor, params: LikelihoodParams):
    """Per-sample negative log-likelihood in bits/dim (8-bit scale) by the probability-flow ODE."""
    b, d = x0.shape[0], x0[0].numel()
    probe_ids = torch.arange(params.probes)[None, :]
    keys = keyed.combine(params.seed, sample_ids.to(torch.int64).cpu()[:, None], probe_ids)
    probes = keyed.rademacher(keys.to(x0.device), tuple(x0.shape[1:]), dtype=x0.dtype)  # [B, P, ...]

    def rhs(t, state, rows):
        x = state[:, :d].reshape((len(rows),) + tuple(x0.shape[1:])).detach().requires_grad_(True)
        with torch.enable_grad():
            drift = adapter.ode_drift(x, t)
            div = torch.zeros(len(rows), dtype=state.dtype, device=state.device)
            for p in range(params.probes):
                v = probes[rows, p]
                (vjp,) = torch.autograd.grad(drift, x, v, retain_graph=p < params.probes - 1)
                div = div + (vjp * v).flatten(1).sum(1)
        return torch.cat([drift.detach().flatten(1), (div / params.probes)[:, None]], 1)

    def padded_rhs(t, state, rows):  # fewer than _MIN_ROWS rows: pad by repeating the last (see loss.py)
        n = len(rows)
        if n >= _MIN_ROWS:
            return rhs(t, state, rows)
        pad = torch.arange(_MIN_ROWS, device=state.device).clamp(max=n - 1)
        return rhs(t[pad], state[pad], rows[pad])[:n]

    state0 = torch.cat([x0.flatten(1), torch.zeros(b, 1, dtype=x0.dtype, device=x0.device)], 1)
    t0, t1 = adapter.t_range
    end, _ = solve(padded_rhs, state0, t0, t1, params.rtol, params.atol)
    logp = adapter.prior_logp(end[:, :d].reshape(x0.shape)) + end[:, d]
    return -logp / (d * math.log(2)) + BITS_OFFSET
