"""Optimiser steps per second, plain and DP-SGD (Opacus), at the quickstart size and the paper's model size.

    python benchmarks/training.py --quick     # quickstart model 8x8 batch 64; paper UNet 64x64 batch 32, 1 step
    python benchmarks/training.py             # more steps at both sizes

Prints ONE JSON object. A rate is ``train_target``'s own loop (random images of the right shape, the sweep
YAML's model / train / dp settings) over k + 1 steps minus a 1-step run (set-up and warm-up), so it is the
steady-state step of the real training code, DP accounting included; plain and DP runs are interleaved and
repeated, and each figure is the median. ``dp_over_plain`` is the DP/plain time ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import torch

from mia_ray import sweep_config
from mia_ray.estimate import time_train_steps
from mia_ray.models import count_params, pick_device

ROOT = os.path.join(os.path.dirname(__file__), "..")
SIZES = {"quickstart": "sweeps/quickstart.yaml", "paper": "sweeps/full_paper.yaml"}


def rates(yaml_path: str, steps: int, repeats: int, device, epsilon: float = 10.0) -> dict:
    cfg, _ = sweep_config.load(os.path.join(ROOT, yaml_path), [])
    spec = sweep_config.expand(cfg)[0].spec
    plain, dp = [], []
    for _ in range(repeats):  # interleaved
        plain.append(time_train_steps(spec, float("inf"), steps, device))
        dp.append(time_train_steps(spec, epsilon, steps, device))
    from mia_ray.models import build_unet

    p, d = statistics.median(plain), statistics.median(dp)
    return {
        "model": yaml_path, "resolution": cfg.data.resolution, "channels": cfg.data.channels,
        "batch_size": spec.train.batch_size,
        "params": count_params(build_unet(spec.model, cfg.data.resolution, cfg.data.channels)),
        "steps_timed": steps, "repeats": repeats,
        "plain_steps_per_s": 1 / p, "dp_steps_per_s": 1 / d, "dp_over_plain": d / p,
        "plain_s_per_step_all": plain, "dp_s_per_step_all": dp,
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", default="quickstart,paper", help="comma-separated: " + ",".join(SIZES))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = pick_device()
    out = {"device": str(dev), "torch_version": torch.__version__, "threads": torch.get_num_threads(),
           "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
    for size in args.sizes.split(","):
        small = size == "quickstart"
        steps = (5 if args.quick else 20) if small or dev.type == "cuda" else (1 if args.quick else 3)
        repeats = 3 if small or dev.type == "cuda" else 1
        out[size] = rates(SIZES[size], steps, repeats, dev)
        print(json.dumps({size: out[size]}), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
