"""``digits``: scikit-learn's bundled handwritten digits (1797 images, 8x8, offline)."""

from __future__ import annotations

import functools

import numpy as np

from .base import Source
from .registry import register_source


@functools.lru_cache(maxsize=1)
def _digits() -> np.ndarray:
    """float32 [1797, 1, 8, 8] in [-1, 1] (sklearn values 0..16)."""
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.float32)
    return (images / 16.0 * 2.0 - 1.0)[:, None]


@register_source("digits")
class DigitsSource(Source):
    """sklearn ``load_digits``; any resolution (bilinear upsampling), gray repeated for 3 channels."""

    needs_path = False
    uses_key = False

    def __len__(self) -> int:
        return 1797

    def _read(self, ids: np.ndarray) -> np.ndarray:
        return _digits()[ids]

    def where(self) -> str:
        return "digits (sklearn load_digits)"

    def describe(self) -> str:
        c, r = self.cfg.channels, self.cfg.resolution
        return f"digits (sklearn load_digits, 1797 images 8x8 -> {c}x{r}x{r})"
