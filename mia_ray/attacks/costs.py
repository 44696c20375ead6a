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
# (NFE at 1e-3, exponent) per solver; dop853 measured 572 at 1e-3 and 2186 at 1e-5 on the same model
_NFE_FIT = {"dopri5": (_NFE_AT_1E3, _NFE_EXPONENT), "dop853": (572.0, math.log(2186 / 572) / math.log(100))}


def likelihood_cost(self, params, num_steps: int) -> Cost:
    tol = min(params.rtol, params.atol)
    at_1e3, exponent = _NFE_FIT[getattr(params, "solver", "dopri5")]
    nfe = at_1e3 * (tol / 1e-3) ** -exponent
    return Cost(forward=nfe, backward=nfe * params.probes, estimate=True)
