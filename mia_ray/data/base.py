"""The Source interface: a fixed, indexable pool of images read on demand."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from ..config import DataConfig
from ..errors import ConfigError, DataError
from .pixels import fit

MIN_RESOLUTION = 4  # the UNet halves the image once per block: smaller images leave nothing to convolve
# Every image is resized to resolution x resolution (float32) and the UNet's activations grow with its square:
# 1048576 passed and asked for 4 TiB per RGB image. Pixel-space diffusion models stop at 1024 px (the largest
# public diffusers UNet2DModel checkpoints, e.g. google/ncsnpp-ffhq-1024, are 1024 px); 1024 px RGB is 12 MiB
# per image, 4x more per batch element than 512 px: already a GPU-bound training run.
MAX_RESOLUTION = 1024


def check_image_shape(cfg: DataConfig) -> None:
    """``data.channels`` and ``data.resolution``: the one rule, used by every source and by the sweep's door."""
    if cfg.channels not in (1, 3):
        raise ConfigError(f"data.channels = {cfg.channels!r}; allowed: 1 (grayscale) or 3 (RGB)")
    if (isinstance(cfg.resolution, bool) or not isinstance(cfg.resolution, int)
            or not MIN_RESOLUTION <= cfg.resolution <= MAX_RESOLUTION):
        raise ConfigError(
            f"data.resolution = {cfg.resolution!r}; allowed: an integer in [{MIN_RESOLUTION}, {MAX_RESOLUTION}]"
        )


class Source:
    """A pool of images addressed by integer sample ids ``0 .. len(self) - 1``.

    Subclasses validate what is cheap in ``__init__`` (path, key, shape, dtype) and implement
    ``__len__`` and ``_read(ids)``, which returns float32 images in [-1, 1] at their native size:
    one ``[n, C, H, W]`` array, or a list of ``[C, H, W]`` arrays when sizes may differ.
    Sources hold no open file handles, so they pickle cheaply (e.g. to Ray actors).
    """

    name: ClassVar[str] = ""
    needs_path: ClassVar[bool] = True
    uses_key: ClassVar[bool] = True  # data.key names an array, dataset or column of data.path
    accepts: ClassVar[str] = ""  # what data.path should be, for error messages

    def __init__(self, cfg: DataConfig):
        check_image_shape(cfg)
        self.cfg = cfg
        self.path: Path | None = self._require_path(cfg) if self.needs_path else None

    def _require_path(self, cfg: DataConfig) -> Path:
        if not cfg.path:
            raise DataError(
                f"data.path is required for source {self.name!r} ({self.accepts}); "
                "set data.path=/path/to/data"
            )
        path = Path(cfg.path).expanduser().absolute()
        if not path.exists():
            raise DataError(f"data.path: {path} does not exist (source {self.name!r} reads {self.accepts})")
        return path

    def __len__(self) -> int:
        raise NotImplementedError

    def _read(self, ids: np.ndarray) -> np.ndarray | list[np.ndarray]:
        raise NotImplementedError

    def load(self, ids) -> np.ndarray:
        """Images ``ids`` (any order, repeats allowed) as float32 ``[n, channels, res, res]`` in [-1, 1]."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        c, r, n = self.cfg.channels, self.cfg.resolution, len(self)
        if ids.size == 0:
            return np.empty((0, c, r, r), dtype=np.float32)
        bad = ids[(ids < 0) | (ids >= n)]
        if bad.size:
            raise DataError(f"{self.describe()}: sample id {int(bad[0])} is outside [0, {n})")
        x = self._read(ids)
        if isinstance(x, list):
            return np.concatenate([fit(img[None], c, r) for img in x])
        return fit(x, c, r)

    def scan_chunks(self, size: int = 256):
        """Sample ids in order, in chunks that are cheap to read together (the door's full scan)."""
        for lo in range(0, len(self), size):
            yield np.arange(lo, min(lo + size, len(self)), dtype=np.int64)

    def files_to_fingerprint(self) -> list[Path]:
        """The files whose (path, size, mtime) identify this pool's content (empty: not cacheable)."""
        return [self.path] if self.path is not None and self.path.is_file() else []

    def where(self) -> str:
        """How error messages name this source's data (file, and key when there is one)."""
        return str(self.path) if self.path is not None else self.name

    def image_name(self, i: int) -> str:
        """How error messages name image ``i`` (its file, where images are files)."""
        return f"{self.where()} image {i}"

    def describe(self) -> str:
        c, r = self.cfg.channels, self.cfg.resolution
        return f"{self.name} {self.where()} ({len(self)} images -> {c}x{r}x{r})"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"
