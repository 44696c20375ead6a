"""How much of the likelihood attack's spread is Hutchinson probe noise, and what more probes cost.

    python benchmarks/likelihood_probes.py [--store DIR] [--probes 32] [--threads 1]

On quickstart-like targets (sweeps/quickstart.yaml: [16, 16] UNet, 300 steps, 64 digits, no DP; ddpm and
vpsde), 16 members + 16 non-members:

1. one ODE solve carries ``--probes`` independent Rademacher probes, each with its own divergence integral
   on the shared trajectory (``bits_per_dim_probes``), so the per-sample bits/dim of every single probe
   are known: their std over probes is the estimator's noise at 1 probe (at P probes it is that / sqrt(P));
2. AUC for P = 1, 2, 4, 8 probes over disjoint groups of the recorded probes: its spread is what the
   probe seed does to the attack's result;
3. the wall time of the attack's own solve (``bits_per_dim``) at P = 1, 2, 4, 8 on the same 32 samples,
   interleaved repeats, and the drift rows evaluated per sample (NFE, padding of small batches included).

Prints ONE JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch

from mia_ray.attacks import DiffusionAdapter
from mia_ray.attacks.likelihood import LikelihoodParams, bits_per_dim, bits_per_dim_probes
from mia_ray.config import DataConfig, FamilyConfig, ModelConfig, TargetSpec, TrainConfig
from mia_ray.data import make_split, open_source
from mia_ray.families import make_family
from mia_ray.metrics import auc
from mia_ray.training.store import TargetStore


def quickstart_spec(family: str) -> TargetSpec:
    return TargetSpec(
        family=FamilyConfig(name=family),
        model=ModelConfig(block_out_channels=[16, 16], layers_per_block=1, attention=False, norm_num_groups=8),
        train=TrainConfig(steps=300, batch_size=64, lr=0.003, warmup=0, grad_clip=1.0, ema_decay=0.0),
        data=DataConfig(source="digits", resolution=8, channels=1),
        train_size=64,
        seed=0,
    )


class CountingAdapter:
    """Counts the rows the drift is evaluated on (NFE per sample = rows / samples)."""

    def __init__(self, adapter):
        self.adapter, self.rows = adapter, 0
        self.num_steps, self.device, self.t_range = adapter.num_steps, adapter.device, adapter.t_range

    def ode_drift(self, x, t):
        self.rows += len(x)
        return self.adapter.ode_drift(x, t)

    def prior_logp(self, z):
        return self.adapter.prior_logp(z)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default="/tmp/mia_ray_probe_store")
    ap.add_argument("--probes", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--families", default="ddpm,vpsde")
    ap.add_argument("--timing-repeats", type=int, default=3)
    ap.add_argument("--skip-record", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    store = TargetStore(args.store)
    out = {"threads": args.threads, "recorded_probes": args.probes, "samples": "16 members + 16 non-members"}
    for fam in args.families.split(","):
        spec = quickstart_spec(fam)
        target = store.get_or_train(spec, progress=False)
        adapter = DiffusionAdapter(make_family(spec.family), target.load())
        src = open_source(spec.data)
        ids, member = make_split(len(src), 64, 64, 0, src.describe()).eval_ids()
        sel = np.concatenate([np.flatnonzero(member)[:16], np.flatnonzero(~member)[:16]])
        x, sid, lab = torch.from_numpy(src.load(ids[sel])), torch.from_numpy(ids[sel]), member[sel]
        counted = CountingAdapter(adapter)
        t0 = time.perf_counter()
        params = LikelihoodParams(probes=2 if args.skip_record else args.probes)
        bpd = bits_per_dim_probes(counted, x, sid, params).double().numpy()
        rec_s = time.perf_counter() - t0
        nfe = counted.rows / len(sel)
        mean_bpd = bpd.mean(1)
        r = {
            "train_seconds": target.meta["train_seconds"],
            "record_seconds": round(rec_s, 1),
            "nfe_per_sample": nfe,  # drift rows / sample
            "probe_std_1_bpd_median": float(np.median(bpd.std(1, ddof=1))),
            "probe_std_1_bpd_max": float(bpd.std(1, ddof=1).max()),
            "member_minus_nonmember_gap_bpd": float(mean_bpd[~lab].mean() - mean_bpd[lab].mean()),
            "between_sample_std_bpd": float(mean_bpd.std(ddof=1)),
            "auc_all_recorded_probes": float(auc(-mean_bpd, lab)),
            "auc_by_probes": {},
            "nfe_per_sample_by_probes": {},
        }
        for p in (1, 2, 4, 8):
            if bpd.shape[1] < 2 * p:
                continue
            groups = bpd[:, : (args.probes // p) * p].reshape(len(sel), -1, p).mean(2)  # [B, G]
            aucs = [auc(-groups[:, g], lab) for g in range(groups.shape[1])]
            r["auc_by_probes"][p] = {
                "groups": len(aucs), "mean": float(np.mean(aucs)), "std": float(np.std(aucs, ddof=1)),
                "min": float(np.min(aucs)), "max": float(np.max(aucs)),
                "probe_std_bpd_median": float(np.median(bpd.std(1, ddof=1)) / math.sqrt(p)),
            }
        times = {p: [] for p in (1, 2, 4, 8)}
        for _ in range(args.timing_repeats):  # interleaved, so that load changes hit every P alike
            for p in times:
                counted.rows = 0
                t0 = time.perf_counter()
                bits_per_dim(counted, x, sid, LikelihoodParams(probes=p))
                times[p].append(time.perf_counter() - t0)
                r["nfe_per_sample_by_probes"][p] = counted.rows / len(sel)
        r["seconds_by_probes"] = {p: round(float(np.median(v)), 2) for p, v in times.items()}
        r["ms_per_nfe_by_probes"] = {
            p: round(1000 * r["seconds_by_probes"][p] / r["nfe_per_sample_by_probes"][p], 2) for p in times
        }
        out[fam] = r
        print(json.dumps({fam: r}), flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    main()
