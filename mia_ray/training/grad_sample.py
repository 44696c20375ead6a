"""How DP-SGD gets its per-sample gradients (``dp.grad_sample_mode``): a registry of backward passes.

Every mode hands Opacus' DP optimiser the same per-sample gradients of the same per-sample losses, so the
clipping at ``dp.max_grad_norm``, the noise (same generator, same draws) and the accountant's history are
identical; only the way the gradients are computed differs (tests/test_grad_sample_modes.py checks every
mode's DP step against the update recomputed by hand, to float rounding, with and without attention, and ε).

* ``hooks``: Opacus' module hooks and per-layer formulas (Opacus' default).
* ``functorch``: Opacus' hooks with ``torch.func`` per-sample gradients for every layer.
* ``ghost``: Opacus' fast gradient clipping: per-sample gradient norms without the per-sample gradients,
  then a second backward of the clip-weighted loss.
* ``vmap``: ``torch.func.vmap(grad)`` of the whole network over the batch (in ``VMAP_CHUNK``-row chunks),
  written into Opacus' ``no_op`` module for the optimiser to clip and noise.

``torch.compile`` of the vmap'd gradient was measured no faster at the quickstart size on CPU (36 vs 34 ms per
batch-64 backward, after minutes of compiling on a 2-core VM), so it is not offered.
Opacus' ``ew`` (expanded weights) fails on UNet2DModel ("Expanded Weights encountered but cannot handle
function is_floating_point", measured with Opacus 1.6 / torch 2.x), so it is not offered.
Measured speeds and failures: ``benchmarks/training.py`` (docs/bench_training.json).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

VMAP_CHUNK = 128  # rows per vmap call: a whole Poisson batch at the quickstart size (64 + its spread: a 64-row cap
# split ~half the batches in two and made vmap slower than hooks); 16- and 32-row chunks were 2x slower on CPU
# At the paper size (64x64, batch 32, CPU) a whole-batch vmap ran out of 19 GB where hooks fit.


class PerSampleLoss(torch.nn.Module):
    """The "criterion" Opacus' ghost clipping wraps: the per-sample losses, reduced as Opacus asks."""

    reduction = "mean"

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        if self.reduction == "none":
            return losses
        return losses.mean() if self.reduction == "mean" else losses.sum()


@dataclass
class Backward:
    """One DP step's backward: fills what Opacus' optimiser reads, returns the detached mean loss."""

    fn: Callable  # (self, family, x0, steps, noise) -> mean loss
    net: torch.nn.Module  # the NoiseNet around Opacus' wrapped module
    unet: torch.nn.Module  # the bare UNet2DModel (its parameters are the optimiser's)
    criterion: torch.nn.Module | None = None  # ghost: Opacus' wrapped PerSampleLoss

    def __call__(self, family, x0, steps, noise) -> torch.Tensor:
        return self.fn(self, family, x0, steps, noise)

    def empty(self) -> None:
        """An empty Poisson batch: hand the optimiser zero per-sample gradients (ghost: a zero summed
        gradient), so its step adds the noise alone and the accountant counts the round, as DP-SGD's
        analysis of Poisson sampling assumes (skipping the round would release less than was accounted)."""
        for p in self.unet.parameters():
            if not p.requires_grad:
                continue
            if self.criterion is not None:  # ghost: Opacus' optimiser reads p.grad, not per-sample gradients
                p.grad = torch.zeros_like(p)
            else:
                p.grad_sample = p.new_zeros((0, *p.shape))


def _hooks(b: Backward, family, x0, steps, noise):
    loss = family.loss(b.net, x0, steps, noise).mean()
    loss.backward()
    return loss.detach()


def _ghost(b: Backward, family, x0, steps, noise):
    loss = b.criterion(family.loss(b.net, x0, steps, noise))
    loss.backward()  # two backwards: the per-sample norms, then the clip-weighted loss
    return loss.detach()


def _vmap(b: Backward, family, x0, steps, noise):
    from torch.func import functional_call, grad, vmap

    named = [(n, p) for n, p in b.unet.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in named}

    def one(pd, x, s, e):
        def net(xin, tau):
            return functional_call(b.unet, pd, (xin, tau)).sample

        loss = family.loss(net, x[None], s[None], e[None])[0]
        return loss, loss.detach()

    per_sample = vmap(grad(one, has_aux=True), in_dims=(None, 0, 0, 0))
    grads, losses = [], []
    for i in range(0, len(x0), VMAP_CHUNK):
        g, loss = per_sample(params, x0[i : i + VMAP_CHUNK], steps[i : i + VMAP_CHUNK], noise[i : i + VMAP_CHUNK])
        grads.append(g)
        losses.append(loss)
    for n, p in named:  # Opacus' mean reduction wants the gradients of the per-sample losses themselves
        p.grad_sample = torch.cat([g[n] for g in grads])
    return torch.cat(losses).mean()


def contiguous_conv_inputs(module: torch.nn.Module) -> None:
    """Hand every Conv2d of ``module`` a contiguous (NCHW) input.

    Opacus 1.6's per-sample conv gradient (``opacus.utils.tensor_utils.unfold2d``, used by ``hooks`` and
    ``ghost``) reads its input with ``as_strided`` as if it were NCHW-contiguous; for a channels_last-strided
    input it is wrong (measured: exactly zero). diffusers' attention blocks output such tensors and the
    GroupNorm / SiLU after them keep the layout, so without this every conv after an attention block got a zero
    clipped gradient under ``hooks`` (noise only) and ``ghost`` under-estimated the per-sample norms (2-3%
    low, so its clipped gradients could exceed max_grad_norm). tests/test_grad_sample_modes.py checks both on
    a UNet with attention. A copy per conv of a non-contiguous input; a no-op for contiguous ones."""

    def pre_hook(_, args):
        return (args[0].contiguous(), *args[1:])

    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_pre_hook(pre_hook)


# mode -> (Opacus' grad_sample_mode, backward, needs contiguous conv inputs)
MODES: dict[str, tuple[str, Callable, bool]] = {
    "hooks": ("hooks", _hooks, True),
    "functorch": ("functorch", _hooks, False),  # torch.func per layer: right for any layout
    "ghost": ("ghost", _ghost, True),
    "vmap": ("no_op", _vmap, False),
}
