"""Train a target: Adam with warm-up, grad-clip and EMA; DP-SGD through Opacus when epsilon < inf.

For DP targets ``final_loss`` (a statistic of the members computed outside DP-SGD, so never noised) is
NaN: publishing it would leak about the members beyond the DP guarantee. ``heldout_loss`` (the trained
model's loss on held-out non-members, given to ``train_target``) is published for every target instead.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import UNet2DModel

from ..config import TargetSpec
from ..errors import ConfigError
from ..families import make_family
from ..models import NoiseNet, build_unet, count_params, pick_device
from ..progress import Progress
from .dp import epsilons, noise_generator, sample_rate_steps, schedule, validate_dp
from .grad_sample import MODES, Backward, PerSampleLoss, contiguous_conv_inputs

HELDOUT_DRAWS = 4  # (step, noise) draws per held-out image


@dataclass
class TrainResult:
    unet: UNet2DModel  # plain UNet2DModel (EMA weights when EMA is on), on CPU, eval mode
    final_loss: float  # mean training loss over the last 10% of steps; NaN for DP targets (see above)
    train_steps: int
    train_seconds: float
    epsilon_spent: float = math.inf  # under the accountant that calibrated the noise
    noise_multiplier: float = 0.0
    params: int = 0
    heldout_loss: float = math.nan  # final model's loss on held-out non-members (NaN when none given)
    accountant: str = ""  # "rdp" | "prv" for DP targets
    epsilon_rdp: float = math.inf  # the run's epsilon under each accountant (inf without DP)
    epsilon_prv: float = math.inf


def train_target(spec: TargetSpec, images: np.ndarray, device=None, progress: bool = True,
                 heldout: np.ndarray | None = None) -> TrainResult:
    """Train ``spec``'s model on ``images`` (the members, float32 NCHW in [-1, 1]); seeded.

    ``heldout``: non-member images (same layout) for ``heldout_loss``."""
    dp = math.isfinite(spec.dp.epsilon)
    if dp:
        validate_dp(spec.dp)
    device = torch.device(device) if device is not None else pick_device()
    torch.manual_seed(spec.seed)
    gen = torch.Generator().manual_seed(spec.seed)
    unet = build_unet(spec.model, images.shape[-1], images.shape[1]).to(device).train()
    data = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    family = make_family(spec.family)
    opt = torch.optim.Adam(unet.parameters(), lr=spec.train.lr)
    warm = max(spec.train.warmup, 0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
    ema = copy.deepcopy(unet).eval().requires_grad_(False) if spec.train.ema_decay > 0 else None
    if dp:  # per-sample gradients by dp.grad_sample_mode
        opt, batches, engine, backward = _make_private(unet, opt, data, spec, gen, device)
    else:
        engine, backward = None, _plain_backward(NoiseNet(unet), uses_bf16(spec, device))
        batches = _shuffled_batches(len(data), spec.train.batch_size, gen)
    losses, t0 = [], time.monotonic()
    with Progress(spec.train.steps, f"train {spec.family.name} n={spec.train_size} eps={spec.dp.epsilon}",
                  enabled=progress) as bar:
        for step in range(spec.train.steps):
            idx = next(batches)
            opt.zero_grad(set_to_none=True)
            if len(idx) == 0:  # only DP-SGD's Poisson sampling draws an empty batch: a noise-only step
                backward.empty()
                loss = None
            else:
                x0 = data[idx].to(device)
                steps = family.sample_train(len(idx), gen).to(device)
                noise = torch.randn(x0.shape, generator=gen).to(device)
                loss = backward(family, x0, steps, noise)
            if not dp and spec.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(unet.parameters(), spec.train.grad_clip)
            opt.step()
            sched.step()
            if ema is not None:
                _ema_update(ema, unet, spec.train.ema_decay)
            if loss is not None:
                losses.append(loss.item())
                if not math.isfinite(losses[-1]):
                    raise diverged(spec, step, losses[-1])
            bar.update(1, loss=losses[-1] if losses else math.nan)
    seconds = time.monotonic() - t0
    tail = losses[-max(1, len(losses) // 10):] or [math.nan]
    trained = ema if ema is not None else unet
    plain = build_unet(spec.model, images.shape[-1], images.shape[1])
    plain.load_state_dict({k: v.detach().cpu() for k, v in trained.state_dict().items()})
    final_loss = math.nan if dp else float(np.mean(tail))
    # every round steps the optimiser (an empty Poisson batch is a noise-only step)
    result = TrainResult(plain.eval(), final_loss, spec.train.steps, seconds, params=count_params(plain))
    if heldout is not None and len(heldout):
        result.heldout_loss = heldout_loss(plain, spec, heldout, device)
    if engine is not None:
        result.accountant = spec.dp.accountant
        result.epsilon_spent = float(engine.get_epsilon(spec.dp.delta))
        result.noise_multiplier = float(opt.noise_multiplier)
        eps = epsilons(*sample_rate_steps(engine.accountant.history), spec.dp.delta)
        result.epsilon_rdp, result.epsilon_prv = eps["rdp"], eps["prv"]
    return result


def uses_bf16(spec: TargetSpec, device: torch.device) -> bool:
    """bf16 autocast for this training run: plain training on CUDA when ``model.bf16`` (DP-SGD stays fp32:
    Opacus' per-sample gradients)."""
    return device.type == "cuda" and not math.isfinite(spec.dp.epsilon) and spec.model.bf16


def _plain_backward(net, amp: bool):
    """The backward of plain training: the mean loss (bf16 autocast on CUDA when ``amp``), detached."""

    def backward(family, x0, steps, noise):
        with torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext():
            loss = family.loss(net, x0, steps, noise).mean()
        loss.backward()
        return loss.detach()

    return backward


def heldout_loss(unet, spec: TargetSpec, images: np.ndarray, device=None) -> float:
    """Mean training loss of ``unet`` on ``images`` over HELDOUT_DRAWS seeded (step, noise) draws each."""
    device = torch.device(device) if device is not None else next(unet.parameters()).device
    family = make_family(spec.family)
    gen = torch.Generator().manual_seed(spec.seed + 2)
    net = NoiseNet(copy.deepcopy(unet).to(device).eval())  # the caller's module stays where it is
    data = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    total, count = 0.0, 0
    with torch.no_grad():
        for _ in range(HELDOUT_DRAWS):
            for i in range(0, len(data), 256):
                x0 = data[i : i + 256]
                steps = family.sample_train(len(x0), gen)
                noise = torch.randn(x0.shape, generator=gen)
                total += family.loss(net, x0.to(device), steps.to(device), noise.to(device)).double().sum().item()
                count += len(x0)
    return total / count


def _shuffled_batches(n: int, batch_size: int, gen: torch.Generator):
    """Endless epochs of a seeded permutation, cut into batches of batch_size (the last may be short)."""
    bs = min(batch_size, n)
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, bs):
            yield perm[i : i + bs]


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            e.lerp_(p.detach(), 1 - decay)


