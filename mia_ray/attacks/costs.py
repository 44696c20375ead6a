"""The likelihood attack's declared cost (kept here while ``likelihood.py`` is being reworked elsewhere).

An adaptive ODE solve has no fixed cost: the estimate interpolates the network evaluations (NFE) per
sample measured by ``benchmarks/attacks.py`` on the tiny digits DDPM (docs/bench_attacks.md: ~95 at
rtol = atol = 1e-3, ~860 at 1e-5, i.e. NFE ~ 95 (tol / 1e-3)^-0.48, tol = the tighter of rtol, atol);
every evaluation is 1 forward + 1 vector-Jacobian (backward) pass per Hutchinson probe.
"""

from __future__ import annotations

import math

from .base import Cost

_NFE_AT_1E3 = 95.0
_NFE_EXPONENT = math.log(860 / 95) / math.log(100)  # 0.48, from the two measured tolerances


def likelihood_cost(self, params, num_steps: int) -> Cost:
    tol = min(params.rtol, params.atol)
    nfe = _NFE_AT_1E3 * (tol / 1e-3) ** -_NFE_EXPONENT
    return Cost(forward=nfe, backward=nfe * params.probes, estimate=True)
