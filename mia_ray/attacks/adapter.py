"""``DiffusionAdapter``: a family's schedule + a UNet2DModel as the attacks' ModelAdapter."""

from __future__ import annotations

import contextlib

import torch

from ..families import Family
from ..models import NoiseNet
from .base import StepMixin


class DiffusionAdapter(StepMixin):
    def __init__(self, family: Family, unet, device=None, amp: bool = False):
        self.family = family
        self.device = torch.device(device) if device is not None else next(unet.parameters()).device
        self.net = NoiseNet(unet.to(self.device).eval().requires_grad_(False))
        self.num_steps = family.T
        self.t_range = family.t_range
        # bf16 autocast on CUDA only. On this project's CPU (AVX512-BF16) it was 1.50x on 256-row no-grad forwards
        # but 0.94x on the likelihood's forward + VJP (benchmarks/forward.py, docs/bench_speed.md section 6); it
        # changes every score and is emulated (slow) on CPUs without bf16 instructions, so CPU stays fp32
        self.amp = amp and self.device.type == "cuda"

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()

    def loss(self, x0, steps, noise):
        with self._autocast():
            return self.family.loss(self.net, x0, steps, noise)

    def ode_drift(self, x, t):
        return self.family.ode_drift(self.net, x, t)  # fp32: the ODE solver controls its error

    def prior_logp(self, z):
        return self.family.prior_logp(z)

    def step_coefs(self, steps):
        return self.family.step_mean_std(_steps(steps, self.device))

    @torch.no_grad()
    def eps_hat(self, x, steps):
        """The network's noise prediction at integer steps, fed exactly as in training
        (``Family.model_inputs``: input scaled by c_in(std), time input tau(step_time))."""
        fam = self.family
        steps = _steps(steps, x.device).expand(x.shape[0])
        _, std = fam.step_mean_std(steps)
        std_b = std.to(x.dtype).view((-1,) + (1,) * (x.dim() - 1))
        with self._autocast():
            out = self.net(fam.c_in(std_b) * x, fam.tau(fam.step_time(steps)).to(x.dtype))
        return out.float()


def _steps(steps, device) -> torch.Tensor:
    """Integer steps as an int64 tensor (an int broadcasts over the batch)."""
    return torch.as_tensor(steps, dtype=torch.int64, device=device).reshape(-1)