def diverged(spec: TargetSpec, step: int, loss: float) -> ConfigError:
    """A non-finite training loss: the update it drives makes the weights NaN (a NaN or infinite gradient stays so
    through clipping), and such a target scored every attack at AUC 0.5, as if it leaked nothing (train.lr = 1e300
    did). Refused in one line instead; a Tune trial does not retry it. Under DP-SGD this reveals nothing the
    trained weights would not: they would be NaN."""
    if math.isfinite(spec.dp.epsilon):
        clip = f"a smaller dp.max_grad_norm (now {spec.dp.max_grad_norm:g})"
    else:
        clip = f"a smaller train.grad_clip (now {spec.train.grad_clip:g}; 0 = off)"
    return ConfigError(f"training diverged: the loss is {loss} at step {step + 1} of {spec.train.steps} (train.lr = "
                       f"{spec.train.lr:g}); allowed: a smaller train.lr, or {clip}")


def _make_private(unet, opt, data, spec: TargetSpec, gen, device):
    """Opacus DP-SGD: noise calibrated to (epsilon, delta) over the planned steps by ``dp.accountant``,
    Poisson sampling; the seeded noise generator on the training device (Opacus' CSPRNG in secure mode);
    per-sample gradients by ``dp.grad_sample_mode`` (``grad_sample.MODES``)."""
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    opacus_mode, backward_fn, contiguous = MODES[spec.dp.grad_sample_mode]
    if contiguous:  # Opacus' conv per-sample gradient is wrong for channels_last-strided inputs (see there)
        contiguous_conv_inputs(unet)
    ghost = {"criterion": PerSampleLoss()} if opacus_mode == "ghost" else {}

    index = TensorDataset(torch.arange(len(data)))
    bs = min(spec.train.batch_size, len(data))
    loader = DataLoader(index, batch_size=bs, shuffle=True, generator=gen)
    epochs = schedule(len(data), spec.train.batch_size, spec.train.steps)[1]  # the door's check_budget uses it too
    engine = PrivacyEngine(accountant=spec.dp.accountant, secure_mode=spec.dp.secure_mode)
    made = engine.make_private_with_epsilon(
        module=unet,
        optimizer=opt,
        data_loader=loader,
        target_epsilon=spec.dp.epsilon,
        target_delta=spec.dp.delta,
        epochs=epochs,
        max_grad_norm=spec.dp.max_grad_norm,
        poisson_sampling=spec.dp.poisson,
        noise_generator=None if spec.dp.secure_mode else noise_generator(device, spec.seed + 1),
        grad_sample_mode=opacus_mode,
        **ghost,
    )
    model, dp_opt, dp_loader = made[0], made[1], made[-1]  # ghost also returns the wrapped criterion (made[2])
    backward = Backward(backward_fn, NoiseNet(model), unet, made[2] if ghost else None)

    def batches():
        while True:
            for (idx,) in dp_loader:
                yield idx

    return dp_opt, batches(), engine, backward
