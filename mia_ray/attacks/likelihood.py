"""Likelihood attack (Hu & Pang §4.2): bits/dim from the probability-flow ODE; score = -bpd.

log p_0(x) = log p_prior(x(t1)) + int_{t0}^{t1} div f~(x(t), t) dt for dx/dt = f~ (the PF-ODE drift),
with the divergence estimated by Hutchinson's trick (Rademacher probes, fixed per sample for the whole
solve, keyed by sample id). All samples of a batch share each network call, but every sample has its
own adaptive step size and error test (``ode.solve``), so its bits/dim do not depend on its batch.

Each probe's divergence is integrated separately (one state column per probe) on the shared trajectory,
so every sample also gets the standard error of its mean over probes: the estimator's own noise.

On CPU the solve runs on one torch thread (restored afterwards): GroupNorm's CPU backward changes its
last bits with the thread count and the adaptive solver amplifies them (measured up to 0.008 bits/dim
between 1 and 2 threads on the quickstart models). Pinned, a score is bitwise the same in the
in-process loop and in a Ray actor of any size; on 2 cores one thread was no slower at quickstart size.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import noise as keyed
from ..errors import ConfigError
from .base import ATTACKS, Attack, AttackOutput, rows_per_call
from .loss import MIN_ROWS
from .ode import SOLVERS, solve

BITS_OFFSET = 7.0  # data in [-1, 1] is 8-bit data scaled by 1/127.5: + log2(128) per dim (score_sde)


@dataclass
class LikelihoodParams:
    rtol: float = 1e-3  # default chosen by measured accuracy: see benchmarks/attacks.py and the README
    atol: float = 1e-3
    # Rademacher probes per sample (averaged), chosen by measurement (benchmarks/likelihood_probes.py, JSON in
    # docs/bench_likelihood_probes.json): on the quickstart ddpm / vpsde models one probe leaves a per-sample
    # noise of 0.17 / 0.19 bits/dim (member/non-member gap 0.60 / 0.57), and the AUC of 16 + 16 samples
    # moves with the probe seed by +-0.036 / 0.037 (0.86-0.99) and is biased low (mean 0.925 vs 0.96 with 16
    # probes). 4 probes halve the noise (0.087 / 0.094), cut the AUC spread to +-0.007 / 0.016 and remove
    # the bias (0.959 / 0.959), for 2.4x / 2.5x the solve's time (the forward pass is shared; each probe
    # adds a backward pass). 8 probes cost 4.2x / 3.5x for little more.
    probes: int = 4
    seed: int = 0
    # embedded Runge-Kutta pair (ode.SOLVERS), chosen by measurement (benchmarks/attacks.py "likelihood_solvers",
    # docs/bench_attacks.md): on the trained 8x8 DDPM, whose drift is only C1 in t (the ladder's spline knots at
    # every step, a sinusoidal time embedding), the 8th-order pair needs MORE network evaluations per sample
    # for the same accuracy: at 1e-5 dopri5 800 NFE (|dbpd| 1.0e-3 vs a tight solve) vs dop853 2186 (6e-5);
    # at 1e-4 dop853 1196 (1.4e-3); at 1e-3 dopri5 77 (4.3e-3) vs dop853 572 (4.8e-3). So dopri5 at every
    # tolerance; dop853 stays an option for smooth drifts.
    solver: str = "dopri5"


# The probes of a batch are drawn at once ([batch, probes, C, H, W]) and each adds a backward pass per solver step:
# 1e9 passed the door and ran out of memory at scoring time. 8 probes already gained little over 4 (above);
# 64 is 8x that (a 64-image batch of 64 px RGB probes: 0.2 GB).
MAX_PROBES = 64
# The solver's state is float32. Tolerances of 1e39 or more overflow it and 1e-300 underflows to 0: both crashed the
# solve at scoring time (IndexError), after training. Below float32's resolution (eps 1.2e-7) the error test sees
# rounding noise: on 2 samples of the tiny test UNet, 1e-7 / 1e-8 / 1e-9 took 2.9k / 4.7k / 7.5k network
# evaluations (18 / 30 / 75 s) and 1e-10 had not finished after 60 s. At 1 a step may be 100% wrong (bits/dim
# 19.6 vs 15.8 at 1e-7). The default and every tolerance measured in the benchmarks (1e-7 .. 1e-2) lie inside.
MIN_TOL, MAX_TOL = 1e-8, 1.0


@ATTACKS.register("likelihood")
class LikelihoodAttack(Attack):
    Params = LikelihoodParams

    def validate(self, params, num_steps, key):
        for name in ("rtol", "atol"):
            v = getattr(params, name)
            if not math.isinf(v) and not MIN_TOL <= v < MAX_TOL:  # inf: check_numbers ("finite numbers")
                raise ConfigError(f"{key}.{name} = {v}; allowed: a number in [{MIN_TOL:g}, {MAX_TOL:g}) (below, "
                                  "float32 rounding: the solve never ends; at 1 or more it bounds no error)")
        if not 1 <= params.probes <= MAX_PROBES:
            raise ConfigError(f"{key}.probes = {params.probes}; allowed: an integer in [1, {MAX_PROBES}]")
        if params.solver not in SOLVERS:
            raise ConfigError(f"{key}.solver = {params.solver!r}; allowed: {', '.join(SOLVERS)}")

    def run(self, adapter, images, sample_ids, params):
        per_probe = bits_per_dim_probes(adapter, images.to(adapter.device), sample_ids.to(adapter.device), params)
        bpd, se = mean_and_probe_se(per_probe.double().cpu().numpy())
        return AttackOutput([None], -bpd[None, :], bpd[None, :], extra={"probe_se": se[None, :]})


def mean_and_probe_se(per_probe: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over probes [B] and its standard error due to the probes [B] (NaN with one probe)."""
    p = per_probe.shape[1]
    se = per_probe.std(1, ddof=1) / math.sqrt(p) if p > 1 else np.full(len(per_probe), np.nan)
    return per_probe.mean(1), se


