"""Optimiser steps per second, plain and DP-SGD (Opacus) in every per-sample-gradient mode, at the quickstart
size and the paper's model size.

    python benchmarks/training.py --quick     # quickstart model 8x8 batch 64; paper UNet 64x64 batch 32, 1 step
    python benchmarks/training.py             # more steps at both sizes

Prints ONE JSON object. A rate is ``train_target``'s own loop (random images of the right shape, the sweep
YAML's model / train / dp settings) over k + 1 steps minus a 1-step run (set-up and warm-up), so it is the
steady-state step of the real training code, DP accounting included; plain and DP runs (one per
``dp.grad_sample_mode``) are interleaved and repeated, and each figure is the median. ``dp_over_plain`` is
the DP/plain time ratio per mode. A mode the door refuses for the model, and Opacus modes that fail on
UNet2DModel (``ew``, probed with one backward), are listed under ``failed`` with the one-line reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import warnings

import torch

from mia_ray import sweep_config
from mia_ray.estimate import time_train_steps
from mia_ray.models import NoiseNet, build_unet, count_params, pick_device
from mia_ray.training.dp import validate_dp
from mia_ray.training.grad_sample import MODES

PROBED = ("ew",)  # Opacus modes not offered: probed for the failure they give on UNet2DModel

ROOT = os.path.join(os.path.dirname(__file__), "..")
SIZES = {"quickstart": "sweeps/quickstart.yaml", "paper": "sweeps/full_paper.yaml"}


def probe_opacus(mode: str, spec, resolution: int, channels: int, device) -> str | None:
    """None when one Opacus ``mode`` backward of ``spec``'s UNet runs, else the one-line reason."""
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    from mia_ray.families import make_family

    unet = build_unet(spec.model, resolution, channels).to(device).train()
    x = torch.randn(2, channels, resolution, resolution, device=device)
    loader = DataLoader(TensorDataset(torch.arange(2)), batch_size=2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, _, _ = PrivacyEngine().make_private(
                module=unet, optimizer=torch.optim.SGD(unet.parameters(), lr=0.1), data_loader=loader,
                noise_multiplier=1.0, max_grad_norm=1.0, grad_sample_mode=mode)
            family = make_family(spec.family)
            steps = family.sample_train(2, torch.Generator().manual_seed(0)).to(device)
            family.loss(NoiseNet(model), x, steps, torch.randn_like(x)).mean().backward()
    except Exception as e:  # noqa: BLE001 - any failure is the finding
        return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
    return None


def rates(yaml_path: str, steps: int, repeats: int, device, modes, epsilon: float = 10.0) -> dict:
    cfg, _ = sweep_config.load(os.path.join(ROOT, yaml_path), [])
    spec = sweep_config.expand(cfg)[0].spec
    failed, specs = {}, {}
    for mode in modes:
        s = dataclasses.replace(spec, dp=dataclasses.replace(spec.dp, grad_sample_mode=mode))
        try:
            validate_dp(s.dp)
            specs[mode] = s
        except Exception as e:  # noqa: BLE001 - the door's one line
            failed[mode] = str(e)
    for mode in PROBED:
        reason = probe_opacus(mode, spec, cfg.data.resolution, cfg.data.channels, device)
        failed[mode] = reason or "runs (not offered)"
    plain, dp = [], {m: [] for m in specs}
    for _ in range(repeats):  # interleaved
        plain.append(time_train_steps(spec, float("inf"), steps, device))
        for mode, s in list(specs.items()):
            try:
                dp[mode].append(time_train_steps(s, epsilon, steps, device))
            except (RuntimeError, MemoryError) as e:  # e.g. out of memory at the paper size: the finding
                failed[mode] = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
                del specs[mode], dp[mode]
    p = statistics.median(plain)
    d = {m: statistics.median(v) for m, v in dp.items()}
    return {
        "model": yaml_path, "resolution": cfg.data.resolution, "channels": cfg.data.channels,
        "batch_size": spec.train.batch_size, "attention": spec.model.attention,
        "params": count_params(build_unet(spec.model, cfg.data.resolution, cfg.data.channels)),
        "steps_timed": steps, "repeats": repeats,
        "plain_steps_per_s": 1 / p,
        "dp_steps_per_s": {m: 1 / v for m, v in d.items()},
        "dp_over_plain": {m: v / p for m, v in d.items()},
        "failed": failed,
        "plain_s_per_step_all": plain, "dp_s_per_step_all": dp,
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", default="quickstart,paper", help="comma-separated: " + ",".join(SIZES))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--modes", default=",".join(MODES), help="dp.grad_sample_mode values to time")
    ap.add_argument("--output", help="also write the JSON here")
    ap.add_argument("--steps", type=int, help="timed steps per run (default: by size and --quick)")
    ap.add_argument("--repeats", type=int, help="interleaved repeats (default: by size)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = pick_device()
    out = {"device": str(dev), "torch_version": torch.__version__, "threads": torch.get_num_threads(),
           "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
    for size in args.sizes.split(","):
        small = size == "quickstart"
        # 5 steps x 3 repeats was too noisy on a shared 2-core VM (one DP run measured faster than its 1-step base)
        steps = (20 if args.quick else 30) if small or dev.type == "cuda" else (1 if args.quick else 3)
        repeats = 5 if small or dev.type == "cuda" else 1
        steps, repeats = args.steps or steps, args.repeats or repeats
        out[size] = rates(SIZES[size], steps, repeats, dev, args.modes.split(","))
        print(json.dumps({size: out[size]}), file=sys.stderr, flush=True)
    text = json.dumps(out, indent=1)
    print(text)
    if args.output:
        with open(args.output + ".tmp", "w") as f:
            f.write(text + "\n")
        os.replace(args.output + ".tmp", args.output)
    return out


if __name__ == "__main__":
    main()
