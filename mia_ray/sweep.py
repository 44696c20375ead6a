"""``python -m mia_ray.sweep SWEEP.yaml [key=value ...]``: validate, plan, run, summarise, report."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import fields

from .errors import MiaRayError

log = logging.getLogger("mia_ray")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mia_ray.sweep", description=__doc__)
    p.add_argument("sweep", nargs="?", help="sweep YAML file, e.g. sweeps/quickstart.yaml")
    p.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. train_sizes=[64] train.steps=100")
    p.add_argument("--dry-run", action="store_true", help="print the plan only (no Ray, no data needed)")
    p.add_argument("--list", action="store_true", help="list families, attacks, sources (+ SWEEP's plugins)")
    p.add_argument("--plugins", default="", help="with --list: comma-separated plugin modules to import first")
    p.add_argument("--output", help="results root (overrides the YAML's output:), a path or s3://...")
    p.add_argument("--address", help="an existing Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report at the end")
    p.add_argument("--estimate", action="store_true", help="time the sweep's model here; print device-hours, exit")
    p.add_argument("--estimate-from", metavar="FILE", help="as --estimate, timings from a JSON (gpu_check.py)")
    p.add_argument("--price-per-hour", type=float, help="with --estimate: price of one device-hour")
    return p


def _list(args) -> None:
    import importlib

    from . import sweep_config
    from .attacks import ATTACKS
    from .data import SOURCES
    from .errors import ConfigError
    from .families import FAMILIES

    for m in [m for m in args.plugins.split(",") if m]:
        try:
            importlib.import_module(m)
        except ImportError as e:
            raise ConfigError(f"--plugins: cannot import {m!r} ({e}); allowed: importable module names") from None
    if args.sweep:
        sweep_config.load(args.sweep, args.overrides)  # imports the sweep's plugins
    print("families:", ", ".join(FAMILIES.names()))
    print("data sources:", ", ".join(SOURCES.names()))
    for name in ATTACKS.names():
        params = ATTACKS.get(name).Params
        opts = ", ".join(
            f"{f.name}={f.default_factory() if callable(f.default_factory) else f.default}"
            for f in fields(params)
        )
        print(f"attack {name}: {opts}, max_samples=None")


def plan_text(cfg, trials) -> str:
    """What the sweep will do, with its cost in model forward passes."""
    from .attacks import ATTACKS
    from .steps import is_stepwise
    from .sweep_config import results_root, store_root

    lines = [
        f"sweep {cfg.name!r}: {len(trials)} target(s) = families {list(cfg.families)} x train_sizes "
        f"{list(cfg.train_sizes)} x epsilons {list(cfg.epsilons)} x seeds {list(cfg.seeds)}",
        f"  data: {cfg.data.source}{':' + cfg.data.path if cfg.data.path else ''} at {cfg.data.resolution}px, "
        f"{cfg.eval_size} members + {cfg.eval_size} non-members scored per target",
        f"  training: {cfg.train.steps} steps x batch {cfg.train.batch_size} per target (skipped when stored)",
    ]
    total = 0
    for a in trials[0].attacks:
        n = 2 * (cfg.eval_size if a.max_samples is None else min(cfg.eval_size, a.max_samples))
        steps = ATTACKS.get(a.name)().steps(a.params, cfg.family.num_steps)
        if not is_stepwise(steps):
            lines.append(f"  attack {a.name}: {n} samples per target, step-free (ODE: forward+backward per NFE)")
            continue
        k = len(steps) * getattr(a.params, "draws", 1)
        total += n * k * len(trials)
        lines.append(f"  attack {a.name}: {n} samples x {k} step-draws = {n * k:,} forward passes per target")
    lines.append(f"  step-wise forward passes in all: {total:,}")
    lines.append(resources_line(cfg.resources))
    lines.append(f"  results: {results_root(cfg)}   target store: {store_root(cfg)}")
    return "\n".join(lines)


def resources_line(r) -> str:
    def show(v):
        return "auto" if v is None else f"{v:g}"

    return (
        f"  resources: {show(r.max_concurrent_trials)} concurrent trial(s), {r.scorer_actors} scorer actor(s) "
        f"x {show(r.scorer_cpus)} CPU / {show(r.scorer_gpus)} GPU, training {show(r.train_cpus)} CPU / "
        f"{show(r.train_gpus)} GPU"
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_intermixed_args(argv)  # flags may come before, between or after overrides
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if not args.sweep and not args.list:
        _parser().print_usage(sys.stderr)
        print("error: give a sweep YAML file (or --list)", file=sys.stderr)
        return 2
    try:
        if args.list:
            _list(args)
            return 0
        return _run(args)
    except MiaRayError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args) -> int:
    from . import sweep_config
    from .preflight import check_data, node_types_from_setting

    overrides = list(args.overrides) + ([f"output={args.output}"] if args.output else [])
    cfg, yaml_text = sweep_config.load(args.sweep, overrides)
    node_types_from_setting(cfg.resources.node_types or {})  # a bad resources.node_types is refused before Ray
    trials = sweep_config.expand(cfg)
    print(plan_text(cfg, trials), flush=True)
    if args.dry_run:
        print("dry run: nothing trained, scored or written")
        return 0
    if args.estimate or args.estimate_from:  # mia_ray/estimate.py: the bill, nothing trained or written
        from .estimate import Timing, bill, bill_text, measure

        timing = Timing.from_json(args.estimate_from) if args.estimate_from else measure(cfg, trials)
        print(bill_text(bill(trials, timing, cfg.family.num_steps, args.price_per_hour)))
        return 0
    check_data(cfg)
    root = sweep_config.results_root(cfg)
    errors = _run_on_ray(cfg, yaml_text, trials, root, args.address or os.environ.get("RAY_ADDRESS"))
    _print_results(root, report=not args.no_report)
    return _exit_status(root, trials, errors)


def _run_on_ray(cfg, yaml_text: str, trials: list, root: str, address: str | None) -> list:
    """Check the cluster, record the sweep, run the trials not yet complete; returns the trial errors."""
    from . import results, sweep_config
    from .distributed.session import cluster_view, ray_session
    from .distributed.tuning import SweepContext, run_tune
    from .preflight import check_output, check_resources, describe, resolve_resources, with_setting

    if not sys.stderr.isatty():
        os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    with ray_session(address, cfg.resources.num_cpus):
        cluster = cluster_view(connected=address is not None)
        print(describe(with_setting(cluster, cfg.resources)), flush=True)
        resources = resolve_resources(cfg.resources, cluster)
        print(resources_line(resources).replace("resources:", "resources (resolved):"), flush=True)
        check_resources(resources, cluster)
        check_output(cfg, cluster)
        results.write_text_atomic(root, "sweep.yaml", yaml_text)
        done = sum(results.trial_done(root, t.trial_id) for t in trials)
        if done:
            print(f"resuming: {done}/{len(trials)} trial(s) already complete in {root}", flush=True)
        ctx = SweepContext(
            cfg.name, root, sweep_config.store_root(cfg), resources, cfg.bootstrap, list(cfg.plugins)
        )
        return run_tune(trials, ctx)


def _print_results(root: str, report: bool) -> None:
    """The analysis of what was written (one call into ``analysis``: it reads only the Parquet results)."""
    from analysis import AnalysisError, finish

    from .results import SCHEMA_VERSION

    try:
        text, path = finish(root, report=report)
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return
    print()
    print(text)
    print(f"\nresults: {root}/{{metrics,scores,targets,splits}}/  (schema v{SCHEMA_VERSION})")
    if path:
        print(f"report: {path}")


def _exit_status(root: str, trials: list, errors: list) -> int:
    """0 when every trial is complete; else 1, with the errors and how to finish."""
    from .results import trial_done

    missing = [t.trial_id for t in trials if not trial_done(root, t.trial_id)]
    if not (errors or missing):
        return 0
    for e in errors:
        print(f"error: trial failed: {e}", file=sys.stderr)
    print(
        f"error: {len(missing)} trial(s) incomplete: {', '.join(missing)}; rerun the same command to finish them",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
