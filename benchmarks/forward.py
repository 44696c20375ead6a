"""Forward-pass switches on this device: eager vs inference_mode vs channels_last vs bf16 autocast vs a TorchScript
trace vs torch.compile.

    python benchmarks/forward.py --quick      # the quickstart model at 8x8, sweep-sized batches
    python benchmarks/forward.py --quick --no-compile   # without the minutes of inductor compilation

Prints ONE JSON object: for the loss-type workload (no-grad batched forwards: loss, pia, pian, secmi, sima
all run these) and the likelihood workload (forward + one VJP per ODE evaluation, at 16 rows as the solver
pads to and at a sweep batch's rows), seconds per batch for each variant side by side (median of interleaved
repeats), the compile time (first call) separately, the break-even number of batches, and whether each variant's output
is bitwise equal to eager (max |diff| otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from mia_ray import sweep_config
from mia_ray.models import NoiseNet, build_unet

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _t(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--yaml", default="sweeps/quickstart.yaml")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg, _ = sweep_config.load(os.path.join(ROOT, args.yaml), [])
    spec = sweep_config.expand(cfg)[0].spec
    res, ch = cfg.data.resolution, cfg.data.channels
    torch.manual_seed(0)
    unet = build_unet(spec.model, res, ch).eval()
    repeats = 5 if args.quick else 15
    out = {"torch_version": torch.__version__, "threads": args.threads, "model": args.yaml,
           "load_average": os.getloadavg(), "repeats": repeats}

    # --- loss-type: no-grad forwards of a sweep-sized batch --------------------------------------------
    b = cfg.resources.batch_size * 4  # loss.py max_batch-sized chunks
    x = torch.randn(b, ch, res, res)
    tau = torch.randint(0, 1000, (b,)).float()
    cl = unet.to(memory_format=torch.channels_last)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    t_trace, traced = _t(lambda: _trace(unet, x[:16], tau[:16]))
    out["torchscript_trace_s"] = t_trace
    variants = {
        "eager_no_grad": lambda: _nograd(unet, x, tau),
        "torchscript": lambda: _nograd(traced, x, tau),
        "inference_mode": lambda: _inference(unet, x, tau),
        "channels_last": lambda: _nograd(cl, x.to(memory_format=torch.channels_last), tau),
        "bf16_autocast": lambda: _bf16(dev, _nograd, unet, x, tau),
    }
    t_compile = None
    if not args.no_compile:
        compiled = torch.compile(unet)
        t_compile, _ = _t(lambda: _nograd(compiled, x, tau))
        variants["compiled"] = lambda: _nograd(compiled, x, tau)
    unet.to(memory_format=torch.contiguous_format)
    out["loss_type"] = _compare(variants, repeats, t_compile, b)

    # --- likelihood: forward + one VJP on 16 rows (and on a sweep batch's rows) -------------------------------
    sweep_rows = cfg.resources.batch_size
    for rows, key in ((16, "likelihood_type"), (sweep_rows, f"likelihood_type_{sweep_rows}")):
        xr0, taur = x[:rows].clone(), tau[:rows]

        def vjp(net, xr0=xr0, taur=taur):
            xr = xr0.clone().requires_grad_(True)
            y = net(xr, taur).sample
            (g,) = torch.autograd.grad(y, xr, torch.ones_like(y))
            return g

        lik = {"eager": lambda vjp=vjp: vjp(unet), "torchscript": lambda vjp=vjp: vjp(traced),
               "bf16_autocast": lambda vjp=vjp: _bf16(dev, lambda *a: vjp(unet))}
        t_compile2 = None
        if not args.no_compile and rows == 16:
            compiled2 = torch.compile(unet)
            t_compile2, _ = _t(lambda vjp=vjp, c=compiled2: vjp(c))
            lik["compiled"] = lambda vjp=vjp, c=compiled2: vjp(c)
        out[key] = _compare(lik, repeats, t_compile2, rows)
    print(json.dumps(out, indent=1))
    return out


def _nograd(net, x, tau):
    with torch.no_grad():
        return net(x, tau).sample


def _inference(net, x, tau):
    with torch.inference_mode():
        return net(x, tau).sample


class _Sample(torch.nn.Module):
    """A traced module returns tensors: ``.sample`` as the UNet's output has it."""

    def __init__(self, traced):
        super().__init__()
        self.traced = traced

    def forward(self, x, tau):
        return _Out(self.traced(x, tau))


class _Out:
    def __init__(self, sample):
        self.sample = sample


def _trace(unet, x, tau):
    """TorchScript trace of the UNet's noise output (runs its ops from C++, not Python; deprecated in torch 2.13)."""
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return _Sample(torch.jit.trace(NoiseNet(unet), (x, tau), check_trace=False))


def _bf16(dev, fn, *args):
    with torch.autocast(dev, dtype=torch.bfloat16):
        return fn(*args)


def _compare(variants: dict, repeats: int, t_compile: float, rows: int) -> dict:
    ref = next(iter(variants.values()))()
    outs = {k: fn() for k, fn in variants.items()}  # warm-up, outputs
    secs = {k: [] for k in variants}
    for _ in range(repeats):  # interleaved
        for k, fn in variants.items():
            secs[k].append(_t(fn)[0])
    eager = statistics.median(next(iter(secs.values())))
    table = {}
    for k in variants:
        med = statistics.median(secs[k])
        diff = (outs[k].float() - ref.float()).abs().max().item()
        table[k] = {"s_per_batch": med, "rows": rows, "speedup_vs_eager": eager / med,
                    "bitwise_equal_to_eager": bool(torch.equal(outs[k], ref)), "max_abs_diff": diff}
    if "compiled" in table:
        gain = eager - statistics.median(secs["compiled"])
        table["compiled"]["compile_s"] = t_compile
        table["compiled"]["break_even_batches"] = t_compile / gain if gain > 0 else None
    return table


if __name__ == "__main__":
    main()
