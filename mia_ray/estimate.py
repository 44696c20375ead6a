"""Know the bill before launching: device-hours (and cost) per phase of a sweep.

``python -m mia_ray.sweep SWEEP.yaml --estimate [--price-per-hour P]`` times a few training steps (plain and
DP-SGD) and the network passes of the sweep's own model on this machine's device; ``--estimate-from FILE``
takes the same figures from a JSON file instead (``benchmarks/gpu_check.py`` writes one on the cluster's GPU
type; keys ``Timing``'s fields). The bill is arithmetic on those figures:

* training: per target, ``train.steps`` x seconds per optimiser step (DP-SGD's for a finite epsilon); the
  reference models of LiRA likewise, each once (targets of one recipe share them);
* utility: per target, ``utility.samples`` x ``utility.sampler_steps`` forwards of one sample;
* each attack: per target, its scored samples (members, non-members and canaries) x (``Attack.cost`` forward
  passes x seconds per forward of one sample + backward passes x seconds per backward of one sample), at
  batched throughput, times 1 + R models for an attack that scores R reference models too.

Device-hours are summed over targets, i.e. one device busy that long (or N devices for 1/N of it); per-sample
pass times are measured at the attack batch size (``resources``). What a rerun would not do again is not billed
(``done_work``): trials complete in a local results folder (their scoring and utility), targets or reference
models complete in a local target store (their training) and utility records there (their sampling).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass

from .errors import ConfigError

TRAIN_STEPS_TIMED = 3  # optimiser steps timed per mode (time_train_steps: after untimed warm-up runs)
PASS_REPEATS = 3  # timed batches of forward (and forward + backward) passes


@dataclass
class Timing:
    """Seconds on one device: per optimiser step (plain, DP-SGD) and per sample of a batched network pass."""

    device: str
    train_plain_s_per_step: float
    train_dp_s_per_step: float
    forward_s_per_sample: float
    backward_s_per_sample: float  # the vector-Jacobian pass an ODE evaluation adds per probe

    @classmethod
    def from_json(cls, path: str) -> Timing:
        try:
            with open(path) as f:
                raw = json.load(f)
        except (OSError, ValueError) as e:
            raise ConfigError(f"--estimate-from {path}: cannot read a JSON object ({e})") from None
        raw = raw.get("timing", raw) if isinstance(raw, dict) else raw
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if not isinstance(raw, dict) or n not in raw]
        if missing:
            raise ConfigError(f"--estimate-from {path}: missing key(s) {', '.join(missing)}; needs {', '.join(names)}")
        values = {n: raw[n] for n in names}
        device = values["device"]
        if not isinstance(device, str) or not device.strip() or len(device.splitlines()) != 1:  # printed as it is:
            raise ConfigError(f"--estimate-from {path}: device = {device!r}; allowed: the device's name, one line "
                              "(e.g. \"NVIDIA H100 80GB HBM3\")")  # "estimate on None", or over two lines
        bad = [n for n in names[1:] if isinstance(values[n], bool)  # JSON true is the int 1 in Python
               or not (isinstance(values[n], int | float) and 0 < values[n] < math.inf)]
        if bad:
            raise ConfigError(f"--estimate-from {path}: {', '.join(bad)} must be positive numbers of seconds")
        return cls(**values)


@dataclass(frozen=True)
class Done:
    """Work a rerun skips: trial ids complete in the results folder, target ids complete in the store, target ids
    whose utility record is in the store."""

    trials: frozenset = frozenset()
    targets: frozenset = frozenset()
    utility: frozenset = frozenset()  # target ids whose utility record (at the trials' settings) is stored
    checked: bool = True  # False: a remote output or store, not looked at (billed in full)


def done_work(trials, results_root: str, store_root: str) -> Done:
    """The trials and targets (with LiRA's reference models) a rerun of ``trials`` would not redo. Local paths
    only: an estimate may be made offline, before a cluster's bucket is reachable."""
    from . import results
    from .attacks import ATTACKS
    from .references import reference_specs
    from .training.store import META

    if "://" in results_root or "://" in store_root:
        return Done(checked=False)
    done = frozenset(t.trial_id for t in trials if results.trial_done(results_root, t.trial_id))
    ids = {t.spec.target_id for t in trials if not t.spec.model.pretrained}
    for t in trials:
        for a in t.attacks:
            if getattr(ATTACKS.get(a.name), "needs_references", False):
                ids.update(s.target_id for s in reference_specs(t.spec, a.params.references))
    stored = frozenset(i for i in ids if os.path.isfile(os.path.join(store_root, i, META)))
    return Done(done, stored, _utility_done(trials, done, store_root))


def _utility_done(trials, done: frozenset, store_root: str) -> frozenset:
    """Target ids of not-done trials whose utility record is stored (a rerun reads it, not samples again). Its key
    needs the pool's size: a pool that cannot be opened here is billed (the sweep would refuse it anyway)."""
    from .data import open_source
    from .errors import DataError
    from .utility.target import is_measured

    out, sources = set(), {}  # each pool opened once, however many trials read it (a folder lists its files)
    for t in trials:
        if t.trial_id in done or t.utility is None or not t.utility.enabled:
            continue
        try:
            data = json.dumps(dataclasses.asdict(t.spec.data), sort_keys=True)
            if data not in sources:
                sources[data] = open_source(t.spec.data)
            if is_measured(store_root, t.spec, t.spec.target_id, t.utility, t.heldout_from, sources[data]):
                out.add(t.spec.target_id)
        except (DataError, OSError):
            continue
    return frozenset(out)


def bill(trials, timing: Timing, num_steps: int, price_per_hour: float | None = None, done: Done = Done()) -> dict:
    """Device-hours per phase ({"training": h, "training LiRA references": h, "utility": h, "attack NAME": h, ...,
    "total": h}) and, with a price, cost. It counts what ``--dry-run``'s plan counts: the reference models an
    attack such as LiRA trains (each once, however many trials share it) and scores beside the target, the
    canaries every attack scores, and the DDIM samples of the utility measurement; each target is trained once
    however many trials attack it. ``done``'s complete trials, stored targets and stored utility records are not
    billed."""
    from .attacks import ATTACKS
    from .references import reference_specs

    seconds: dict[str, float] = {"training": 0.0}
    targets: dict[str, float] = {}  # target id -> its training seconds
    references: dict[str, float] = {}  # reference target id -> its training seconds
    utility: dict[str, float] = {}  # target id -> its utility sampling seconds

    def step_seconds(spec) -> float:
        dp = math.isfinite(spec.dp.epsilon)
        return spec.train.steps * (timing.train_dp_s_per_step if dp else timing.train_plain_s_per_step)

    def add(phase: str, s: float) -> None:
        seconds[phase] = seconds.get(phase, 0.0) + s

    for trial in trials:
        if trial.trial_id in done.trials:  # a rerun skips it: its target, references, scores and utility exist
            continue
        if not trial.spec.model.pretrained:  # a given model is not trained (its train.steps were billed)
            targets.setdefault(trial.spec.target_id, step_seconds(trial.spec))
        canaries = trial.spec.canaries.m if trial.spec.canaries else 0  # scored by every attack
        for a in trial.attacks:
            n = 2 * (trial.eval_size if a.max_samples is None else min(trial.eval_size, a.max_samples)) + canaries
            cost = ATTACKS.get(a.name)().cost(a.params, num_steps)
            per_sample = cost.forward * timing.forward_s_per_sample + cost.backward * timing.backward_s_per_sample
            refs = a.params.references if getattr(ATTACKS.get(a.name), "needs_references", False) else 0
            add(f"attack {a.name}", (1 + refs) * n * per_sample)  # the target and each reference model
            for spec in reference_specs(trial.spec, refs):
                references.setdefault(spec.target_id, step_seconds(spec))
        if trial.utility is not None and trial.utility.enabled:  # measured once per target, like its training
            utility[trial.spec.target_id] = 0.0 if trial.spec.target_id in done.utility else \
                trial.utility.samples * trial.utility.sampler_steps * timing.forward_s_per_sample
    seconds["training"] = sum(v for k, v in targets.items() if k not in done.targets)
    if references:
        seconds["training LiRA references"] = sum(v for k, v in references.items() if k not in done.targets)
    if utility:
        seconds["utility"] = sum(utility.values())
    order = ["training", "training LiRA references", "utility"]
    seconds = {k: seconds[k] for k in sorted(seconds, key=lambda k: (order.index(k) if k in order else 3))}
    hours = {k: v / 3600 for k, v in seconds.items()}
    hours["total"] = sum(hours.values())
    out = {"device": timing.device, "device_hours": hours, "done_trials": len(done.trials),
           "stored_targets": len(done.targets), "stored_utility": len(done.utility), "done_checked": done.checked}
    if price_per_hour is not None:
        out["price_per_hour"] = price_per_hour
        out["cost"] = {k: h * price_per_hour for k, h in hours.items()}
    return out


def bill_text(result: dict) -> str:
    lines = [f"estimate on {result['device']} (device-hours; one device):"]
    for k, h in result["device_hours"].items():
        cost = f"   cost {result['cost'][k]:,.2f}" if "cost" in result else ""
        lines.append(f"  {k:<22} {h:>14,.1f} h{cost}")
    if not result.get("done_checked", True):
        lines.append("  (remote output or store: work already done there is not subtracted)")
    else:
        if result.get("done_trials") or result.get("stored_targets"):
            lines.append(f"  not billed: {result['done_trials']} trial(s) already complete, "
                         f"{result['stored_targets']} stored target(s) / reference model(s) not trained again")
        if result.get("stored_utility"):
            lines.append(f"  not billed: {result['stored_utility']} stored utility record(s) not sampled again")
    return "\n".join(lines)


# --- measuring on this machine -----------------------------------------------------------------------


def measure(cfg, trials, device=None, train_steps: int = TRAIN_STEPS_TIMED) -> Timing:
    """Time the sweep's own model here: plain and DP-SGD steps at its batch size, batched passes per sample. A given
    model (``model.pretrained``, checked as the door checks it) is not trained: its own UNet's passes are timed (the
    YAML's model: keys, which it does not use, were timed, and trained). On a CPU each is timed at the torch threads
    its sweep task runs with (``resources.train_cpus`` for training, ``scorer_cpus`` for the passes): timed at every
    core of this machine, a 2-core VM under load billed DP-SGD steps of 0-5.4 s that its 1-thread training tasks ran
    in 0.05 s."""
    import torch

    from .models import pick_device

    device = torch.device(device) if device is not None else pick_device()
    spec = trials[0].spec
    res = cfg.resources
    train_threads, scorer_threads = (max(1, int(res.train_cpus)), max(1, int(res.scorer_cpus)))
    net = None
    with task_threads(device, train_threads):
        if cfg.model.pretrained:
            from .door import check_model
            from .models import load_unet
            from .pretrained import unet_dir

            check_model(cfg)
            net = load_unet(unet_dir(cfg.model.pretrained), device)
            plain = dp = 0.0
        else:
            plain = time_train_steps(spec, math.inf, train_steps, device)
            eps = next((t.spec.dp.epsilon for t in trials if math.isfinite(t.spec.dp.epsilon)), 10.0)
            dp = time_train_steps(spec, eps, train_steps, device)
    with task_threads(device, scorer_threads):
        fwd, bwd = time_passes(spec, cfg.data.resolution, cfg.data.channels, res.batch_size, device, net)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu ({train_threads} thread(s) per training task, {scorer_threads} per scorer)"
    return Timing(name, plain, dp, fwd, bwd)


@contextlib.contextmanager
def task_threads(device, threads: int):
    """torch's CPU threads set to ``threads`` (what a sweep task of that many CPUs runs with: distributed/tuning.py
    and distributed/scoring.py set the same), restored after; nothing changes on a GPU."""
    import torch

    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def time_train_steps(spec, epsilon: float, steps: int, device, resolution: int | None = None,
                     channels: int | None = None) -> float:
    """Seconds per optimiser step of ``spec``'s training (DP-SGD when ``epsilon`` is finite) on random images
    of the spec's size: the loop time of ``steps`` + 1 steps of ``train_target`` minus that of 1 step (warm-up),
    both after one untimed run of 1 step."""
    import numpy as np

    from .training.train import train_target

    res = resolution or spec.data.resolution
    ch = channels or spec.data.channels
    n = max(spec.train.batch_size * 2, 64)
    images = np.random.default_rng(0).uniform(-1, 1, (n, ch, res, res)).astype(np.float32)

    def run(k):  # TrainResult.train_seconds is the training loop's own time (no model build or DP set-up)
        s = dataclasses.replace(spec, train=dataclasses.replace(spec.train, steps=k),
                                dp=dataclasses.replace(spec.dp, epsilon=epsilon), train_size=n)
        return train_target(s, images, device=device, progress=False).train_seconds

    # Untimed: a process's first training loop pays one-off costs (first-call kernels, thread pools) that its
    # later loops do not. Measured: subtracted from the next run, they made the plain step of the quickstart model
    # 1e-9 s (clamped) on the first call in a fresh process (2 torch threads, 2-core VM), 0.010-0.014 s on later calls.
    run(1)
    one = run(1)
    return max((run(steps + 1) - one) / steps, 1e-9)


def time_passes(spec, resolution: int, channels: int, batch: int, device, net=None) -> tuple[float, float]:
    """(seconds per sample of a batched no-grad forward, extra seconds per sample of a backward (VJP)),
    medians of PASS_REPEATS batches of ``batch`` rows after a warm-up; of ``net`` (default: ``spec``'s UNet)."""
    import statistics

    import torch

    from .models import build_unet

    net = (net if net is not None else build_unet(spec.model, resolution, channels)).to(device).eval()
    x = torch.randn(batch, channels, resolution, resolution, device=device)
    tau = torch.randint(0, 1000, (batch,), device=device).float()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def fwd():
        with torch.no_grad():
            net(x, tau)

    def fwd_bwd():
        xr = x.clone().requires_grad_(True)
        out = net(xr, tau).sample
        torch.autograd.grad(out, xr, torch.ones_like(out))

    def timed(fn):
        fn()
        sync()
        secs = []
        for _ in range(PASS_REPEATS):
            t = time.perf_counter()
            fn()
            sync()
            secs.append(time.perf_counter() - t)
        return statistics.median(secs) / batch

    f = timed(fwd)
    return f, max(timed(fwd_bwd) - f, 1e-12)

