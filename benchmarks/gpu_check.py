"""One prepared device check (< 5 minutes on a GPU): the paper-size UNet at 64x64, printed as ONE JSON object.

    python benchmarks/gpu_check.py                 # on the device to measure (CUDA when present)
    python benchmarks/gpu_check.py --quick         # tiny model at 8x8: seconds on a CPU (what the tests run)
    python benchmarks/gpu_check.py --out t.json    # also write the JSON; its "timing" block feeds
                                                   #   python -m mia_ray.sweep SWEEP.yaml --estimate-from t.json
    python benchmarks/gpu_check.py --compile       # also torch.compile, and CUDA graphs on CUDA (adds minutes)

Figures: forward throughput in fp32 and under bf16 autocast (CUDA only: CPU autocast is not what a sweep
runs), the loss attack's samples x steps per second (all 1000 steps, batched) and its speed-up against the
seed paper's loop (one image at a time in chunks of 200, benchmarks/attacks.py), the likelihood attack's
seconds per sample at its defaults (on this untrained network: the NFE of a trained one differ), plain and
DP-SGD optimiser steps per second (``train_target``'s own loop), and the ``Timing`` of mia_ray/estimate.py.
With ``--compile``: eager and compiled forwards side by side (``torch.compile`` default mode, and on CUDA
``mode="reduce-overhead"``, i.e. CUDA graphs), each with its compile seconds, the largest deviation from eager
and the number of batches after which compiling pays. On this project's CPU compiling did not pay
(docs/bench_speed.md section 3), so no attack compiles by default; this is the measurement for a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))

from attacks import baseline_loss_curves  # noqa: E402

from mia_ray import sweep_config  # noqa: E402
from mia_ray.attacks import ATTACKS, DiffusionAdapter  # noqa: E402
from mia_ray.attacks.likelihood import LikelihoodParams  # noqa: E402
from mia_ray.attacks.loss import LossParams  # noqa: E402
from mia_ray.estimate import Timing, time_passes, time_train_steps  # noqa: E402
from mia_ray.families import make_family  # noqa: E402
from mia_ray.models import build_unet, count_params, pick_device  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _timed(fn, dev, repeats=3):
    fn()
    _sync(dev)
    secs = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(dev)
        secs.append(time.perf_counter() - t)
    return statistics.median(secs)


def compiled_forwards(unet, x, tau, dev, amp: bool) -> dict:
    """Eager vs ``torch.compile`` forwards of ``unet`` on one batch: per mode, batches/s, compile seconds
    (first call minus an eager call), max |compiled - eager| and the break-even batch count."""
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else contextlib.nullcontext

    def run(net):
        with torch.no_grad(), ctx():
            return net(x, tau).sample.float()

    ref = run(unet)
    t_eager = _timed(lambda: run(unet), dev)
    out = {"eager_batches_per_s": 1 / t_eager}
    for mode in ("default", "reduce-overhead") if dev.type == "cuda" else ("default",):
        torch._dynamo.reset()
        net = torch.compile(unet, mode=mode)
        t0 = time.perf_counter()
        first = run(net)
        _sync(dev)
        compile_s = time.perf_counter() - t0 - t_eager
        t = _timed(lambda net=net: run(net), dev)
        gain = t_eager - t
        out[mode] = {"batches_per_s": 1 / t, "speedup": t_eager / t, "compile_s": compile_s,
                     "max_abs_diff": float((first - ref).abs().max()),
                     "break_even_batches": compile_s / gain if gain > 0 else None}
    torch._dynamo.reset()
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (the quickstart model at 8x8)")
    ap.add_argument("--out", help="also write the JSON here")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile / CUDA graphs (minutes)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    dev = pick_device()
    yaml_path = "sweeps/quickstart.yaml" if args.quick else "sweeps/full_paper.yaml"
    cfg, _ = sweep_config.load(os.path.join(ROOT, yaml_path), [])
    spec = sweep_config.expand(cfg)[0].spec
    res, ch = cfg.data.resolution, cfg.data.channels
    batch = 32 if args.quick else 256
    n_loss, n_ref, n_lik, train_steps = (4, 1, 2, 2) if args.quick else (16, 2, 4, 5)
    unet = build_unet(spec.model, res, ch).to(dev).eval()
    adapter = DiffusionAdapter(make_family(spec.family), unet, device=dev)
    x = torch.randn(batch, ch, res, res, device=dev)
    tau = torch.randint(0, 1000, (batch,), device=dev).float()

    @torch.no_grad()
    def fwd():
        unet(x, tau)

    @torch.no_grad()
    def fwd_bf16():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            unet(x, tau)

    out = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "quick": args.quick,
           "torch_version": torch.__version__, "model": yaml_path, "resolution": res, "params": count_params(unet)}
    out["forward_per_s_fp32"] = batch / _timed(fwd, dev)
    out["forward_per_s_bf16"] = batch / _timed(fwd_bf16, dev) if dev.type == "cuda" else None
    if args.compile:
        out["compile_fp32"] = compiled_forwards(unet, x, tau, dev, amp=False)
        out["compile_bf16"] = compiled_forwards(unet, x, tau, dev, amp=True) if dev.type == "cuda" else None

    images = torch.rand(n_loss, ch, res, res) * 2 - 1
    ids = torch.arange(n_loss)
    loss = ATTACKS.get("loss")()
    lp = LossParams(all_steps=True, max_batch=4096 if dev.type == "cuda" else 256)
    t_ours = _timed(lambda: loss.run(adapter, images, ids, lp), dev, repeats=2)
    t_ref = _timed(lambda: baseline_loss_curves(adapter, images[:n_ref]), dev, repeats=2)
    out["loss_samples_steps_per_s"] = n_loss * adapter.num_steps / t_ours
    out["loss_reference_samples_steps_per_s"] = n_ref * adapter.num_steps / t_ref
    out["loss_speedup_vs_reference"] = out["loss_samples_steps_per_s"] / out["loss_reference_samples_steps_per_s"]

    lik = ATTACKS.get("likelihood")()
    t_lik = _timed(lambda: lik.run(adapter, images[:n_lik], ids[:n_lik], LikelihoodParams()), dev, repeats=1)
    out["likelihood_s_per_sample"] = t_lik / n_lik

    plain = time_train_steps(spec, float("inf"), train_steps, dev)
    dp = time_train_steps(spec, 10.0, train_steps, dev)
    out["train_plain_steps_per_s"], out["train_dp_steps_per_s"], out["dp_over_plain"] = 1 / plain, 1 / dp, dp / plain
    f, b = time_passes(spec, res, ch, batch, dev)
    out["timing"] = Timing(out["device"], plain, dp, f, b).__dict__
    out["wall_s"] = time.perf_counter() - t_start
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, args.out)
    return out


if __name__ == "__main__":
    main()
