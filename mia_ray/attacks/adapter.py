"""``DiffusionAdapter``: a family's schedule + a UNet2DModel as the attacks' ModelAdapter."""

from __future__ import annotations

import contextlib
import math

import torch

from ..families import Family
from ..models import NoiseNet
from .base import StepMixin
from .loss import MIN_ROWS

# Rows per network call on CPU: at most CPU_ROW_FLOATS / (H x W x first-level channels), so one first-level
# activation (fp32) fits a core's L2 (1 MiB on this project's VM). Measured (benchmarks/rows.py --quick,
# docs/bench_rows.json; 1 thread; 5 model/image sizes from 8x8 to 32x32, with and without attention, forward
# and forward + VJP): per-row time falls with rows up to about that many and rises past it; the rule lands
# within 6% of the best row count measured in every case, while the attacks' default 1024 rows cost up to 2.6x
# (median 1.24x); 2**19 was up to 1.34x off the best. On CUDA the configured max_batch is used.
CPU_ROW_FLOATS = 2**18


class DiffusionAdapter(StepMixin):
    def __init__(self, family: Family, unet, device=None, amp: bool = False):
        self.family = family
        self.device = torch.device(device) if device is not None else next(unet.parameters()).device
        self.net = NoiseNet(unet.to(self.device).eval().requires_grad_(False))
        self.first_channels = unet.config.block_out_channels[0]  # for max_rows
        self.num_steps = family.T
        self.t_range = family.t_range
        # bf16 autocast on CUDA only. On this project's CPU (AVX512-BF16) it was 1.50x on 256-row no-grad forwards
        # but 0.94x on the likelihood's forward + VJP (benchmarks/forward.py, docs/bench_speed.md section 6); it
        # changes every score and is emulated (slow) on CPUs without bf16 instructions, so CPU stays fp32
        self.amp = amp and self.device.type == "cuda"

    def max_rows(self, max_batch: int, image_shape) -> int:
        """Rows per network call for inputs of ``image_shape`` (..., H, W): ``max_batch``, on CPU also at most
        the L2-sized cap above (never below MIN_ROWS). Scores do not depend on it (forwards are padded)."""
        if self.device.type != "cpu":
            return max_batch
        per_row = self.first_channels * math.prod(image_shape[-2:])
        return min(max_batch, max(MIN_ROWS, CPU_ROW_FLOATS // per_row))

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

    @torch.inference_mode()  # 1.03-1.08x no_grad's speed, bitwise equal (docs/bench_speed.md section 10)
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
