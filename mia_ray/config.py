"""Typed configuration, pure dataclasses: what determines a target, the sweep grid, a trial.

This module imports no config library: ``mia_ray.sweep_config`` (the only omegaconf user) merges a sweep
YAML onto :class:`SweepConfig` (unknown keys and wrong types are rejected there), checks the values once
(``sweep_config.validate``) and expands the grid into :class:`Trial` objects. After that, code receives
the typed objects below, never raw dicts.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field


@dataclass
class DataConfig:
    source: str = "digits"  # a registered data source: digits, folder, hdf5, npz, parquet
    path: str | None = None  # file or folder for sources that read one
    resolution: int = 8  # images are resized to resolution x resolution
    channels: int = 1  # 1 (grayscale) or 3 (RGB)
    key: str | None = None  # hdf5 dataset / npz array / parquet column (source default when null)
    # Given membership (mia_ray/data/given.py): the model's training images and images it never saw, both read
    # by ``source``; set together, instead of ``path``. Left out of the target id when null (ids stay pinned).
    members: str | None = None
    nonmembers: str | None = None
    # The array / dataset / column of each given set where they differ (one HDF5 or .npz file holding both sets
    # under two keys); null: ``key``.
    members_key: str | None = None
    nonmembers_key: str | None = None


@dataclass
class FamilyConfig:
    name: str = "ddpm"  # ddpm, smld, vpsde, vesde
    num_steps: int = 1000  # T: the integer step axis 0..T-1 shared by all families
    beta_min: float = 0.1  # VP: beta(t) = beta_min + t (beta_max - beta_min); ddpm uses beta/T per step
    beta_max: float = 20.0
    sigma_min: float = 0.01  # VE: geometric sigma_min -> sigma_max
    sigma_max: float = 50.0
    eps: float = 1e-5  # smallest time of continuous families and of the probability-flow ODE
    # In a sweep, ``name`` is not set under ``family:``: it is the grid axis ``families``.


@dataclass
class ModelConfig:
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64])
    layers_per_block: int = 1
    attention: bool = False  # attention blocks in the lowest-resolution level
    norm_num_groups: int = 8
    pretrained: str | None = None  # a diffusers UNet2DModel directory (safetensors) to attack as is
    # bf16 autocast of the network on CUDA (plain training and every attack but the likelihood; DP-SGD, the
    # likelihood's ODE, whose solver controls its error, and the utility sampler run fp32); false = fp32
    # everywhere. No effect on CPU (fp32: see attacks/adapter.py for the measurement)
    bf16: bool = True


@dataclass
class TrainConfig:
    steps: int = 800
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 0  # linear learning-rate warm-up steps
    grad_clip: float = 1.0  # 0 disables (plain training only; DP clips per sample)
    ema_decay: float = 0.0  # 0 disables EMA; the paper uses 0.9999 (ddpm) / 0.999


@dataclass
class DPConfig:
    epsilon: float = math.inf  # inf = plain training; in a sweep, the grid axis ``epsilons`` (not set under dp:)
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    poisson: bool = True
    accountant: str = "rdp"  # calibrates the noise: rdp | prv (both are recorded)
    secure_mode: bool = False  # Opacus' cryptographically secure RNG: what a real DP claim needs
    # per-sample gradients of DP-SGD: hooks | functorch | ghost | vmap (mia_ray/training/grad_sample.py); the
    # same clipped, noised update and accounting in every mode, only the speed differs. hooks stays the default:
    # measured (benchmarks/training.py, CPU, 1 thread, docs/bench_training.json) at the quickstart size DP
    # steps/s were hooks 18.1, vmap 18.8, ghost 17.3, functorch 13.2 (5 interleaved repeats) and in a 9-repeat
    # rerun hooks 19.2, vmap 17.6: no mode is reliably faster than hooks; at the paper size vmap ran out of
    # memory (19 GB) where hooks did not
    grad_sample_mode: str = "hooks"


# Fields added after targets were stored: hashed only when they differ from these values, so the ids of
# existing targets do not change (a changed id orphans a user's stored targets).
_HASHED_UNLESS_DEFAULT = {"dp": {"accountant": "rdp", "secure_mode": False, "grad_sample_mode": "hooks"},
                         "model": {"bf16": True}}


@dataclass
class CanarySpec:
    """One-run audit canaries of a target (``audit.canaries``): m pool images outside the split (its members
    and its ``eval_size`` evaluation non-members), each trained on with probability 1/2 (``mia_ray.canaries``)."""

    m: int
    eval_size: int


OPTIONAL_DATA_KEYS = ("members", "nonmembers", "members_key", "nonmembers_key")


@dataclass
class TargetSpec:
    """Everything that determines a trained target (its content hash is the target id)."""

    family: FamilyConfig = field(default_factory=FamilyConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dp: DPConfig = field(default_factory=DPConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train_size: int = 64
    seed: int = 0
    canaries: CanarySpec | None = None  # None: no canaries (and not part of the hash, so old ids stay)
    # LiRA reference model index r (``mia_ray.references``): trained on half r of the target's universe with
    # the target's recipe; None for a target. Left out of the hash when None, so target ids are unchanged.
    reference: int | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("canaries", "reference"):  # ids of specs without them are unchanged (tests/test_pinned.py)
            if d[key] is None:
                del d[key]
        for key in OPTIONAL_DATA_KEYS:  # added after ids were pinned: absent when null, so old ids are kept
            if d["data"].get(key) is None:
                d["data"].pop(key, None)
        return d

    @property
    def target_id(self) -> str:
        """sha256 of the canonical JSON of the spec, first 16 hex digits."""
        d = self.to_dict()
        for section, defaults in _HASHED_UNLESS_DEFAULT.items():
            d[section] = {k: v for k, v in d[section].items() if k not in defaults or v != defaults[k]}
        if math.isfinite(self.dp.epsilon) and self.model.attention:
            # training changed for these targets: before training/grad_sample.contiguous_conv_inputs, Opacus gave
            # every conv after an attention block a zero per-sample gradient. A new id: a store never hands back
            # one trained by the old code (other targets keep their ids)
            d["dp"]["conv_inputs"] = "contiguous"
        blob = json.dumps(jsonable(d), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: dict) -> TargetSpec:
        return cls(
            family=FamilyConfig(**d["family"]),
            model=ModelConfig(**d["model"]),
            train=TrainConfig(**d["train"]),
            dp=DPConfig(**d["dp"]),
            data=DataConfig(**d["data"]),
            train_size=d["train_size"],
            seed=d["seed"],
            canaries=CanarySpec(**d["canaries"]) if d.get("canaries") else None,
            reference=d.get("reference"),
        )


def jsonable(x):
    """``x`` (nested dicts/lists) with non-finite floats as strings ('inf'): JSON has no infinity."""
    if isinstance(x, float) and not math.isfinite(x):
        return repr(x)  # 'inf': JSON has no infinity
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x


def spec_json(spec: TargetSpec) -> str:
    return json.dumps(jsonable(spec.to_dict()), sort_keys=True)


def spec_from_json(text: str) -> TargetSpec:
    def back(x):
        if isinstance(x, str) and x in ("inf", "-inf", "nan"):
            return float(x)
        if isinstance(x, dict):
            return {k: back(v) for k, v in x.items()}
        if isinstance(x, list):
            return [back(v) for v in x]
        return x

    return TargetSpec.from_dict(back(json.loads(text)))


# --------------------------------------------------------------------------------------------------
# The sweep: a grid over targets (families x train sizes x epsilons x seeds), attacks, resources.
# --------------------------------------------------------------------------------------------------


@dataclass
class Resources:
    scorer_actors: int = 1  # Ray Data actors per trial (all start at once)
    scorer_cpus: float = 1.0  # CPUs per scoring actor (its torch thread count)
    scorer_gpus: float | None = None  # GPUs per scoring actor; null = 1 when the cluster has or may launch GPUs
    train_cpus: float = 1.0  # CPUs of a training task
    train_gpus: float | None = None  # GPUs of a training task; null = 1 when the cluster has GPUs, else 0
    max_concurrent_trials: int | None = None  # targets in flight at once; null = as many as keep all GPUs/CPUs busy
    batch_size: int = 64  # samples per scorer call (Ray Data batch)
    num_cpus: int | None = None  # CPUs of a local Ray started by the sweep (null = all)
    # worker types an autoscaling cluster may launch, when the driver cannot learn them (preflight):
    # {name: {CPU: 4, GPU: 1, <custom resource>: n, max_workers: 8 (default 1)}}; null = learned from the cluster
    node_types: dict | None = None


@dataclass
class UtilityConfig:
    """Sample quality of every target (``mia_ray.utility.target``): FD / KID of DDIM samples vs held-out images."""

    enabled: bool = True
    samples: int = 256  # DDIM samples per target (same seed for every target)
    sampler_steps: int = 50  # DDIM steps
    heldout: int = 1000  # held-out pool images (at most; never members of any target of the sweep)


@dataclass
class AuditConfig:
    """One-run canary audit (Steinke, Nasr & Jagielski 2023); off with ``canaries: 0``."""

    canaries: int = 0  # m: canaries per target, each included in training with probability 1/2
    k_plus: int | None = None  # guesses "in" on the k+ highest canary scores; null = m // 4
    k_minus: int | None = None  # guesses "out" on the k- lowest; null = m // 4
    alpha: float = 0.05  # confidence level of the lower bound

    def guesses(self) -> tuple[int, int]:
        """(k+, k-) as configured, or m // 4 each when null: fixed before any score is seen."""
        q = self.canaries // 4
        return (q if self.k_plus is None else self.k_plus, q if self.k_minus is None else self.k_minus)


