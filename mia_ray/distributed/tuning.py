"""Ray Tune over the grid: one trial per target; training in a task, scoring through Ray Data.

Known to bite (docs/design.md, "Ray"): a trial's placement group and the Data actors it starts compete for the
same CPUs. So a trial reserves no CPU, training runs as a task with its own CPUs/GPUs
outside the trial's group (``scheduling_strategy="DEFAULT"``), scoring actors declare ``num_cpus``, and
``max_concurrent_trials`` bounds how many targets are in flight.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass

import ray
from ray import tune

from .. import results
from ..config import Trial, spec_from_json, spec_json
from ..errors import MiaRayError
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


def quiet_known_warnings() -> None:
    """Silence two warnings known to be harmless here, in this process (a training task), at their source.

    * Opacus "Secure RNG turned off": a target is trained to be measured, never released; a release would
      need secure_mode (csprng), a training choice, not something to repeat once per DP target.
    * torch "Full backward hook is firing when gradients are computed with respect to module outputs since no
      inputs require gradients": the images entering the first layer need no gradient; Opacus' per-sample
      gradients use exactly the module outputs' gradients (and the saved activations), so nothing is lost.
    """
    import warnings

    warnings.filterwarnings("ignore", message=r"Secure RNG turned off", category=UserWarning)
    warnings.filterwarnings("ignore", message=r"Full backward hook is firing when gradients are computed with "
                            r"respect to module outputs", category=UserWarning)


# Messages that Ray's raylet pushes to every driver, known to be harmless here (dropped without --verbose):
# Ray Data's detached ActorLocationTracker being restarted between trials (its calls are retried forever), and
# the "constructor arguments in the object store" warning for Ray Data's map actors (ray-project/ray#57733).
HARMLESS_RAY_MESSAGES = ("ActorLocationTracker", "has constructor arguments in the object store")


def quiet_ray_driver() -> None:
    """Drop the known-harmless raylet messages on this driver. Ray prints them from a background thread through
    ``ray._private.worker.print_to_stdstream`` whatever ``log_to_driver`` says; everything else still prints."""
    from ray._private import worker

    original = getattr(worker, "print_to_stdstream", None)
    if original is None or getattr(original, "_mia_ray_quiet", False):
        return

    def print_to_stdstream(data, ignore_prefix: bool = False):
        lines = [ln for ln in data.get("lines", []) if not any(m in ln for m in HARMLESS_RAY_MESSAGES)]
        if lines:
            original({**data, "lines": lines}, ignore_prefix)

    print_to_stdstream._mia_ray_quiet = True
    worker.print_to_stdstream = print_to_stdstream


@ray.remote
def _train_task(store_root: str, spec_text: str, threads: int, plugins: list, utility=None, heldout_from=0) -> str:
    """Train and store a target (no-op when stored), then measure its utility when ``utility`` (a UtilityConfig)
    is given (no-op when stored); runs with the resources of the training task (its GPU samples the images)."""
    import torch

    _setup_logging()
    quiet_known_warnings()
    import_plugins(plugins)
    torch.set_num_threads(max(1, threads))
    store = TargetStore(store_root)
    target = get_or_train(store, spec_from_json(spec_text), progress=True)
    if utility is not None and utility.enabled:
        from ..utility.target import get_or_measure

        get_or_measure(store_root, target, utility, heldout_from)
    return target.target_id


def run_one(trial: Trial, ctx: SweepContext, on_trained=None) -> dict:
    """Everything a Tune trial does: target -> samples -> scores (Ray Data) -> tables; returns its report.
    ``on_trained(seconds, stored)`` is called once the target is there (the console's "trained" event)."""
    _setup_logging()
    import_plugins(ctx.plugins)
    rows, split = eval_samples(trial)
    ref_specs = trial_references(trial)
    t0 = time.monotonic()
    (target, *refs), stored = _trained_targets(trial, [trial.spec, *ref_specs], ctx)
    if on_trained is not None:
        on_trained(time.monotonic() - t0, stored)
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


def _trained_targets(trial: Trial, specs: list, ctx: SweepContext) -> tuple[list, bool]:
    """The stored targets of ``specs`` (the trial's target, then its reference models): those missing are
    trained together, one task each with the training resources, outside the trial's placement group. A
    reference already stored (by another target of the same recipe, or another sweep) is reused. The target's
    task also measures its utility when that is asked for and not stored yet. Returns the targets and whether
    the trial's own target was stored already."""
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
    return [store.get(s) for s in specs], found is not None


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


def user_error(e: BaseException) -> MiaRayError | None:
    """The MiaRayError behind ``e`` (itself, or the cause of a Ray task / actor error wrapping it), else None."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        cause = getattr(e, "cause", None)  # RayTaskError: also an instance of its cause's class, but its text is
        if isinstance(e, MiaRayError) and not isinstance(cause, BaseException):  # the traceback: take the cause
            return e
        e = cause if isinstance(cause, BaseException) else (e.__cause__ or e.__context__)
    return None


def one_line(e: BaseException) -> str:
    """``e``'s message as one line (a Ray error's first line: the rest is its traceback)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def _trainable(config, trials=None, ctx=None):
    """A Tune trial. A user error (config, data, checkpoint: a MiaRayError, however deep in Ray it was raised)
    is deterministic: it is reported as the trial's result, so Tune does not retry it; any other exception
    propagates and FailureConfig retries the trial (a lost actor or node)."""
    trial = trials[config["trial"]]

    def on_trained(seconds, stored):
        tune.report({"trial": trial.trial_id, "event": "trained", "train_seconds": seconds, "stored": stored})

    try:
        report = run_one(trial, ctx, on_trained)
    except Exception as e:
        err = user_error(e)
        if err is None:
            raise
        tune.report({"trial": trial.trial_id, "event": "failed", "error": one_line(err)})
        return
    tune.report({**report, "event": "done"})


