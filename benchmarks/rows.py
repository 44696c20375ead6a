"""Rows per network call on CPU: per-row time of UNet forwards (no grad) and forward + VJP (the likelihood's
evaluation) against the number of rows per call, for several model and image sizes.

    python benchmarks/rows.py --quick      # ~10 minutes on 2 CPU cores
    python benchmarks/rows.py              # more repeats

Prints ONE JSON object. For each (model, image, workload): microseconds per row at each row count (median
of interleaved repeats), the best row count, the row count ``DiffusionAdapter.max_rows`` picks (the CPU cap
``CPU_ROW_FLOATS / (H x W x first-level channels)``, at most 1024 = the attacks' default ``max_batch``) and
two ratios: ``default_over_rule`` (1024 rows vs the rule: the speed-up the rule gives) and
``rule_over_best`` (how far the rule is from the best row count measured; 1.0 = the best).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from diffusers import UNet2DModel

from mia_ray.attacks import DiffusionAdapter
from mia_ray.config import FamilyConfig
from mia_ray.families import make_family

ROWS = (16, 32, 64, 128, 256, 512, 1024)
# (first-level channels, image side, image channels, attention): the quickstart, the tests' tiny model, and
# CIFAR-like sizes
CASES = (
    ((16, 16), 8, 1, False),
    ((16, 32), 8, 1, False),
    ((32, 64), 16, 3, False),
    ((32, 64), 32, 3, False),
    ((16, 32), 16, 1, True),
)
DEFAULT_MAX_BATCH = 1024


def _unet(channels, side, c, attention) -> UNet2DModel:
    down = ("AttnDownBlock2D" if attention else "DownBlock2D",) * len(channels)
    up = ("AttnUpBlock2D" if attention else "UpBlock2D",) * len(channels)
    torch.manual_seed(0)
    return UNet2DModel(sample_size=side, in_channels=c, out_channels=c, block_out_channels=channels,
                       layers_per_block=1, norm_num_groups=8, down_block_types=down, up_block_types=up)


def _per_row_us(adapter: DiffusionAdapter, shape, rows: int, workload: str, row_budget: int) -> float:
    x = torch.randn((rows,) + shape)
    tau = torch.randint(0, 1000, (rows,)).float()
    v = torch.randn_like(x)
    calls = max(1, row_budget // rows)

    def once():
        if workload == "forward":
            with torch.no_grad():
                adapter.net(x, tau)
        else:
            xr = x.detach().requires_grad_(True)
            with torch.enable_grad():
                torch.autograd.grad(adapter.net(xr, tau), xr, v)

    once()  # warm-up
    t = time.perf_counter()
    for _ in range(calls):
        once()
    return (time.perf_counter() - t) / (calls * rows) * 1e6


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and rows timed (~10 minutes)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else 5
    out = {"device": "cpu", "torch_version": torch.__version__, "threads": args.threads, "repeats": repeats,
           "cases": []}
    for channels, side, c, attention in CASES:
        unet = _unet(channels, side, c, attention)
        adapter = DiffusionAdapter(make_family(FamilyConfig(name="ddpm")), unet, device="cpu")
        shape = (c, side, side)
        rule = adapter.max_rows(DEFAULT_MAX_BATCH, (1,) + shape)
        budget = (4096 if args.quick else 8192) * 64 // (side * side)  # rows timed per measurement
        for workload in ("forward", "forward_vjp"):
            times: dict[int, list[float]] = {r: [] for r in ROWS}
            for _ in range(repeats):  # interleaved
                for r in ROWS:
                    times[r].append(_per_row_us(adapter, shape, r, workload, budget))
            med = {r: statistics.median(v) for r, v in times.items()}
            best = min(med, key=med.get)
            out["cases"].append({
                "block_out_channels": list(channels), "image": [c, side, side], "attention": attention,
                "workload": workload, "us_per_row": {str(r): round(t, 1) for r, t in med.items()},
                "best_rows": best, "rule_rows": rule,
                "default_over_rule": med[DEFAULT_MAX_BATCH] / med[rule],
                "rule_over_best": med[rule] / med[best],
            })
            print(json.dumps(out["cases"][-1]), file=sys.stderr, flush=True)  # progress
    out["median_default_over_rule"] = statistics.median(k["default_over_rule"] for k in out["cases"])
    out["max_rule_over_best"] = max(k["rule_over_best"] for k in out["cases"])
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