@dataclass
class SweepConfig:
    name: str = "sweep"
    output: str = "mia_results"  # results root: a local/NFS path or a URI such as s3://bucket/prefix
    store: str | None = None  # target store; null = <output>/store
    families: list[str] = field(default_factory=lambda: ["ddpm"])
    train_sizes: list[int] = field(default_factory=lambda: [64])
    epsilons: list[float] = field(default_factory=lambda: [math.inf])
    seeds: list[int] = field(default_factory=lambda: [0])
    eval_size: int = 64
    data: DataConfig = field(default_factory=DataConfig)
    family: FamilyConfig = field(default_factory=FamilyConfig)  # name: filled per grid point from families
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dp: DPConfig = field(default_factory=DPConfig)  # epsilon: filled per grid point from epsilons
    # YAML: attack name -> its parameters; after sweep_config.load: attack name -> typed AttackSpec
    attacks: dict = field(default_factory=lambda: {"loss": {}})
    bootstrap: int = 200  # bootstrap resamples for the confidence intervals (0 = none)
    resources: Resources = field(default_factory=Resources)
    plugins: list[str] = field(default_factory=list)  # modules that register extra attacks/families/sources
    utility: UtilityConfig = field(default_factory=UtilityConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)


@dataclass
class AttackSpec:
    """One configured attack: its registered name and typed, validated parameters."""

    name: str
    params: object  # the attack's Params dataclass
    max_samples: int | None = None  # only rows with rank < max_samples (per class) get this attack


@dataclass
class Trial:
    """One Tune trial: one target, scored by every attack."""

    trial_id: str
    spec: TargetSpec
    eval_size: int
    attacks: list[AttackSpec] = field(default_factory=list)
    utility: UtilityConfig | None = None  # None: no sample quality measured
    heldout_from: int = 0  # utility held-out images: the seed's permutation from here on (max train size)
    audit: AuditConfig | None = None  # the canary audit (spec.canaries set) or None
