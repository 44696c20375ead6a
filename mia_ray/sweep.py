"""``python -m mia_ray.sweep SWEEP.yaml [key=value ...]``: validate, plan, run, summarise, report."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import fields

from .config import FamilyConfig
from .errors import ConfigError, MiaRayError, OneLineParser

log = logging.getLogger("mia_ray")


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m mia_ray.sweep", description=__doc__)
    p.add_argument("sweep", nargs="?", help="sweep YAML file, e.g. sweeps/quickstart.yaml")
    p.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. train_sizes=[64] train.steps=100")
    p.add_argument("--dry-run", action="store_true", help="print the plan only (no Ray, no data needed)")
    p.add_argument("--list", action="store_true", help="list families, attacks, sources (+ SWEEP's plugins)")
    p.add_argument("--plugins", default="", help="with --list: comma-separated plugin modules to import first")
    p.add_argument("--output", help="results root (overrides the YAML's output:), a path or s3://...")
    p.add_argument("--address", help="an existing Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report at the end")
    p.add_argument("--verbose", action="store_true", help="show Ray's and Tune's own output (logs, status tables)")
    p.add_argument("--estimate", action="store_true", help="time the sweep's model here; print device-hours, exit")
    p.add_argument("--estimate-from", metavar="FILE", help="as --estimate, timings from a JSON (gpu_check.py)")
    p.add_argument("--price-per-hour", type=float, help="with --estimate: price of one device-hour")
    return p


def _list(args) -> None:

    from . import sweep_config
    from .attacks import ATTACKS
    from .data import SOURCES
    from .families import FAMILIES

    sweep_config.import_plugins([m for m in args.plugins.split(",") if m], key="--plugins")
    if args.sweep:
        sweep_config.load(args.sweep, args.overrides)  # imports the sweep's plugins
    print("families:", ", ".join(FAMILIES.names()))
    print("data sources:", ", ".join(SOURCES.names()))
    t = FamilyConfig().num_steps
    for name in ATTACKS.names():
        params = ATTACKS.get(name).Params
        opts = ", ".join(
            f"{f.name}={f.default_factory() if callable(f.default_factory) else f.default}"
            for f in fields(params)
        )
        print(f"attack {name}: {opts}, max_samples=None")
        cost, text = attack_cost(name, params(), t)
        print(f"  cost: {text} per sample (these defaults, T = {t})" if cost else f"  {text}")


def attack_cost(name: str, params, num_steps: int):
    """(the attack's declared Cost or None, its text): ``31 fwd``, ``~95 fwd + ~95 bwd (estimate)``, or
    ``cost undeclared`` for an attack (a plugin's) that does not declare one."""
    from .attacks import ATTACKS

    try:
        cost = ATTACKS.get(name)().cost(params, num_steps)
    except NotImplementedError:
        return None, "cost undeclared"
    return cost, cost.describe()


def _passes(n: float, estimate: bool) -> str:
    return f"{'~' if estimate else ''}{n:,.0f}"


def plan_text(cfg, trials) -> str:
    """What the sweep will do, with its cost: samples x the network passes each attack declares per sample."""
    from .sweep_config import given_membership, results_root, store_root

    given = given_membership(cfg.data)
    sizes = [trials[0].spec.train_size] if given else list(cfg.train_sizes)
    lines = [
        f"sweep {cfg.name!r}: {len(trials)} target(s) = families {list(cfg.families)} x train_sizes "
        f"{sizes} x epsilons {list(cfg.epsilons)} x seeds {list(cfg.seeds)}",
    ]
    from .attacks import ATTACKS

    refs = max((getattr(a.params, "references", 0) for a in trials[0].attacks
                if getattr(ATTACKS.get(a.name), "needs_references", False)), default=0)
    if given:
        lines.append(f"  data: given members {cfg.data.members} + non-members {cfg.data.nonmembers} "
                     f"({cfg.data.source}) at {cfg.data.resolution}px, {cfg.eval_size} of each scored per target")
    else:
        where = f"{cfg.data.source}{':' + cfg.data.path if cfg.data.path else ''}"
        lines.append(f"  data: {where} at {cfg.data.resolution}px, {cfg.eval_size} members + {cfg.eval_size} "
                     "non-members scored per target")
    if cfg.model.pretrained:
        lines.append(f"  model: given, {cfg.model.pretrained} ({cfg.family.name}, T = {cfg.family.num_steps}); "
                     "nothing is trained")
    else:
        lines.append(f"  training: {cfg.train.steps} steps x batch {cfg.train.batch_size} per target "
                     "(skipped when stored)")
    if refs:
        lines.append(f"  reference models (LiRA): {refs} per target = {refs * len(trials)} more trainings of "
                     f"the same recipe, each on half of a 2 x train_size universe (skipped when stored)")
    fwd = bwd = 0.0
    estimate = undeclared = False
    for a in trials[0].attacks:
        n = 2 * (cfg.eval_size if a.max_samples is None else min(cfg.eval_size, a.max_samples))
        n += cfg.audit.canaries  # canaries are scored by every attack (issue 13)
        cost, text = attack_cost(a.name, a.params, cfg.family.num_steps)
        if cost is None:
            undeclared = True
            lines.append(f"  attack {a.name}: {n} samples per target, {text}")
            continue
        models = 1 + (refs if getattr(ATTACKS.get(a.name), "needs_references", False) else 0)
        estimate |= cost.estimate
        fwd += n * cost.forward * len(trials) * models
        bwd += n * cost.backward * len(trials) * models
        per = f"{_passes(n * cost.forward * models, cost.estimate)} forward"
        if cost.backward:
            per += f" + {_passes(n * cost.backward * models, cost.estimate)} backward"
        on = f" x {models} models" if models > 1 else ""
        lines.append(f"  attack {a.name}: {n} samples x ({text}){on} = {per} passes per target")
    total = f"{_passes(fwd, estimate)} forward" + (f" + {_passes(bwd, estimate)} backward" if bwd else "")
    lines.append(f"  network passes in all: {total}" + (" (attacks without a declared cost not counted)"
                                                         if undeclared else ""))
    lines.extend(_issue13_lines(cfg))
    lines.append(resources_line(cfg.resources))
    lines.append(f"  results: {results_root(cfg)}   target store: {store_root(cfg)}")
    return "\n".join(lines)


def _issue13_lines(cfg) -> list[str]:
    """Plan lines of the utility measurement and the canary audit (issue 13)."""
    out = []
    u, a = cfg.utility, cfg.audit
    from .sweep_config import given_membership

    if u.enabled and given_membership(cfg.data):
        out.append("  utility: not measured (a given model on given members: no pool to hold images out of)")
    elif u.enabled:
        out.append(f"  utility: {u.samples} DDIM samples x {u.sampler_steps} steps per target vs <= {u.heldout} "
                   "held-out images (measured once, kept in the store)")
    if a.canaries:
        k_plus, k_minus = a.guesses()
        out.append(f"  canary audit: {a.canaries} canaries per target (each trained on with prob. 1/2), scored by "
                   f"every attack; guesses k+ = {k_plus}, k- = {k_minus}, alpha = {a.alpha:g}")
    return out


def resources_line(r) -> str:
    def show(v):
        return "auto" if v is None else f"{v:g}"

    return (
        f"  resources: {show(r.max_concurrent_trials)} concurrent trial(s), {r.scorer_actors} scoring worker(s) "
        f"x {show(r.scorer_cpus)} CPU / {show(r.scorer_gpus)} GPU, training {show(r.train_cpus)} CPU / "
        f"{show(r.train_gpus)} GPU"
    )


# Loggers that speak only with --verbose: Ray's own INFO lines ("Started a local Ray instance", ...) and Tune's
# / Train's warnings and trial tracebacks (a failed trial is reported as one line by the sweep instead).
RAY_LOGGERS = ("ray", "ray.tune", "ray.train", "ray.data", "ray.air")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(message)s",
                        stream=sys.stderr)
    if not verbose:
        for name in RAY_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)


