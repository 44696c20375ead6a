"""The attack interface: a narrow model-adapter protocol, pure attacks registered by name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from ..registry import Registry


@runtime_checkable
class ModelAdapter(Protocol):
    """What attacks need from a target model (``DiffusionAdapter`` wraps a family + UNet; tests use an
    analytic Gaussian one).

    - ``num_steps``: T, the integer step axis is 0..T-1 (0 = least noise).
    - ``device``: where inputs must live.
    - ``loss(x0, steps, noise)``: per-sample training loss ``mean ||noise - eps_hat(x_t, step)||^2`` with
      ``x_t`` the family's perturbation of ``x0`` at ``steps`` (one step per sample) by ``noise``.
    - ``t_range``: (t0, t1) of the probability-flow ODE.
    - ``ode_drift(x, t)``: the PF-ODE drift ``f(x, t) - g(t)^2 score(x, t) / 2`` at per-sample times ``t`` [B];
      must be differentiable in ``x`` (the likelihood attack takes its divergence).
    - ``prior_logp(z)``: per-sample log-density of the prior at ``t1``.
    """

    num_steps: int
    device: torch.device
    t_range: tuple[float, float]

    def loss(self, x0: torch.Tensor, steps: torch.Tensor, noise: torch.Tensor) -> torch.Tensor: ...

    def ode_drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor: ...


@dataclass
class AttackOutput:
    """Per-sample results of one attack on one batch: arrays of shape [len(steps), batch]."""

    steps: list[int | None]  # None for step-free attacks
    score: np.ndarray  # higher = more likely a member
    statistic: np.ndarray  # the raw statistic (loss, bits/dim)
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # optional per-sample columns, same shape


class Attack:
    """Base class: ``Params`` is a dataclass of the attack's options; ``run`` is pure."""

    Params: type

    def steps(self, params, num_steps: int | None = None) -> list[int | None]:
        """The steps this attack scores (``[None]`` for a step-free attack)."""
        return [None]

    def run(
        self, adapter: ModelAdapter, images: torch.Tensor, sample_ids: torch.Tensor, params
    ) -> AttackOutput:
        raise NotImplementedError

    def validate(self, params, num_steps: int, key: str) -> None:
        """Raise ConfigError (naming ``key``) for parameters that cannot work; default: accept."""


ATTACKS: Registry[type[Attack]] = Registry("attack")
