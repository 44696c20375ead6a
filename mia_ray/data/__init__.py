"""Image pools (registered sources) and member / non-member splits.

>>> src = open_source(DataConfig(source="digits", resolution=8))
>>> split = make_split(len(src), train_size=64, eval_size=64, seed=0, dataset="digits")
>>> x = src.load(split.members)  # float32 [64, 1, 8, 8] in [-1, 1]
"""

from __future__ import annotations

from ..config import DataConfig
from . import arrays, digits, folder, hdf5, parquet  # noqa: F401  (register the sources)
from .base import Source
from .registry import SOURCES
from .split import Split, make_split


def open_source(cfg: DataConfig) -> Source:
    """The source named by ``cfg.source``, validated (path, key, shape) but not yet read."""
    return SOURCES.get(cfg.source, key="data.source")(cfg)


__all__ = ["SOURCES", "Source", "Split", "make_split", "open_source"]