def _check_estimate_flags(args) -> None:
    """--price-per-hour only with an estimate, and not negative (it would otherwise start the real sweep);
    --estimate-from not blank (also the real sweep); --address a Ray address (also at --dry-run: contacts nothing);
    --estimate / --estimate-from not with --dry-run (which printed the plan alone, no estimate); --estimate not
    with --address (it times this machine); --plugins only with --list (a run ignored it)."""
    if args.list:  # --list printed the registries and exited 0: an estimate, a dry run or an output asked beside
        # it was ignored without a word
        ignored = [flag for flag, on in (("--dry-run", args.dry_run), ("--estimate", args.estimate),
                                         ("--estimate-from", args.estimate_from is not None),
                                         ("--price-per-hour", args.price_per_hour is not None),
                                         ("--output", args.output is not None), ("--address", args.address),
                                         ("--no-report", args.no_report)) if on]
        if ignored:
            raise ConfigError(f"--list with {', '.join(ignored)}: allowed: --list alone (with a SWEEP, its overrides "
                              "and --plugins: it lists families, attacks and sources, and runs nothing)")
    if args.plugins and not args.list:  # was ignored: the sweep ran without the plugin its attacks may need
        raise ConfigError(f"--plugins {args.plugins} works with --list only; a sweep imports its plugins: key "
                          f"(in the YAML, or plugins=[{args.plugins}] as an override)")
    if args.estimate_from is not None and not args.estimate_from.strip():  # '' is falsy: the real sweep started
        raise ConfigError(f"--estimate-from {args.estimate_from!r}; allowed: the path of a timings JSON file "
                          "(benchmarks/gpu_check.py writes one), or --estimate to time this machine")
    if args.estimate and args.estimate_from:  # the file won silently: the user asked to time this machine too
        raise ConfigError(f"--estimate with --estimate-from {args.estimate_from}: allowed: one of them (--estimate "
                          "times this machine, --estimate-from takes another device's timings)")
    if args.dry_run and (args.estimate or args.estimate_from):
        flag = "--estimate" if args.estimate else "--estimate-from"
        raise ConfigError(f"{flag} with --dry-run: allowed: one of them (--dry-run prints the plan only; {flag} "
                          "prints the plan and its device-hours), nothing is trained either way")
    if args.estimate and args.address:  # ignored: the bill was of this machine's device, not the cluster's
        raise ConfigError(f"--estimate with --address {args.address}: --estimate times this machine's device, not "
                          "the cluster's; allowed: --estimate alone on a machine like the cluster's nodes, or "
                          "--estimate-from the JSON benchmarks/gpu_check.py writes on one")
    if args.address is not None:  # checked here, without contacting it: a dry run never looked at it
        from .preflight import check_address

        if not args.address.strip():  # '' is falsy: the sweep started a local Ray instead
            raise ConfigError(f"--address {args.address!r}; allowed: host:port of a Ray head (e.g. 10.0.0.5:6379), "
                              "ray://host:port (Ray Client), auto or local; leave it out for a local Ray")
        check_address(args.address, f"--address {args.address}")
    if args.price_per_hour is None:
        return
    if not (args.estimate or args.estimate_from):
        raise ConfigError("--price-per-hour needs --estimate or --estimate-from (it prices their device-hours)")
    if not 0 <= args.price_per_hour < float("inf"):
        raise ConfigError(f"--price-per-hour = {args.price_per_hour}; allowed: a number >= 0")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_intermixed_args(argv)  # flags may come before, between or after overrides
    _setup_logging(args.verbose)
    if not args.sweep and not args.list:
        print("error: give a sweep YAML file (or --list); see python -m mia_ray.sweep --help", file=sys.stderr)
        return 2
    try:
        _check_estimate_flags(args)
        if args.list:
            _list(args)
            return 0
        return _run(args)
    except MiaRayError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args) -> int:
    from . import sweep_config
    from .data import SOURCES
    from .preflight import (
        check_address,
        check_data,
        check_local_cpus,
        check_local_gpus,
        check_remote,
        check_writable,
        node_types_from_setting,
    )
    from .resume import check_readable, check_resumable

    if args.output == "":  # was dropped: the results went to the YAML's output
        raise ConfigError("--output ''; allowed: a folder path or a URI such as s3://bucket/prefix")
    # a path, quoted: bare, YAML read --output null / '~' as null and 'a: b' as a mapping (JSON strings are YAML)
    output = [f"output={json.dumps(args.output)}"] if args.output is not None else []
    try:
        cfg, yaml_text = sweep_config.load(args.sweep, list(args.overrides) + output)
    except ConfigError as e:  # the override made of --output: named as the flag the user gave
        blamed = f"override {output[0]!r}: " if output else None
        if blamed and str(e).startswith(blamed):
            raise ConfigError(f"--output {args.output}: {str(e)[len(blamed):]}") from None
        raise
    node_types_from_setting(cfg.resources.node_types or {})  # a bad resources.node_types is refused before Ray
    trials = sweep_config.expand(cfg)
    print(plan_text(cfg, trials), flush=True)
    check_writable(cfg)
    if args.dry_run:
        if not SOURCES.get(cfg.data.source).needs_path:  # bundled data (digits): checked here too, instantly
            check_data(cfg)
        if cfg.model.pretrained and "://" not in cfg.model.pretrained:  # a missing or unfit model passed, planned
            from .door import check_model  # with the default T = 1000 instead of its scheduler's

            check_model(cfg)
        print("dry run: nothing trained, scored or written")
        return 0
    if args.estimate or args.estimate_from:  # mia_ray/estimate.py: the bill, nothing trained or written
        from .estimate import Timing, bill, bill_text, done_work, measure

        timing = Timing.from_json(args.estimate_from) if args.estimate_from else measure(cfg, trials)
        done = done_work(trials, sweep_config.results_root(cfg), sweep_config.store_root(cfg))
        billed = bill(trials, timing, cfg.family.num_steps, args.price_per_hour, done)
        _check_finite_bill(billed, args)
        print(bill_text(billed))
        return 0
    address = args.address or os.environ.get("RAY_ADDRESS") or None  # RAY_ADDRESS="" is no address
    if address and not args.address:  # refused by ray_session too, but only after the data had been read
        check_address(address, f"RAY_ADDRESS={address!r} (the sweep's Ray address when --address is not given)")
    if address == "local":  # a new local Ray, as without an address: resources.num_cpus and the local checks apply
        address = None
    ray = sys.modules.get("ray")  # not imported here: a Ray this process already joined (ray_session reuses it)
    if address is None and not (ray and ray.is_initialized()):  # may be larger than this machine
        check_local_cpus(cfg.resources)
        check_local_gpus(cfg.resources)
    check_remote(cfg)
    check_data(cfg)
    root = sweep_config.results_root(cfg)
    check_resumable(root, trials)
    check_readable(root)
    errors = _run_on_ray(cfg, yaml_text, trials, root, address, args.verbose)
    summarised = _print_results(root, trials, report=not args.no_report)
    status = _exit_status(root, trials, errors)
    return status or (0 if summarised else 1)  # every trial complete, but its summary printed an error


