"""The attack interface: a narrow model-adapter protocol, pure attacks registered by name."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from ..errors import ConfigError
from ..registry import Registry


@runtime_checkable
class ModelAdapter(Protocol):
    """What attacks need from a target model (``DiffusionAdapter`` wraps a family + UNet; tests use an
    analytic Gaussian one).

    - ``num_steps``: T, the integer step axis is 0..T-1 (0 = least noise).
    - ``device``: where inputs must live.
    - ``loss(x0, steps, noise)``: per-sample training loss ``mean ||noise - eps_hat(x_t, step)||^2`` with
      ``x_t`` the family's perturbation of ``x0`` at ``steps`` (one step per sample) by ``noise``.
    - ``step_coefs(steps)``: float64 (a, s) [n] with the family's perturbation x_step = a x0 + s eps.
    - ``eps_hat(x, steps)``: the noise prediction at integer ``steps`` ([B] or an int), no gradient,
      float32 (the network's output with the family's input scaling).
    - ``ddim_step(x, u, v, eps)``: the deterministic (DDIM, eta = 0) step from step u to step v
      (``StepMixin`` builds it from the two above).
    - ``t_range``: (t0, t1) of the probability-flow ODE.
    - ``ode_drift(x, t)``: the PF-ODE drift ``f(x, t) - g(t)^2 score(x, t) / 2`` at per-sample times ``t`` [B];
      must be differentiable in ``x`` (the likelihood attack takes its divergence).
    - ``prior_logp(z)``: per-sample log-density of the prior at ``t1``.
    - optional ``max_rows(max_batch, image_shape)``: rows per network call (``rows_per_call``; without it
      ``max_batch``).
    """

    num_steps: int
    device: torch.device
    t_range: tuple[float, float]

    def loss(self, x0: torch.Tensor, steps: torch.Tensor, noise: torch.Tensor) -> torch.Tensor: ...

    def step_coefs(self, steps) -> tuple[torch.Tensor, torch.Tensor]: ...

    def eps_hat(self, x: torch.Tensor, steps) -> torch.Tensor: ...

    def ddim_step(self, x: torch.Tensor, u, v, eps: torch.Tensor | None = None) -> torch.Tensor: ...

    def ode_drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor: ...


def rows_per_call(adapter, max_batch: int, image_shape) -> int:
    """Rows per network call: the adapter's ``max_rows`` where it has one (``DiffusionAdapter``: a CPU cap),
    else ``max_batch``."""
    max_rows = getattr(adapter, "max_rows", None)
    return max_rows(max_batch, image_shape) if max_rows else max_batch


class StepMixin:
    """The DDIM (eta = 0) step of any adapter with ``step_coefs`` and ``eps_hat``."""

    def ddim_step(self, x, u, v, eps=None):
        """x_v = a_v x0_hat + s_v eps_hat with x0_hat = (x_u - s_u eps_hat) / a_u (float64 arithmetic).

        ``u``, ``v``: ints or per-sample [B] steps; ``eps``: eps_hat(x, u) if already computed."""
        if eps is None:
            eps = self.eps_hat(x, u)
        shape = (-1,) + (1,) * (x.dim() - 1)
        au, su = (c.view(shape) for c in self.step_coefs(u))
        av, sv = (c.view(shape) for c in self.step_coefs(v))
        e = eps.double()
        x0_hat = (x.double() - su * e) / au
        return (av * x0_hat + sv * e).to(x.dtype)


@dataclass
class AttackOutput:
    """Per-sample results of one attack on one batch: arrays of shape [len(steps), batch]."""

    steps: list[int | None]  # None for step-free attacks
    score: np.ndarray  # higher = more likely a member
    statistic: np.ndarray  # the raw statistic (loss, bits/dim)
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # optional per-sample columns, same shape


@dataclass(frozen=True)
class Cost:
    """Network passes per scored sample: ``forward`` evaluations and ``backward`` (vector-Jacobian)
    passes; ``estimate`` when the count is adaptive (an ODE solver's) and only estimated."""

    forward: float
    backward: float = 0.0
    estimate: bool = False

    def describe(self) -> str:
        """E.g. ``31 fwd`` or ``~95 fwd + ~95 bwd (estimate)``: for ``--list`` / ``--dry-run``."""
        t = "~" if self.estimate else ""
        out = f"{t}{self.forward:.0f} fwd"
        if self.backward:
            out += f" + {t}{self.backward:.0f} bwd"
        return out + (" (estimate)" if self.estimate else "")


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

    def cost(self, params, num_steps: int) -> Cost:
        """Network passes per sample at these parameters."""
        raise NotImplementedError(f"{type(self).__name__} does not declare its cost")

    def validate(self, params, num_steps: int, key: str) -> None:
        """Raise ConfigError (one line naming ``key``) for parameters that cannot work, before any compute:
        the attack's own ``check``, then every scored step must lie in 0..num_steps-1."""
        self.check(params, num_steps, key)
        check_steps(self.steps(params, num_steps), params, num_steps, key)

    def check(self, params, num_steps: int, key: str) -> None:
        """The attack's own parameter checks (override); default: accept."""


def check_steps(steps, params, num_steps: int, key: str) -> None:
    """Steps outside 0..num_steps-1, or listed twice (their rows would be duplicated), are refused, naming the
    parameter field that holds them."""
    bad = [s for s in steps if s is not None and not (isinstance(s, (int, np.integer)) and 0 <= s < num_steps)]
    if bad:
        raise ConfigError(f"{_field(params, bad[0], key)}: step {bad[0]!r} is outside the allowed range "
                          f"0..{num_steps - 1}")
    counts = Counter(int(s) for s in steps if s is not None)  # list.count per step was quadratic: all_steps at
    twice = sorted(s for s, n in counts.items() if n > 1)  # T = 100000 held the door 75 s
    if twice:
        raise ConfigError(f"{_field(params, twice[0], key)}: step {twice[0]} is listed twice; allowed: distinct steps")


def _field(params, value, key: str) -> str:
    """``key.<field>`` of the parameter field that holds ``value`` (``key`` when none does)."""
    for f in fields(params) if hasattr(params, "__dataclass_fields__") else ():
        v = getattr(params, f.name)
        if v == value or (isinstance(v, (list, tuple)) and value in v):
            return f"{key}.{f.name}"
    return key


ATTACKS: Registry[type[Attack]] = Registry("attack")