def bits_per_dim(adapter, x0: torch.Tensor, sample_ids: torch.Tensor, params: LikelihoodParams):
    """Per-sample negative log-likelihood in bits/dim (8-bit scale) by the probability-flow ODE [B]."""
    return bits_per_dim_probes(adapter, x0, sample_ids, params).mean(1)


def bits_per_dim_probes(adapter, x0: torch.Tensor, sample_ids: torch.Tensor, params: LikelihoodParams):
    """Bits/dim of each probe's divergence estimate on the shared trajectory [B, probes]."""
    return bits_per_dim_probes_nfe(adapter, x0, sample_ids, params)[0]


def bits_per_dim_probes_nfe(adapter, x0: torch.Tensor, sample_ids: torch.Tensor, params: LikelihoodParams):
    """(bits/dim per probe [B, probes], network evaluations per sample [B]).

    The samples are solved in groups of ``rows_per_call`` (all at once on CUDA; on CPU as many as keep the
    network's activations cache-sized); a sample's bits/dim do not depend on its group."""
    rows = max(1, rows_per_call(adapter, len(x0), x0.shape))
    with _one_thread_on_cpu(x0.device):
        parts = [
            _solve_bits_per_dim(adapter, x0[lo : lo + rows], sample_ids[lo : lo + rows], params)
            for lo in range(0, len(x0), rows)
        ]
    if not parts:  # no samples: no rows
        return x0.new_zeros((0, params.probes)), torch.zeros(0, dtype=torch.long, device=x0.device)
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


@contextlib.contextmanager
def _one_thread_on_cpu(device: torch.device):
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _solve_bits_per_dim(adapter, x0, sample_ids, params):
    b, d, n_probes = x0.shape[0], x0[0].numel(), params.probes
    probe_ids = torch.arange(n_probes)[None, :]
    keys = keyed.combine(params.seed, sample_ids.to(torch.int64).cpu()[:, None], probe_ids)
    probes = keyed.rademacher(keys.to(x0.device), tuple(x0.shape[1:]), dtype=x0.dtype)  # [B, P, ...]

    def rhs(t, state, rows):
        x = state[:, :d].reshape((len(rows),) + tuple(x0.shape[1:])).detach().requires_grad_(True)
        with torch.enable_grad():
            drift = adapter.ode_drift(x, t)
            div = []
            # one VJP per probe on the shared forward pass: measured fastest on CPU (a 16x16 UNet, 32 rows:
            # +8 ms per probe on a 20 ms forward+backward; a vmapped batched VJP was 1.5-2.5x and
            # forward-mode jvp 7x slower)
            for p in range(n_probes):
                v = probes[rows, p]
                (vjp,) = torch.autograd.grad(drift, x, v, retain_graph=p < n_probes - 1)
                div.append((vjp * v).flatten(1).sum(1))
        return torch.cat([drift.detach().flatten(1), torch.stack(div, 1).to(state.dtype)], 1)

    def padded_rhs(t, state, rows):  # fewer than MIN_ROWS rows: pad by repeating the last (see loss.py)
        n = len(rows)
        if n >= MIN_ROWS:
            return rhs(t, state, rows)
        pad = torch.arange(MIN_ROWS, device=state.device).clamp(max=n - 1)
        return rhs(t[pad], state[pad], rows[pad])[:n]

    state0 = torch.cat([x0.flatten(1), torch.zeros(b, n_probes, dtype=x0.dtype, device=x0.device)], 1)
    t0, t1 = adapter.t_range
    end, nfe = solve(padded_rhs, state0, t0, t1, params.rtol, params.atol, method=params.solver)
    logp = adapter.prior_logp(end[:, :d].reshape(x0.shape))[:, None] + end[:, d:]
    return -logp / (d * math.log(2)) + BITS_OFFSET, nfe
