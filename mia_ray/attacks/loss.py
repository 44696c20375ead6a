"""Loss attack (Hu & Pang §4.1): score = -(training loss of x0 at step t), optionally averaged over draws."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .. import noise as keyed
from ..errors import ConfigError
from .base import ATTACKS, Attack, AttackOutput, Cost, rows_per_call

# Smallest model forward batch: CPU BLAS (MKL) runs GEMMs of fewer than 12 rows through another kernel whose
# last bits differ, so without padding a score would depend on how many rows shared its forward pass.
MIN_ROWS = 16


@dataclass
class LossParams:
    steps: list[int] = field(default_factory=lambda: [0, 50, 100, 200, 300, 500, 700, 999])
    all_steps: bool = False  # score every step 0..T-1 (the paper's full curve); overrides ``steps``
    draws: int = 1  # K noise draws averaged per (sample, step); K = 1 is the paper
    seed: int = 0  # noise of (sample, step, draw) is a function of (seed, sample_id, step, draw)
    max_batch: int = 1024  # most rows per model forward (samples x steps x draws flattened; CPU caps it lower)


# run() lays out its work as flat int64 lists of samples x steps x draws before the first forward pass:
# draws = 1e9 passed the door and asked for ~0.5 TB at scoring time, after training. 1000 draws (the paper
# uses 1) keep a 64-sample batch at 1000 steps to ~2 GB of lists and cut the noise's s.d. ~30x.
MAX_DRAWS = 1000
# ... and that 1000 x 1000 point bounds the work per sample (steps scored x draws): all_steps at T = 100000 with
# 1000 draws (1e8 per sample) passed and asked the allocator for 6.4 GB per list for 8 samples at scoring time.
MAX_WORK = 1000 * MAX_DRAWS


@ATTACKS.register("loss")
class LossAttack(Attack):
    Params = LossParams

    def steps(self, params, num_steps: int | None = None):
        return list(range(num_steps)) if params.all_steps and num_steps else list(params.steps)

    def cost(self, params, num_steps):
        n = num_steps if params.all_steps else len(params.steps)
        return Cost(forward=n * params.draws)

    def check(self, params, num_steps, key):
        if not params.steps and not params.all_steps:
            raise ConfigError(f"{key}.steps is empty; allowed: integers in 0..{num_steps - 1}")
        # all_steps scores 0..T-1 and ignores steps: its default (up to 999) was refused for T < 1000
        bad = [] if params.all_steps else [s for s in params.steps if not 0 <= s < num_steps]
        if bad:
            raise ConfigError(f"{key}.steps has {bad[:5]} outside the allowed range 0..{num_steps - 1}")
        for name in ("draws", "max_batch"):
            if getattr(params, name) < 1:
                raise ConfigError(f"{key}.{name} = {getattr(params, name)}; allowed: an integer >= 1")
        if params.draws > MAX_DRAWS:
            raise ConfigError(f"{key}.draws = {params.draws}; allowed: an integer in [1, {MAX_DRAWS}]")
        n = num_steps if params.all_steps else len(params.steps)
        if n * params.draws > MAX_WORK:
            what = f"{n} steps (all_steps)" if params.all_steps else f"{n} steps"
            raise ConfigError(f"{key}: {what} x draws = {params.draws} is {n * params.draws:.0e} noise draws per "
                              f"sample; allowed: at most {MAX_WORK:.0e} (fewer steps or draws)")

    @torch.inference_mode()  # 1.03-1.08x no_grad's speed, bitwise equal (docs/bench_speed.md section 10)
    def run(self, adapter, images, sample_ids, params):
        dev = adapter.device
        x0 = images.to(dev)
        ids = sample_ids.to(dev, torch.int64)
        step_list = self.steps(params, adapter.num_steps)
        steps = torch.as_tensor(step_list, dtype=torch.int64, device=dev)
        b, s, k = len(x0), len(steps), params.draws
        # flat work list: sample-major, then step, then draw
        si = torch.arange(b, device=dev).repeat_interleave(s * k)
        st = steps.repeat_interleave(k).repeat(b)
        dr = torch.arange(k, device=dev).repeat(b * s)
        out = torch.empty(b * s * k, device=dev)
        per_call = rows_per_call(adapter, params.max_batch, x0.shape)
        for lo in range(0, len(si), per_call):
            sl = slice(lo, lo + per_call)
            sis, sts, drs = si[sl], st[sl], dr[sl]
            n = len(sis)
            if n < MIN_ROWS:  # pad a short forward by repeating its last row (see MIN_ROWS)
                rows = torch.arange(MIN_ROWS, device=dev).clamp(max=n - 1)
                sis, sts, drs = sis[rows], sts[rows], drs[rows]
            keys = keyed.combine(params.seed, ids[sis], sts, drs)
            z = keyed.normal(keys, tuple(x0.shape[1:]), dtype=x0.dtype)
            out[sl] = adapter.loss(x0[sis], sts, z).float()[:n]
        loss = out.view(b, s, k).mean(2).T.double().cpu().numpy()  # [steps, batch]
        return AttackOutput(step_list, -loss, loss)
