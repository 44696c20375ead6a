"""``save_grid``: a PNG grid of images in [-1, 1] for the report (nearest-neighbour upscaled, atomic)."""

from __future__ import annotations

import math
import os
import uuid

import numpy as np
import torch
from PIL import Image


def grid_array(images, ncol: int | None = None, pad: int = 1) -> np.ndarray:
    """uint8 [H, W] (1 channel) or [H, W, 3] grid of ``images`` [N, C, h, w] in [-1, 1]; pad is white."""
    x = images.detach().float().cpu().numpy() if torch.is_tensor(images) else np.asarray(images, np.float32)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or len(x) == 0:
        raise ValueError(f"save_grid: images of shape {x.shape}; allowed: [N>0, 1 or 3, H, W]")
    n, c, h, w = x.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    grid = np.ones((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), np.float32)
    for i in range(n):
        r, q = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[:, top : top + h, left : left + w] = (np.clip(x[i], -1, 1) + 1) / 2
    grid = np.rint(grid * 255).astype(np.uint8).transpose(1, 2, 0)
    return grid[..., 0] if c == 1 else grid


def save_grid(images, path: str, ncol: int | None = None, min_tile: int = 32) -> str:
    """Write ``images`` [N, C, H, W] in [-1, 1] as one PNG grid, each tile upscaled to >= ``min_tile`` px."""
    grid = grid_array(images, ncol)
    scale = max(1, math.ceil(min_tile / images.shape[-1]))
    img = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        img.save(tmp, format="PNG")
        os.replace(tmp, path)  # atomic on one filesystem
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