class _Console(tune.Callback):
    """Relays Tune's events on the driver to the sweep's console (``mia_ray.progress.SweepProgress``)."""

    def __init__(self, console):
        self.console = console

    def __getstate__(self):  # Tune pickles its run config (for a restore); a live console (a bar, its ticker
        return {"console": None}  # thread) stays with the driver

    def __setstate__(self, state):
        self.console = None

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.console is None:
            return
        event, tid = result.get("event"), result.get("trial", trial.config.get("trial"))
        if event == "trained":
            self.console.trained(tid, result.get("train_seconds"), bool(result.get("stored")))
        elif event == "failed":
            self.console.failed(tid, result.get("error", "?"))
        elif event == "done":
            self.console.finished(tid, summary_text(result))

    def on_trial_error(self, iteration, trials, trial, **info):
        if self.console is not None:
            self.console.failed(trial.config.get("trial"), "failed after retries (see --verbose for Ray's traceback)")


def summary_text(report: dict) -> str:
    """``loss AUC 0.81 (step 100), pia AUC 0.93 (step 50)``: one finished target's best per attack."""
    parts = []
    for key in sorted(k for k in report if k.endswith("_auc")):
        attack = key[: -len("_auc")]
        step = report.get(f"{attack}_step")
        parts.append(f"{attack} AUC {report[key]:.3f}" + ("" if step is None else f" (step {step})"))
    return ", ".join(parts)


def run_tune(trials: list[Trial], ctx: SweepContext, console=None, verbose: bool = True) -> list:
    """Run the trials that are not complete yet; returns one line per failed trial (``trial_id: message``).

    ``console``: receives trained / finished / failed events (``mia_ray.progress.SweepProgress``);
    ``verbose``: Tune's own status tables (else Tune prints nothing)."""
    todo = {t.trial_id: t for t in trials if not results.trial_done(ctx.root, t.trial_id)}
    local = "://" not in ctx.root
    storage = os.path.join(os.path.dirname(ctx.root), "_tune") if local else None
    if not todo:  # complete: the logs of a run killed after its last trial, before it removed them, go now
        if storage:
            _remove_run_logs(storage, ctx.sweep)
        return []
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
            failure_config=tune.FailureConfig(max_failures=2),  # transient failures; user errors: _trainable
            verbose=1 if verbose else 0,
            callbacks=[_Console(console)] if console is not None else None,
        ),
    )
    # Tune's new console prints its experiment header and paths even at verbose=0; its legacy reporter prints
    # nothing there (Ray 2.58). The switch is read when fit() starts; restored after.
    before = os.environ.get("RAY_AIR_NEW_OUTPUT")
    if not verbose:
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        grid = tuner.fit()
    finally:
        if not verbose:
            os.environ.pop("RAY_AIR_NEW_OUTPUT") if before is None else os.environ.update(RAY_AIR_NEW_OUTPUT=before)
    failed = []
    for r in grid:
        tid = (r.config or {}).get("trial", "?")
        if r.error is not None:
            err = user_error(r.error)
            failed.append(f"{tid}: {one_line(err if err is not None else r.error)}")
        elif (r.metrics or {}).get("event") == "failed":
            failed.append(f"{tid}: {r.metrics.get('error', '?')}")
    if storage and not failed:  # the sweep is complete: Tune's logs of it (kept for failed runs) are stale
        _remove_run_logs(storage, ctx.sweep)
    return failed


def _remove_run_logs(storage: str, sweep: str) -> None:
    """Remove the sweep's Tune run folders (``<sweep>-YYYYMMDD-HHMMSS``) under ``storage``, and ``storage`` once
    empty. Every run added ~0.5 MB that nothing reads: resuming is decided by the results tables
    (``results.trial_done``), not Tune's state; other sweeps' folders are left alone."""
    run = re.compile(re.escape(sweep) + r"-\d{8}-\d{6}")
    for entry in os.listdir(storage) if os.path.isdir(storage) else []:
        if run.fullmatch(entry):
            shutil.rmtree(os.path.join(storage, entry), ignore_errors=True)
    try:
        os.rmdir(storage)
    except OSError:  # other sweeps' logs are still there
        pass
