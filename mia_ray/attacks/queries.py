"""Noise predictions of many (input, step) rows in bounded, padded forwards: the step-wise attacks' engine."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .base import rows_per_call
from .loss import MIN_ROWS


def eps_rows(adapter, rows: Callable[[slice], torch.Tensor], steps: torch.Tensor, max_batch: int) -> torch.Tensor:
    """eps_hat(rows(i), steps[i]) for every row i, float32 [n, ...].

    ``rows(slice)`` builds the inputs of a slice of rows (so a flattened samples x steps work list is never
    materialised whole). Forwards hold at most ``max_batch`` rows (fewer on CPU: ``rows_per_call``) and are
    padded to >= ``MIN_ROWS`` rows by repeating the last one, so a row's prediction does not depend on its
    batch-mates (see loss.MIN_ROWS).
    """
    n = len(steps)
    out = None
    step = rows_per_call(adapter, max_batch, rows(slice(0, 1)).shape) if n else max_batch
    for lo in range(0, n, step):
        sl = slice(lo, min(lo + step, n))
        x, st = rows(sl), steps[sl]
        m = len(st)
        if m < MIN_ROWS:
            pad = torch.arange(MIN_ROWS, device=st.device).clamp(max=m - 1)
            x, st = x[pad], st[pad]
        e = adapter.eps_hat(x, st)[:m]
        if out is None:
            out = torch.empty((n,) + tuple(e.shape[1:]), dtype=torch.float32, device=e.device)
        out[sl] = e
    return out


def eps_at(adapter, x: torch.Tensor, step: int, max_batch: int) -> torch.Tensor:
    """eps_hat(x, step) for one step shared by the batch."""
    steps = torch.full((len(x),), step, dtype=torch.int64, device=x.device)
    return eps_rows(adapter, lambda sl: x[sl], steps, max_batch)


def flat_work(b: int, steps: list[int], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample index and step of a flattened work list, sample-major then step."""
    st = torch.as_tensor(steps, dtype=torch.int64, device=device)
    return torch.arange(b, device=device).repeat_interleave(len(st)), st.repeat(b)


def lp_sum(d: torch.Tensor, p: float) -> torch.Tensor:
    """Per-row sum over all elements of |d|^p, in float64 (the authors' ``.abs()**p .flatten().sum()``)."""
    return d.double().abs().pow(p).flatten(1).sum(1)
