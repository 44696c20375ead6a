"""Batched embedded Runge-Kutta solvers (Dormand-Prince 5(4) and 8(5,3)) with one adaptive step size per sample.

Why not torchdiffeq's dopri5 (which we used first): it shares one step size across the batch, so a
sample's bits/dim depended on which other samples were in its batch (measured: up to 0.01 bpd between
batchings at rtol = atol = 1e-3 on a trained 8x8 DDPM) and scores changed with Ray's batch boundaries.
Here every sample has its own time, step size and error test, exactly like the seed paper's
one-image-at-a-time RK45, while all samples still share each network call. A sample's result is
therefore independent of its batch (tests/test_attacks.py and tests/test_ode_solvers.py check it).

Solvers (``SOLVERS``): ``dopri5`` (6 evaluations per step) and ``dop853`` (Dormand & Prince's 8th-order
pair with the 5th- and 3rd-order error estimates of Hairer, Norsett & Wanner, 12 evaluations per step).
Both evaluate their last stage at the new point, which is the next step's first stage (FSAL).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import ConfigError


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean(1).sqrt()


def _pow(x: torch.Tensor, e: float) -> torch.Tensor:
    """``x ** e`` whose every element is independent of the tensor's length: float32 ``pow`` on CPU differs
    in the last bit between torch's vectorised loop body and its scalar tail, which made a row's step size
    (and through it its bits/dim) depend on how many rows were active. Rounded from float64 it does not."""
    return (x.double() ** e).to(x.dtype)


def _combine(coefs, ks):
    """sum_i coefs[i] * ks[i] over the non-zero coefficients, in order (a fixed order: same bits every time)."""
    return sum(c * k for c, k in zip(coefs, ks, strict=False) if c != 0.0)


@dataclass(frozen=True)
class Tableau:
    """An explicit FSAL pair: stage s is f(t + c[s] h, y + h sum_j a[s][j] k_j); its last row of ``a`` is the
    propagated solution (c = 1), so its last stage is f at the new point. ``error_norm(h, ks, scale)`` is the
    per-row scaled error (accept when <= 1); ``error_order`` sets the step-size exponent -1 / (order + 1)."""

    c: tuple
    a: tuple
    error_order: int
    error_norm: Callable

    @property
    def evals_per_step(self) -> int:
        return len(self.c) - 1


# --- Dormand & Prince (1980) 5(4); E = B5 - B4 -------------------------------------------------------------
_DP5_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_DP5_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_DP5_E = tuple(b5 - b4 for b5, b4 in zip(_DP5_A[6] + (0.0,), _DP5_B4, strict=True))


def _dopri5_error(h, ks, scale):
    return _rms(h[:, None] * _combine(_DP5_E, ks) / scale)


DOPRI5 = Tableau(c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0), a=_DP5_A, error_order=4, error_norm=_dopri5_error)

# --- Dormand & Prince 8(5,3) (Hairer, Norsett & Wanner, DOP853): the coefficients of its published Fortran
# code as tabulated in scipy/integrate/_ivp/dop853_coefficients.py (stage 12 = the 8th-order solution) ------
_DOP853_C = (
    0.0, 0.526001519587677318785587544488e-01, 0.789002279381515978178381316732e-01,
    0.118350341907227396726757197510, 0.281649658092772603273242802490, 0.333333333333333333333333333333,
    0.25, 0.307692307692307692307692307692, 0.651282051282051282051282051282, 0.6,
    0.857142857142857142857142857142, 1.0, 1.0,
)
_DOP853_A = (
    (),
    (5.26001519587677318785587544488e-2,),
    (1.97250569845378994544595329183e-2, 5.91751709536136983633785987549e-2),
    (2.95875854768068491816892993775e-2, 0.0, 8.87627564304205475450678981324e-2),
    (2.41365134159266685502369798665e-1, 0.0, -8.84549479328286085344864962717e-1,
     9.24834003261792003115737966543e-1),
    (3.7037037037037037037037037037e-2, 0.0, 0.0, 1.70828608729473871279604482173e-1,
     1.25467687566822425016691814123e-1),
    (3.7109375e-2, 0.0, 0.0, 1.70252211019544039314978060272e-1, 6.02165389804559606850219397283e-2,
     -1.7578125e-2),
    (3.70920001185047927108779319836e-2, 0.0, 0.0, 1.70383925712239993810214054705e-1,
     1.07262030446373284651809199168e-1, -1.53194377486244017527936158236e-2, 8.27378916381402288758473766002e-3),
    (6.24110958716075717114429577812e-1, 0.0, 0.0, -3.36089262944694129406857109825,
     -8.68219346841726006818189891453e-1, 2.75920996994467083049415600797e1, 2.01540675504778934086186788979e1,
     -4.34898841810699588477366255144e1),
    (4.77662536438264365890433908527e-1, 0.0, 0.0, -2.48811461997166764192642586468,
     -5.90290826836842996371446475743e-1, 2.12300514481811942347288949897e1, 1.52792336328824235832596922938e1,
     -3.32882109689848629194453265587e1, -2.03312017085086261358222928593e-2),
    (-9.3714243008598732571704021658e-1, 0.0, 0.0, 5.18637242884406370830023853209,
     1.09143734899672957818500254654, -8.14978701074692612513997267357, -1.85200656599969598641566180701e1,
     2.27394870993505042818970056734e1, 2.49360555267965238987089396762, -3.0467644718982195003823669022),
    (2.27331014751653820792359768449, 0.0, 0.0, -1.05344954667372501984066689879e1,
     -2.00087205822486249909675718444, -1.79589318631187989172765950534e1, 2.79488845294199600508499808837e1,
     -2.85899827713502369474065508674, -8.87285693353062954433549289258, 1.23605671757943030647266201528e1,
     6.43392746015763530355970484046e-1),
    (5.42937341165687622380535766363e-2, 0.0, 0.0, 0.0, 0.0, 4.45031289275240888144113950566,
     1.89151789931450038304281599044, -5.8012039600105847814672114227, 3.1116436695781989440891606237e-1,
     -1.52160949662516078556178806805e-1, 2.01365400804030348374776537501e-1,
     4.47106157277725905176885569043e-2),
)
_DOP853_E3 = tuple(
    b - d for b, d in zip(_DOP853_A[12] + (0.0,), (0.244094488188976377952755905512, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                                                    0.0, 0.733846688281611857341361741547, 0.0, 0.0,
                                                    0.220588235294117647058823529412e-1, 0.0), strict=True)
)
_DOP853_E5 = (
    0.1312004499419488073250102996e-1, 0.0, 0.0, 0.0, 0.0, -0.1225156446376204440720569753e1,
    -0.4957589496572501915214079952, 0.1664377182454986536961530415e1, -0.3503288487499736816886487290,
    0.3341791187130174790297318841, 0.8192320648511571246570742613e-1, -0.2235530786388629525884427845e-1, 0.0,
)


def _dop853_error(h, ks, scale):
    """Hairer's combined estimate |h| |e5|^2 / sqrt((|e5|^2 + 0.01 |e3|^2) n), per row (as scipy's DOP853)."""
    e5 = (_combine(_DOP853_E5, ks) / scale).pow(2).sum(1)
    e3 = (_combine(_DOP853_E3, ks) / scale).pow(2).sum(1)
    denom = ((e5 + 0.01 * e3) * scale.shape[1]).sqrt()
    return torch.where(denom > 0, h.abs() * e5 / denom.clamp(min=torch.finfo(denom.dtype).tiny), torch.zeros_like(e5))


DOP853 = Tableau(c=_DOP853_C, a=_DOP853_A, error_order=7, error_norm=_dop853_error)

SOLVERS = {"dopri5": DOPRI5, "dop853": DOP853}


def tableau(name: str) -> Tableau:
    if name not in SOLVERS:
        raise ConfigError(f"ODE solver {name!r} unknown; allowed: {', '.join(SOLVERS)}")
    return SOLVERS[name]


def solve(f, y0: torch.Tensor, t0: float, t1: float, rtol: float, atol: float, max_steps: int = 100_000,
          method: str = "dopri5"):
    """Integrate dy/dt = f(t, y, rows) for each row of ``y0`` [B, D] from t0 to t1 with the pair ``method``.

    ``f`` gets the per-row times [n], the states [n, D] and the indices [n] of the rows being advanced.

    Returns (y(t1) [B, D], number of function evaluations per row [B]).
    """
    tab = tableau(method)
    n_stages = len(tab.c)
    y = y0.clone()
    b = y.shape[0]
    t = torch.full((b,), t0, dtype=y.dtype, device=y.device)
    nfe = torch.zeros(b, dtype=torch.long, device=y.device)
    every = torch.arange(b, device=y.device)
    k1 = f(t, y, every)
    nfe += 1
    h, retried = _initial_step(lambda tt, yy: f(tt, yy, every), t, y, k1, rtol, atol, t1 - t0, tab.error_order)
    nfe += 1 + retried.long()
    active = torch.ones(b, dtype=torch.bool, device=y.device)
    exponent = -1.0 / (tab.error_order + 1)
    for _ in range(max_steps):
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        ti, yi, hi = t[idx], y[idx], torch.minimum(h[idx], t1 - t[idx])
        ks = [k1[idx]]
        for stage in range(1, n_stages):
            y_stage = yi + hi[:, None] * _combine(tab.a[stage], ks)
            ks.append(f(ti + tab.c[stage] * hi, y_stage, idx))
        nfe[idx] += n_stages - 1
        y_new = y_stage  # the last stage's point is the propagated solution (FSAL)
        scale = atol + rtol * torch.maximum(yi.abs(), y_new.abs())
        ratio = tab.error_norm(hi, ks, scale)
        ok = ratio <= 1.0
        acc = idx[ok]
        t_new = ti[ok] + hi[ok]
        t[acc] = torch.where(t1 - t_new <= 1e-12 * abs(t1), torch.full_like(t_new, t1), t_new)
        y[acc] = y_new[ok]
        k1[acc] = ks[-1][ok]
        factor = torch.clamp(0.9 * _pow(ratio.clamp(min=1e-10), exponent), 0.2, 10.0)
        h[idx] = hi * torch.where(ok, factor, factor.clamp(max=1.0))
        active[acc] = t[acc] < t1
    else:
        raise RuntimeError(f"ODE solver: {int(active.sum())} sample(s) did not reach t1 in {max_steps} steps")
    return y, nfe


def _initial_step(f, t, y, f0, rtol, atol, span, order=4):
    """Hairer, Norsett & Wanner's starting step, per row. Its probe at t + h0 may lie beyond t1; where f is not
    finite there (a VE-SDE with sigma_min = 3e-4 overflows float32 at t = 5) the step came out 0 and the solve never
    left t0: those rows probe again at t + min(h0, span) (finite first steps are unchanged, bit for bit).
    Returns (step [B], whether the row needed that second probe [B])."""
    scale = atol + y.abs() * rtol
    d0, d1 = _rms(y / scale), _rms(f0 / scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)

    def first_step(h0):
        f1 = f(t + h0, y + h0[:, None] * f0)
        d2 = _rms((f1 - f0) / scale) / h0
        dmax = torch.maximum(d1, d2)
        h1 = torch.where(dmax <= 1e-15, torch.clamp(h0 * 1e-3, min=1e-6), _pow(0.01 / dmax, 1.0 / (order + 1)))
        return torch.minimum(torch.minimum(100 * h0, h1), torch.full_like(h0, span))

    h = first_step(h0)
    stalled = ~(torch.isfinite(h) & (h > 0))
    if stalled.any():
        h = torch.where(stalled, first_step(h0.clamp(max=span)), h)
    return h, stalled
