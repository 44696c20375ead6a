"""Scoring throughput with 1 and 2 scorer actors, and what each actor and each batch costs on top of compute.

    python benchmarks/scaling.py                 # ~3-5 minutes on 2 CPU cores

Prints ONE JSON object. Same workload as ``benchmarks/scoring.py`` (the loss attack at 100 steps over 2 x 64
digits samples of a tiny DDPM from ``--store``). Each actor has 1 CPU and 1 torch thread; a local Ray gets
``--cpus`` CPUs (default: all, at least 2).

* ``samples_per_s_N_actors``: throughput of ``score_with_ray`` with N scoring workers (tasks on Ray's pooled
  workers, model cached: one untimed warm-up call first), the whole call;
* ``scaling_2_actors_vs_1``: the ratio of the two;
* ``per_batch_overhead_seconds``: time per batch through Ray with one actor minus the in-process time per
  batch (``score_in_process``, 1 torch thread) at the same batch size: scheduling, (de)serialisation, the
  object store and Ray Data's bookkeeping.

Repeats are interleaved (in-process, 1 actor, 2 actors, ...); every figure is a median over ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

import ray  # noqa: E402
import torch  # noqa: E402
from scoring import STEPS, med, time_in_process, time_ray, workload  # noqa: E402  (benchmarks/)

from mia_ray.config import Resources  # noqa: E402
from mia_ray.distributed.session import LOCAL_SYSTEM_CONFIG  # noqa: E402

ACTORS = (1, 2)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cpus", type=int, default=max(2, len(os.sched_getaffinity(0))))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16, help="samples per scorer call (both paths)")
    ap.add_argument("--store", default="/tmp/mia_ray_bench_store", help="target store (reused if present)")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    trial, target, rows = workload(args.store)
    n = len(rows["sample_id"])
    batches = -(-n // args.batch_size)
    ray.init(num_cpus=args.cpus, include_dashboard=False, configure_logging=False, log_to_driver=False,
             _system_config=LOCAL_SYSTEM_CONFIG)
    try:
        time_ray(args.store, trial, rows, Resources(scorer_actors=max(ACTORS), batch_size=args.batch_size))
        load_before = os.getloadavg()[0]
        time_in_process(trial, target, {k: v[:1] for k, v in rows.items()}, args.batch_size)  # warm-up
        inproc = []
        calls = {a: [] for a in ACTORS}
        for _ in range(args.repeats):
            inproc.append(time_in_process(trial, target, rows, args.batch_size))
            for a in ACTORS:
                res = Resources(scorer_actors=a, scorer_cpus=1, batch_size=args.batch_size)
                calls[a].append(time_ray(args.store, trial, rows, res))
    finally:
        ray.shutdown()
    compute = {a: med(c["compute"] for c in calls[a]) for a in ACTORS}
    inproc_batch = med(inproc) / batches
    out = {
        "benchmark": "scaling",
        "workload": f"loss attack, {len(STEPS)} steps, {n} samples, batch {args.batch_size} ({batches} batches)",
        "cpus": args.cpus,
        "threads_per_actor": 1,
        "torch_version": torch.__version__,
        "ray_version": ray.__version__,
        **{f"samples_per_s_{a}_actor{'s' if a > 1 else ''}": n / compute[a] for a in ACTORS},
        "scaling_2_actors_vs_1": compute[1] / compute[2],
        "inprocess_1_thread_samples_per_s": n / med(inproc),
        "inprocess_seconds_per_batch": inproc_batch,
        "ray_seconds_per_batch_1_actor": compute[1] / batches,
        "per_batch_overhead_seconds": compute[1] / batches - inproc_batch,
        "loadavg_1min_before_after": [load_before, os.getloadavg()[0]],
        "repeats": args.repeats,
        "raw_seconds": {
            "inprocess_1_thread": inproc,
            **{f"ray_calls_{a}_actor": calls[a] for a in ACTORS},
        },
    }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
