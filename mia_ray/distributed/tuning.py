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
from ..trial import eval_samples, reference_attacks, summary_line, trial_references, write_results
from .scoring import import_plugins, score_models_with_ray

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
    ref_specs = trial_references(trial)
    target, *refs = _trained_targets(trial, [trial.spec, *ref_specs], ctx)
    utility = _stored_utility(trial, ctx, target)
    t1 = time.monotonic()
    models = [(spec_json(trial.spec), trial.attacks)] + [(spec_json(s), reference_attacks(trial)) for s in ref_specs]
    per_model, nodes = score_models_with_ray(ctx.store, models, rows, ctx.resources, ctx.plugins)
    t2 = time.monotonic()
    references = list(zip(refs, per_model[1:], strict=True))
    metric_rows = write_results(ctx.root, ctx.sweep, trial, target, split, per_model[0], ctx.n_boot, utility,
                                references)
    log.info("%s: %d model(s) scored in %.1f s, results written in %.1f s",
             trial.trial_id, len(models), t2 - t1, time.monotonic() - t2)
    return _report(trial, metric_rows, nodes)


def _trained_targets(trial: Trial, specs: list, ctx: SweepContext) -> list:
    """The stored targets of ``specs`` (the trial's target, then its reference models): those missing are
    trained together, one task each with the training resources, outside the trial's placement group. A
    reference already stored (by another target of the same recipe, or another sweep) is reused. The target's
    task also measures its utility when that is asked for and not stored yet."""
    store = TargetStore(ctx.store)
    found = store.get(specs[0])
    missing = [s for s in specs[1:] if store.get(s) is None]
    if found is None or _utility_missing(trial, ctx, found):
        missing.insert(0, specs[0])
    if missing:
        r, t0 = ctx.resources, time.monotonic()
        task = _train_task.options(num_cpus=r.train_cpus, num_gpus=r.train_gpus, scheduling_strategy="DEFAULT")
        threads = int(max(1, r.train_cpus))
        ray.get([
            task.remote(ctx.store, spec_json(s), threads, ctx.plugins,
                        *((trial.utility, trial.heldout_from) if s is specs[0] else ()))
            for s in missing
        ])
        log.info("%s: %d model(s) trained in %.0f s (%d reference(s) of %d already stored)", trial.trial_id,
                 len(missing), time.monotonic() - t0, sum(s.reference is not None for s in specs)
                 - sum(s.reference is not None for s in missing), len(specs) - 1)
    return [store.get(s) for s in specs]


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
