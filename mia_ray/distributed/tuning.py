"""Ray Tune over the grid: one trial per target; training in a task, scoring through Ray Data.

Known to bite (docs/design.md, "Ray"): a trial's placement group and the Data actors it starts compete for the
same CPUs. So a trial reserves no CPU, training runs as a task with its own CPUs/GPUs
outside the trial's group (``scheduling_strategy="DEFAULT"``), scoring actors declare ``num_cpus``, and
``max_concurrent_trials`` bounds how many targets are in flight.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass

import ray
from ray import tune

from .. import results
from ..config import Trial, spec_from_json, spec_json
from ..training import TargetStore, get_or_train
from ..trial import eval_samples, summary_line, write_results
from .scoring import import_plugins, score_with_ray

log = logging.getLogger("mia_ray")
# What a trial itself holds: no CPU (its work runs in tasks and actors with their own resources) and a
# token of memory, because Tune refuses an empty bundle. Even 0.01 CPU per trial starved a 2-core box:
# two 1-CPU training tasks no longer fit beside two trials holding 0.02 CPU (measured).
TRIAL_BUNDLE = {"CPU": 0, "memory": 64 * 2**20}


@dataclass
class SweepContext:
    sweep: str
    root: str  # <output>/<sweep name>
    store: str
    resources: object
    n_boot: int
    plugins: list


def _setup_logging():
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)


@ray.remote
def _train_task(store_root: str, spec_text: str, threads: int, plugins: list, utility=None, heldout_from=0) -> str:
    """Train and store a target (no-op when stored), then measure its utility when ``utility`` (a UtilityConfig)
    is given (no-op when stored); runs with the resources of the training task (its GPU samples the images)."""
    import torch

    _setup_logging()
    import_plugins(plugins)
    torch.set_num_threads(max(1, threads))
    store = TargetStore(store_root)
    target = get_or_train(store, spec_from_json(spec_text), progress=True)
    if utility is not None and utility.enabled:
        from ..utility.target import get_or_measure

        get_or_measure(store_root, target, utility, heldout_from)
    return target.target_id


def run_one(trial: Trial, ctx: SweepContext) -> dict:
    """Everything a Tune trial does: target -> samples -> scores (Ray Data) -> tables; returns its report."""
    _setup_logging()
    import_plugins(ctx.plugins)
    rows, split = eval_samples(trial)
    target = _trained_target(trial, ctx)
    utility = _stored_utility(trial, ctx, target)
    t1 = time.monotonic()
    scores, nodes = score_with_ray(ctx.store, spec_json(trial.spec), trial.attacks, rows, ctx.resources, ctx.plugins)
    t2 = time.monotonic()
    metric_rows = write_results(ctx.root, ctx.sweep, trial, target, split, scores, ctx.n_boot, utility)
    log.info("%s: scored in %.0f s (actor start-up included), results written in %.0f s",
             trial.trial_id, t2 - t1, time.monotonic() - t2)
    return _report(trial, metric_rows, nodes)


def _trained_target(trial: Trial, ctx: SweepContext):
    """The stored target of the trial, trained first in a task with the training resources when missing (the
    same task measures its utility when that is asked for and not stored yet)."""
    store = TargetStore(ctx.store)
    found = store.get(trial.spec)
    if found is None or _utility_missing(trial, ctx, found):
        r, t0 = ctx.resources, time.monotonic()
        task = _train_task.options(num_cpus=r.train_cpus, num_gpus=r.train_gpus, scheduling_strategy="DEFAULT")
        threads = int(max(1, r.train_cpus))
        ray.get(task.remote(ctx.store, spec_json(trial.spec), threads, ctx.plugins, trial.utility, trial.heldout_from))
        log.info("%s: target trained / utility measured in %.0f s", trial.trial_id, time.monotonic() - t0)
    return store.get(trial.spec)


def _utility_missing(trial: Trial, ctx: SweepContext, target) -> bool:
    return trial.utility is not None and trial.utility.enabled and _stored_utility(trial, ctx, target) is None


def _stored_utility(trial: Trial, ctx: SweepContext, target) -> dict | None:
    """The target's stored utility record (measured by the training task), or None when utility is off."""
    if trial.utility is None or not trial.utility.enabled:
        return None
    from ..utility.target import stored

    return stored(ctx.store, target, trial.utility, trial.heldout_from)


def _report(trial: Trial, metric_rows: list, nodes: set) -> dict:
    """What Tune records of a trial: each attack's best AUC and step (no step key for a step-free attack)."""
    report = {"trial": trial.trial_id, "scorer_nodes": ",".join(sorted(nodes))}
    for attack, best in summary_line(metric_rows).items():
        report[f"{attack}_auc"] = best["auc"]
        if best["step"] is not None:
            report[f"{attack}_step"] = best["step"]
    return report


def _trainable(config, trials=None, ctx=None):
    tune.report(run_one(trials[config["trial"]], ctx))


def run_tune(trials: list[Trial], ctx: SweepContext) -> list:
    """Run the trials that are not complete yet; returns the Tune errors (empty on success)."""
    todo = {t.trial_id: t for t in trials if not results.trial_done(ctx.root, t.trial_id)}
    if not todo:
        return []
    local = "://" not in ctx.root
    storage = os.path.join(os.path.dirname(ctx.root), "_tune") if local else None
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, trials=todo, ctx=ctx), tune.PlacementGroupFactory([TRIAL_BUNDLE])
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search(sorted(todo))},
        # reuse_actors: a fresh trial process pays ~7 s importing torch + diffusers on a 2-core box (measured)
        tune_config=tune.TuneConfig(max_concurrent_trials=ctx.resources.max_concurrent_trials, reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"{ctx.sweep}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=storage,
            failure_config=tune.FailureConfig(max_failures=2),
            verbose=1,
        ),
    )
    grid = tuner.fit()
    return [str(e).splitlines()[0] for e in grid.errors]
