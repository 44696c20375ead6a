"""Hutchinson divergence formulations, re-measured: what the likelihood attack's ODE right-hand side costs.

    python benchmarks/divergence.py           # the quickstart model at 8x8, 16 rows (the solver's padded batch)

Prints ONE JSON object: seconds per right-hand-side evaluation (drift + P probes' v^T J v) for
``loop_vjp`` (one forward, P reverse-mode VJPs on the retained graph: what likelihood.py does),
``vmap_vjp`` (torch.func.vjp, the P cotangents vmapped), ``jvp`` (torch.func.jvp per probe, forward mode:
each includes its own forward), medians of interleaved repeats, ratios to ``loop_vjp``, and the largest
difference of the estimates from ``loop_vjp``'s (same probes, so they must agree to rounding).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from torch.func import jvp, vjp, vmap

from mia_ray import sweep_config
from mia_ray.attacks import DiffusionAdapter
from mia_ray.families import make_family
from mia_ray.models import build_unet

ROOT = os.path.join(os.path.dirname(__file__), "..")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--yaml", default="sweeps/quickstart.yaml")
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--probes", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # as the likelihood solve runs on CPU
    cfg, _ = sweep_config.load(os.path.join(ROOT, args.yaml), [])
    spec = sweep_config.expand(cfg)[0].spec
    res, ch = cfg.data.resolution, cfg.data.channels
    torch.manual_seed(0)
    adapter = DiffusionAdapter(make_family(spec.family), build_unet(spec.model, res, ch).eval())
    x = torch.randn(args.rows, ch, res, res)
    t = torch.full((args.rows,), 0.3)
    v = torch.randint(0, 2, (args.probes, args.rows, ch, res, res)).float() * 2 - 1
    f = lambda xx: adapter.ode_drift(xx, t)  # noqa: E731

    def loop_vjp():
        xr = x.detach().requires_grad_(True)
        with torch.enable_grad():
            y = f(xr)
            return torch.stack([(torch.autograd.grad(y, xr, v[p], retain_graph=p < args.probes - 1)[0] * v[p])
                                .flatten(1).sum(1) for p in range(args.probes)], 1)

    def vmap_vjp():
        _, pull = vjp(f, x)
        (g,) = vmap(pull)(v)
        return (g * v).flatten(2).sum(2).T

    def fwd_jvp():
        return torch.stack([(jvp(f, (x,), (v[p],))[1] * v[p]).flatten(1).sum(1) for p in range(args.probes)], 1)

    variants = {"loop_vjp": loop_vjp, "vmap_vjp": vmap_vjp, "jvp": fwd_jvp}
    ref = loop_vjp()
    diffs = {k: float((fn() - ref).abs().max()) for k, fn in variants.items()}  # also the warm-up
    secs = {k: [] for k in variants}
    for _ in range(args.repeats):
        for k, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            secs[k].append(time.perf_counter() - t0)
    base = statistics.median(secs["loop_vjp"])
    out = {"model": args.yaml, "rows": args.rows, "probes": args.probes, "repeats": args.repeats,
           "load_average": os.getloadavg(), "torch_version": torch.__version__,
           "variants": {k: {"s_per_eval": statistics.median(s), "time_vs_loop_vjp": statistics.median(s) / base,
                            "max_abs_diff_vs_loop_vjp": diffs[k]} for k, s in secs.items()}}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
