"""Attack throughput and accuracy against the seed paper's per-image reference implementation.

    python benchmarks/attacks.py --quick      # < ~3 minutes on 2 CPU cores
    python benchmarks/attacks.py              # more samples and repeats
    python benchmarks/attacks.py --quick --only-suite   # only the per-attack table (seconds)

Prints ONE JSON object. Every figure is measured in the same run, on the same tiny DDPM (trained once on
64 digits, or loaded from ``--store``) and the same evaluation images, side by side (the repeats of the
compared variants are interleaved), and reported as a median over repeats.

``attacks`` lists every registered attack at its default parameters on those images: samples/s (median
over repeats, all samples in one batch), the declared network passes per sample (``Cost``) and the forward
passes per sample actually counted at the network.

The reference ("baseline") re-implements the seed paper's code faithfully on our model and data:

* loss attack: one image at a time, all 1000 steps in chunks of 200 forward passes (the image repeated,
  fresh ``torch.randn`` noise), each chunk's losses copied to the host with ``.tolist()``;
* likelihood attack: one image at a time, scipy ``solve_ivp`` (RK45, rtol = atol = 1e-5) converting
  numpy <-> torch at every function evaluation, Hutchinson divergence with one Rademacher probe, the same
  PF-ODE drift (``adapter.ode_drift``) and prior. It uses the same keyed probe as ours, so bits/dim
  differences measure solver error only, not probe variance.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

import numpy as np
import torch
from scipy.integrate import solve_ivp

from mia_ray import noise as keyed
from mia_ray.attacks import ATTACKS, AttackSpec, DiffusionAdapter, score_batch
from mia_ray.attacks.likelihood import BITS_OFFSET, LikelihoodParams, bits_per_dim, bits_per_dim_probes_nfe
from mia_ray.attacks.loss import LossParams
from mia_ray.attacks.ode import SOLVERS
from mia_ray.config import DataConfig, FamilyConfig, ModelConfig, TargetSpec, TrainConfig
from mia_ray.data import make_split, open_source
from mia_ray.families import make_family
from mia_ray.models import pick_device
from mia_ray.training import TargetStore, get_or_train

TOLS = (1e-5, 1e-4, 1e-3, 3e-3, 1e-2)
SOLVER_TOLS = (1e-5, 1e-4, 1e-3)
TIGHT_TOL = 1e-7  # dop853 at this tolerance is the "tight" answer the solver table's errors are taken against
DBPD_GOAL = 0.01


def tiny_spec(train_steps: int) -> TargetSpec:
    """The tests' tiny DDPM (tests/conftest.py ``tiny_spec``): same spec, hence same target id."""
    return TargetSpec(
        family=FamilyConfig(name="ddpm"),
        model=ModelConfig(block_out_channels=[16, 32], layers_per_block=1, norm_num_groups=8),
        train=TrainConfig(steps=train_steps, batch_size=64, lr=2e-3),
        data=DataConfig(source="digits"),
        train_size=64,
    )


# --- the reference implementation ---------------------------------------------------------------------


@torch.no_grad()
def baseline_loss_curves(adapter: DiffusionAdapter, images: torch.Tensor, chunk: int = 200) -> list[list]:
    """The paper's loss attack: per image, the 1000-step loss curve in chunks of ``chunk`` forwards."""
    fam, net, dev = adapter.family, adapter.net, adapter.device
    curves = []
    for x in images:
        losses: list[float] = []
        for lo in range(0, fam.T, chunk):
            t = torch.arange(lo, min(lo + chunk, fam.T), device=dev)
            x0 = x[None].to(dev).repeat(len(t), 1, 1, 1)
            noise = torch.randn_like(x0)
            losses += fam.loss(net, x0, t, noise).tolist()
        curves.append(losses)
    return curves