def _check_finite_bill(billed: dict, args) -> None:
    """Timings or a price so large that the bill overflows (1e308 s per sample passed the positive-number check)
    printed "inf h" or an inf cost: refused, naming the flag."""
    import math

    if not math.isfinite(billed["device_hours"]["total"]):
        source = f"--estimate-from {args.estimate_from}" if args.estimate_from else "--estimate"
        raise ConfigError(f"{source}: the timings give {billed['device_hours']['total']} device-hours for this sweep; "
                          "allowed: seconds per step and per sample that a device takes (benchmarks/gpu_check.py "
                          "writes them)")
    if "cost" in billed and not math.isfinite(billed["cost"]["total"]):
        raise ConfigError(f"--price-per-hour = {args.price_per_hour:g} gives a cost of {billed['cost']['total']}; "
                          "allowed: a finite price >= 0 whose cost is finite")


def _run_on_ray(cfg, yaml_text: str, trials: list, root: str, address: str | None, verbose: bool = True) -> list:
    """Check the cluster, record the sweep, run the trials not yet complete; returns the trial errors."""
    from . import results, sweep_config
    from .distributed.session import cluster_view, ray_session
    from .distributed.tuning import SweepContext, quiet_ray_driver, run_tune
    from .preflight import check_output, check_resources, describe, resolve_resources, with_setting
    from .progress import SweepProgress

    if not sys.stderr.isatty() or not verbose:
        os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    if not verbose:
        quiet_ray_driver()
    # without --verbose the workers' output (Ray Data, trial logs, per-target training lines) stays in Ray's
    # log files (/tmp/ray/session_latest/logs); the sweep's console reports each target's events instead
    with ray_session(address, cfg.resources.num_cpus, log_to_driver=verbose):
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
        console = SweepProgress(len(trials), done, bar=False if verbose else None)
        try:
            return run_tune(trials, ctx, console, verbose=verbose)
        finally:
            console.close()


