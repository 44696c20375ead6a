"""``DiffusionAdapter``: a family's schedule + a UNet2DModel as the attacks' ModelAdapter."""

from __future__ import annotations

import contextlib

import torch

from ..families import Family
from ..models import NoiseNet


class DiffusionAdapter:
    def __init__(self, family: Family, unet, device=None, amp: bool = False):
        self.family = family
        self.device = torch.device(device) if device is not None else next(unet.parameters()).device
        self.net = NoiseNet(unet.to(self.device).eval().requires_grad_(False))
        self.num_steps = family.T
        self.t_range = family.t_range
        self.amp = amp and self.device.type == "cuda"  # bf16 autocast only where it pays: on CUDA

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()

    def loss(self, x0, steps, noise):
        with self._autocast():
            return self.family.loss(self.net, x0, steps, noise)

    def ode_drift(self, x, t):
        return self.family.ode_drift(self.net, x, t)  # fp32: the ODE solver controls its error

    def prior_logp(self, z):
        return self.family.prior_logp(z)