def _probe(sample_id: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """The Rademacher probe ``bits_per_dim`` uses for this sample (keyed by (seed, sample id, probe 0))."""
    keys = keyed.combine(seed, torch.tensor([[sample_id]]), torch.arange(1)[None])
    return keyed.rademacher(keys, shape)[:, 0]  # [1, C, H, W]


def baseline_bpd(adapter: DiffusionAdapter, x: torch.Tensor, sample_id: int, tol: float = 1e-5):
    """score_sde's likelihood: scipy RK45 on one image, numpy <-> torch at every evaluation.

    Returns (bits/dim, number of function evaluations)."""
    shape = (1,) + tuple(x.shape)
    d = x.numel()
    dev = adapter.device
    probe = _probe(sample_id, tuple(x.shape)).to(dev)

    def ode_func(t, y):
        sample = torch.from_numpy(y[:d]).reshape(shape).to(dev, torch.float32)
        vec_t = torch.tensor(t, dtype=torch.float32, device=dev)
        with torch.enable_grad():
            sample.requires_grad_(True)
            drift = adapter.ode_drift(sample, vec_t)
            (grad,) = torch.autograd.grad((drift * probe).sum(), sample)
        div = (grad * probe).sum()
        return np.concatenate([drift.detach().cpu().numpy().reshape(-1), [div.item()]]).astype(np.float64)

    init = np.concatenate([x.cpu().numpy().reshape(-1), [0.0]]).astype(np.float64)
    t0, t1 = adapter.t_range
    sol = solve_ivp(ode_func, (t0, t1), init, rtol=tol, atol=tol, method="RK45")
    zp = sol.y[:, -1]
    z = torch.from_numpy(zp[:d]).reshape(shape).to(dev, torch.float32)
    logp = adapter.prior_logp(z).item() + zp[d]
    return -logp / (d * math.log(2)) + BITS_OFFSET, int(sol.nfev)


# --- measurement helpers ------------------------------------------------------------------------------


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _med(xs) -> float:
    return float(statistics.median(xs))


@torch.no_grad()
def _bare_forward(adapter: DiffusionAdapter, shape: tuple, n_forwards: int, batch: int) -> float:
    """Seconds for ``n_forwards`` UNet forwards in batches of ``batch`` on pre-made inputs."""
    dev = adapter.device
    x = torch.randn((batch,) + tuple(shape), device=dev)
    tau = torch.randint(0, adapter.num_steps, (batch,), device=dev).float()
    t = time.perf_counter()
    done = 0
    while done < n_forwards:
        m = min(batch, n_forwards - done)
        adapter.net(x[:m], tau[:m])
        done += m
    return time.perf_counter() - t


class _Counting(torch.nn.Module):
    """Counts the rows the network evaluates."""

    def __init__(self, net):
        super().__init__()
        self.net, self.rows = net, 0

    def forward(self, x, tau):
        self.rows += x.shape[0]
        return self.net(x, tau)


def attack_suite(adapter: DiffusionAdapter, images: torch.Tensor, ids: np.ndarray, repeats: int) -> dict:
    """Every registered attack at its defaults on the same images: rate, declared and counted passes."""
    out = {}
    n = len(images)
    sample_ids = torch.from_numpy(ids)
    for name in ATTACKS.names():
        attack = ATTACKS.get(name)()
        params = attack.Params()
        cost = attack.cost(params, adapter.num_steps)
        counted = DiffusionAdapter(adapter.family, adapter.net.unet, device=adapter.device)
        counted.net = _Counting(counted.net)
        attack.run(counted, images[:2], sample_ids[:2], params)  # warm-up
        counted.net.rows = 0
        def once(attack=attack, counted=counted, params=params):
            return attack.run(counted, images, sample_ids, params)

        secs = [_timed(once)[0] for _ in range(repeats)]
        out[name] = {
            "samples_per_s": n / _med(secs),
            "samples": n,
            "forward_per_sample_declared": cost.forward,
            "backward_per_sample_declared": cost.backward,
            "cost_is_estimate": cost.estimate,
            "forward_per_sample_counted": counted.net.rows / (n * repeats),
            "steps": len(attack.steps(params, adapter.num_steps)),
        }
    return out


def solver_table(adapter: DiffusionAdapter, x: torch.Tensor, ids: torch.Tensor, bpd_ref: np.ndarray) -> dict:
    """Every ODE pair at SOLVER_TOLS (one probe, the reference's): network evaluations per sample (a count)
    and mean |dbpd| against the scipy RK45 reference (first ``len(bpd_ref)`` samples) and against a tight
    solve (dop853 at TIGHT_TOL; the RK45 reference at 1e-5 is itself ~1e-3 bpd off it)."""
    def run(method, tol):
        p = LikelihoodParams(rtol=tol, atol=tol, probes=1, solver=method)
        sec, (bpd, nfe) = _timed(lambda: bits_per_dim_probes_nfe(adapter, x, ids, p))
        return sec, bpd[:, 0].double().cpu().numpy(), nfe.cpu().numpy()

    _, tight, tight_nfe = run("dop853", TIGHT_TOL)
    n = len(bpd_ref)
    out = {"tight": {"tol": TIGHT_TOL, "nfe_median": float(np.median(tight_nfe)),
                     "mean_abs_dbpd_vs_reference": float(np.abs(tight[:n] - bpd_ref).mean())}}
    for method in SOLVERS:
        for tol in SOLVER_TOLS:
            sec, bpd, nfe = run(method, tol)
            out[f"{method}@{tol:g}"] = {
                "nfe_median": float(np.median(nfe)), "s_per_sample": sec / len(x),
                "mean_abs_dbpd_vs_reference": float(np.abs(bpd[:n] - bpd_ref).mean()),
                "mean_abs_dbpd_vs_tight": float(np.abs(bpd - tight).mean()),
                "max_abs_dbpd_vs_tight": float(np.abs(bpd - tight).max()),
            }
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sample counts and repeats (< ~3 min)")
    ap.add_argument("--store", default="/tmp/mia_ray_bench_store", help="target store (reused if present)")
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--max-batch", type=int, default=LossParams().max_batch)
    ap.add_argument("--only-suite", action="store_true", help="only the per-attack table, no reference runs")
    ap.add_argument("--no-solver-table", action="store_true", help="skip the per-solver NFE / accuracy table")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    q = args.quick
    repeats = 3 if q else 5
    n_loss_base, n_loss_ours = (8, 16) if q else (32, 128)
    n_lik_base, n_lik_ours = (4, 16) if q else (16, 64)

    dev = pick_device()
    spec = tiny_spec(args.train_steps)
    t_train, target = _timed(lambda: get_or_train(TargetStore(args.store), spec, progress=False))
    adapter = DiffusionAdapter(make_family(spec.family), target.load(), device=dev)
    src = open_source(spec.data)
    split = make_split(len(src), spec.train_size, 64, spec.seed)
    ids, member = split.eval_ids()
    order = np.random.default_rng(0).permutation(len(ids))  # members and non-members mixed
    ids, member = ids[order], member[order]
    images = torch.from_numpy(src.load(ids))
    T = adapter.num_steps
    n_suite = 16 if q else 64
    suite = attack_suite(adapter, images[:n_suite], ids[:n_suite], repeats)
    if args.only_suite:
        result = {"device": str(dev), "torch_version": torch.__version__, "threads": torch.get_num_threads(),
                  "quick": q, "repeats": repeats, "target_train_steps": args.train_steps, "attacks": suite}
        print(json.dumps(result, indent=1))
        return result

    # --- loss attack: the full 1000-step curve ---------------------------------------------------------
    params = LossParams(all_steps=True, max_batch=args.max_batch)
    batch = {"image": images[:n_loss_ours].numpy(), "sample_id": ids[:n_loss_ours],
             "is_member": member[:n_loss_ours]}
    ours_loss, base_loss, bare = [], [], []
    rows = adapter.max_rows(args.max_batch, images.shape)  # rows per forward the attack makes (CPU cap)
    baseline_loss_curves(adapter, images[:1])  # warm-up
    score_batch(adapter, {k: v[:2] for k, v in batch.items()}, [AttackSpec("loss", params)])
    for _ in range(repeats):
        base_loss.append(_timed(lambda: baseline_loss_curves(adapter, images[:n_loss_base]))[0])
        ours_loss.append(_timed(lambda: score_batch(adapter, batch, [AttackSpec("loss", params)]))[0])
        bare.append(_bare_forward(adapter, images.shape[1:], n_loss_ours * T, rows))
    rate_base_loss = n_loss_base / _med(base_loss)
    rate_ours_loss = n_loss_ours / _med(ours_loss)
    rate_bare = n_loss_ours / _med(bare)

    # --- likelihood attack -------------------------------------------------------------------------------
    x_lik, ids_lik = images[:n_lik_ours].to(dev), torch.from_numpy(ids[:n_lik_ours]).to(dev)
    default = LikelihoodParams().rtol
    bpd_by_tol: dict[float, np.ndarray] = {}
    sec_by_tol: dict[float, list] = {}

    def ours(tol):
        # one probe as the reference: solver error only; the default solver
        p = LikelihoodParams(rtol=tol, atol=tol, probes=1)
        sec, bpd = _timed(lambda: bits_per_dim(adapter, x_lik, ids_lik, p).double().cpu().numpy())
        bpd_by_tol[tol] = bpd
        sec_by_tol.setdefault(tol, []).append(sec)

    bits_per_dim(adapter, x_lik[:2], ids_lik[:2], LikelihoodParams())  # warm-up
    t_base, base_nfe, bpd_base = [], [], []
    n_eq = 1 if q else 2
    for i in range(n_lik_base):  # baseline: one sample per repeat, interleaved with ours
        sec, (b, nfe) = _timed(lambda i=i: baseline_bpd(adapter, images[i], int(ids[i]), 1e-5))
        t_base.append(sec)
        bpd_base.append(b)
        base_nfe.append(nfe)
        if i < repeats:
            ours(default)
        if i < n_eq:
            ours(1e-5)
    while len(sec_by_tol[default]) < repeats:
        ours(default)
    for tol in TOLS:
        if tol not in bpd_by_tol:
            ours(tol)
    bpd_base = np.asarray(bpd_base)
    solvers = None if args.no_solver_table else solver_table(adapter, x_lik, ids_lik, bpd_base)
    by_tol = {f"{tol:g}": float(np.abs(bpd_by_tol[tol][:n_lik_base] - bpd_base).mean()) for tol in TOLS}
    t_default, t_eq = sec_by_tol[default], sec_by_tol[1e-5]
    rate_base_lik = 1.0 / _med(t_base)
    rate_default = n_lik_ours / _med(t_default)
    rate_eq = n_lik_ours / _med(t_eq)
    meeting = None  # the largest tolerance that, with every tighter one, meets the accuracy goal
    for tol in sorted(TOLS):
        if by_tol[f"{tol:g}"] > DBPD_GOAL:
            break
        meeting = tol

    result = {
        "device": str(dev),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "quick": q,
        "repeats": repeats,
        "target_train_steps": args.train_steps,
        "target_train_seconds": round(t_train, 2),
        "loss_full_curve_speedup": rate_ours_loss / rate_base_loss,
        "loss_efficiency_vs_bare_forward": rate_ours_loss / rate_bare,
        "likelihood_speedup_equal_tol": rate_eq / rate_base_lik,
        "likelihood_speedup_default_tol": rate_default / rate_base_lik,
        "likelihood_default_tol": default,
        "likelihood_solver": LikelihoodParams().solver,
        "likelihood_solvers": solvers,
        "likelihood_mean_abs_dbpd": float(np.abs(bpd_by_tol[default][:n_lik_base] - bpd_base).mean()),
        "likelihood_mean_abs_dbpd_by_tol": by_tol,
        "likelihood_largest_tol_meeting_dbpd_goal": meeting,
        "attacks": suite,
        "timings": {
            "loss_baseline_s": _med(base_loss), "loss_baseline_samples": n_loss_base,
            "loss_ours_s": _med(ours_loss), "loss_ours_samples": n_loss_ours,
            "loss_bare_forward_s": _med(bare), "loss_max_batch": args.max_batch, "loss_rows_per_call": rows,
            "loss_steps": T,
            "loss_baseline_samples_per_s": rate_base_loss, "loss_ours_samples_per_s": rate_ours_loss,
            "likelihood_baseline_s_per_sample": _med(t_base), "likelihood_baseline_samples": n_lik_base,
            "likelihood_baseline_nfe_median": _med(base_nfe),
            "likelihood_ours_default_s": _med(t_default), "likelihood_ours_equal_tol_s": _med(t_eq),
            "likelihood_ours_samples": n_lik_ours,
            "likelihood_ours_s_by_tol": {f"{k:g}": _med(v) for k, v in sorted(sec_by_tol.items())},
            "likelihood_max_abs_dbpd_by_tol": {
                f"{tol:g}": float(np.abs(bpd_by_tol[tol][:n_lik_base] - bpd_base).max()) for tol in TOLS
            },
        },
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
