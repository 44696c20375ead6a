"""Does the probability-flow ODE need fewer network evaluations in other variables?

    python benchmarks/ode_variables.py [--families ddpm,vpsde,vesde,smld] [--samples 4] [--store DIR]

The likelihood attack integrates dx/dt = f(x, t) - g(t)^2 s(x, t) / 2 in (x, t). DPM-Solver and EDM integrate
the same ODE in y = x / a(t) against rho = s(t) / a(t) (or log rho), where dy/drho = eps_hat(x, t) is nearly
straight for samplers. Four forms of one ODE, same log-density (the change of variables y = x / a adds
d log a(t1) - d log a(t0), analytic), each solved by ``ode.solve`` (dopri5, per-sample steps, one probe):

  xt: (x, t), the attack's;  yt: (x / a, t);  ys: (x / a, log rho);  xs: (x, log rho)

On the VE families a = 1, so yt = xt and ys = xs. Prints ONE JSON object: per family and form, at each
tolerance, the median network evaluations per sample and the max / mean |dbpd| against a tight solve
(dop853 at 1e-7 in (x, t)). The models are benchmarks/attack_families.py's over-fitted tiny ones (trained
on first use, ~1 min each). docs/bench_speed.md section 10 holds a run.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile

import torch
from attack_families import MEMBERS, spec_of

from mia_ray import noise as keyed
from mia_ray.attacks import DiffusionAdapter
from mia_ray.attacks.likelihood import BITS_OFFSET
from mia_ray.attacks.loss import MIN_ROWS
from mia_ray.attacks.ode import solve
from mia_ray.data import make_split, open_source
from mia_ray.families import make_family
from mia_ray.training import TargetStore, get_or_train

FORMS = ("xt", "yt", "ys", "xs")
TOLS = (1e-5, 1e-4, 1e-3)


def log_rho(fam, t: torch.Tensor) -> torch.Tensor:
    a, s = fam.mean_std(t.double())
    return torch.log(s / a)


def t_of_log_rho(fam, u: torch.Tensor, t0: float, t1: float) -> torch.Tensor:
    """Invert the increasing log rho(t) on [t0, t1] by bisection (float64, 60 halvings)."""
    lo, hi = torch.full_like(u, t0, dtype=torch.float64), torch.full_like(u, t1, dtype=torch.float64)
    for _ in range(60):
        mid = (lo + hi) / 2
        up = log_rho(fam, mid) > u.double()
        lo, hi = torch.where(up, lo, mid), torch.where(up, mid, hi)
    return (lo + hi) / 2


def _derivative(fn, t: torch.Tensor) -> torch.Tensor:
    t = t.double().detach().requires_grad_(True)
    with torch.enable_grad():
        y = fn(t)
        if not y.requires_grad:  # constant in t (a VE family's a = 1)
            return torch.zeros_like(t)
        (g,) = torch.autograd.grad(y.sum(), t)
    return g


def bits_per_dim(adapter, x0, ids, form: str, tol: float, method: str = "dopri5"):
    """(bits/dim [B], network evaluations per sample [B]) of the PF-ODE solved in ``form``."""
    fam, (t0, t1) = adapter.family, adapter.t_range
    b, d, shape = x0.shape[0], x0[0].numel(), tuple(x0.shape[1:])
    probe = keyed.rademacher(keyed.combine(0, ids.to(torch.int64)[:, None], torch.arange(1)[None]), shape)[:, 0]
    scaled, in_rho = form in ("yt", "ys"), form in ("ys", "xs")
    alpha = lambda t: fam.mean_std(t.double())[0]  # noqa: E731

    def rhs(u, state, rows):
        pad = torch.arange(max(MIN_ROWS, len(rows))).clamp(max=len(rows) - 1)  # as likelihood.py pads
        u, state, rows_p = u[pad], state[pad], rows[pad]
        t = t_of_log_rho(fam, u, t0, t1) if in_rho else u.double()
        view = (-1,) + (1,) * len(shape)
        z = state[:, :d].reshape((len(pad),) + shape).detach().requires_grad_(True)
        with torch.enable_grad():
            a = alpha(t).float().view(view)
            x = a * z if scaled else z
            drift = adapter.ode_drift(x, t.float())
            if scaled:  # d(x / a)/dt = (f - (d log a / dt) x) / a
                drift = (drift - _derivative(lambda s: alpha(s).log(), t).float().view(view) * x) / a
            if in_rho:
                drift = drift / _derivative(lambda s: log_rho(fam, s), t).float().view(view)
            (vjp,) = torch.autograd.grad(drift, z, probe[rows_p])
        div = (vjp * probe[rows_p]).flatten(1).sum(1, keepdim=True)
        return torch.cat([drift.detach().flatten(1), div], 1)[: len(rows)]

    a0, a1 = (float(alpha(torch.tensor([t]))) for t in (t0, t1))
    state0 = torch.cat([x0.flatten(1) / (a0 if scaled else 1.0), torch.zeros(b, 1)], 1)
    u0, u1 = (float(log_rho(fam, torch.tensor([t]))) for t in (t0, t1)) if in_rho else (t0, t1)
    end, nfe = solve(rhs, state0, u0, u1, tol, tol, method=method)
    x1 = end[:, :d] * (a1 if scaled else 1.0)
    logp = adapter.prior_logp(x1.reshape(x0.shape)) + end[:, d] + (d * math.log(a1 / a0) if scaled else 0.0)
    return -logp / (d * math.log(2)) + BITS_OFFSET, nfe


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--families", default="ddpm,vpsde,vesde,smld")
    ap.add_argument("--samples", type=int, default=4, help="member images per family (1 thread)")
    ap.add_argument("--store", default=None, help="target store (default: a temporary folder)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    store = TargetStore(args.store or tempfile.mkdtemp(prefix="ode_variables_"))
    out = {"samples": args.samples, "solver": "dopri5", "tight": "dop853 at 1e-7 in (x, t)", "families": {}}
    for family in args.families.split(","):
        spec = spec_of(family)
        adapter = DiffusionAdapter(make_family(spec.family), get_or_train(store, spec, progress=False).load())
        src = open_source(spec.data)
        ids = make_split(len(src), MEMBERS, MEMBERS, 0).eval_ids()[0][: args.samples]
        x, ids_t = torch.from_numpy(src.load(ids)), torch.from_numpy(ids)
        tight = bits_per_dim(adapter, x, ids_t, "xt", 1e-7, "dop853")[0]
        rows = {}
        for form in FORMS:
            for tol in TOLS:
                bpd, nfe = bits_per_dim(adapter, x, ids_t, form, tol)
                err = (bpd - tight).abs()
                rows[f"{form}@{tol:g}"] = {"nfe_median": float(nfe.double().median()),
                                           "max_abs_dbpd": float(err.max()), "mean_abs_dbpd": float(err.mean())}
        out["families"][family] = rows
        print(json.dumps({family: rows}), flush=True)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
