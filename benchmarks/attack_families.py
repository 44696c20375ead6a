"""Every registered attack on an over-fitted tiny model of each family, and SecMI's AUC at each t_sec.

    python benchmarks/attack_families.py [--store DIR] [--t-sec 20 50 100 ...]

The model of tests/test_attack_conformance.py (UNet [16, 32], digits 8x8, 32 members, 1500 steps, lr 2e-3)
per family; 32 members + 32 non-members scored. Prints ONE JSON object: per family, each attack's AUC at
its best step (oracle: the point is whether an attack can see membership at all), and SecMI's AUC and the
noise-to-signal ratio s/a at each t_sec. docs/secmi_families.md holds a run. ~3 min on one thread once trained.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np
import torch

from mia_ray.attacks import ATTACKS, DiffusionAdapter
from mia_ray.attacks.likelihood import LikelihoodParams
from mia_ray.attacks.secmi import SecMIParams
from mia_ray.config import DataConfig, FamilyConfig, ModelConfig, TargetSpec, TrainConfig
from mia_ray.data import make_split, open_source
from mia_ray.families import FAMILIES, make_family
from mia_ray.metrics import summarize
from mia_ray.training import TargetStore, get_or_train

MEMBERS, TRAIN_STEPS = 32, 1500


def spec_of(family: str) -> TargetSpec:
    return TargetSpec(
        family=FamilyConfig(name=family),
        model=ModelConfig(block_out_channels=[16, 32], layers_per_block=1, norm_num_groups=8),
        train=TrainConfig(steps=TRAIN_STEPS, batch_size=64, lr=2e-3),
        data=DataConfig(source="digits"),
        train_size=MEMBERS,
    )


def auc(score, member) -> float:
    return round(float(summarize(score, member, n_boot=0)["auc"]), 3)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", default=None, help="target store (default: a temporary folder)")
    ap.add_argument("--t-sec", type=int, nargs="+", default=[20, 50, 100, 200, 300, 400, 500, 600, 800])
    args = ap.parse_args(argv)
    secmi_params = SecMIParams(t_sec=args.t_sec)
    ATTACKS.get("secmi")().validate(secmi_params, FamilyConfig().num_steps, "attacks.secmi")  # before any training
    torch.set_num_threads(1)
    store = TargetStore(args.store or tempfile.mkdtemp(prefix="attack_families_"))
    out = {"members": MEMBERS, "nonmembers": MEMBERS, "train_steps": TRAIN_STEPS, "families": {}}
    for family in FAMILIES.names():
        spec = spec_of(family)
        adapter = DiffusionAdapter(make_family(spec.family), get_or_train(store, spec, progress=False).load())
        src = open_source(spec.data)
        ids, member = make_split(len(src), MEMBERS, MEMBERS, 0).eval_ids()
        images, ids_t = torch.from_numpy(src.load(ids)), torch.from_numpy(ids)
        best = {}
        for name in ATTACKS.names():
            params = LikelihoodParams(rtol=1e-2, atol=1e-2) if name == "likelihood" else ATTACKS.get(name).Params()
            res = ATTACKS.get(name)().run(adapter, images, ids_t, params)
            aucs = [auc(s, member) for s in res.score]
            i = int(np.argmax(aucs))
            best[name] = {"auc": aucs[i], "step": res.steps[i]}
        secmi = ATTACKS.get("secmi")().run(adapter, images, ids_t, secmi_params)
        a, s = adapter.family.step_mean_std(torch.tensor(args.t_sec))
        out["families"][family] = {
            "best_step_auc": best,
            "secmi_by_t_sec": {t: {"auc": auc(secmi.score[j], member), "noise_to_signal": round(float(s[j] / a[j]), 4)}
                               for j, t in enumerate(args.t_sec)},
        }
        print(json.dumps({family: out["families"][family]}), flush=True)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