def _print_results(root: str, trials: list, report: bool) -> bool:
    """The analysis of what was written (one call into ``analysis``: it reads only the Parquet results); False
    when it printed an error instead."""
    from analysis import AnalysisError, finish

    from .results import SCHEMA_VERSION, tables_written, trial_done

    if not any(trial_done(root, t.trial_id) for t in trials):
        print("error: no trial finished: nothing to summarise or report", file=sys.stderr)
        return False
    try:
        text, path = finish(root, report=report)
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return False
    print()
    print(text)
    print(f"\nresults: {root}/{{{','.join(tables_written(root))}}}/  (schema v{SCHEMA_VERSION})")
    if path:
        print(f"report: {path}")
    return True


def _exit_status(root: str, trials: list, errors: list) -> int:
    """0 when every trial is complete; else 1, with the errors and how to finish."""
    from .results import trial_done

    missing = [t.trial_id for t in trials if not trial_done(root, t.trial_id)]
    if not (errors or missing):
        return 0
    for e in errors:
        print(f"error: trial {e}", file=sys.stderr)
    failed = {e.split(":", 1)[0] for e in errors}
    other = [m for m in missing if m not in failed]
    if other:
        print(f"error: {len(other)} trial(s) incomplete: {', '.join(other)}; rerun the same command to finish them",
              file=sys.stderr)
    if errors:
        print(f"error: {len(errors)} of {len(trials)} trial(s) failed; fix what the lines above name and rerun "
              "(finished trials are kept)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
