"""``hdf5``: an image dataset (``data.key``, default ``images``) in an HDF5 file, read row by row."""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .base import Source
from .pixels import array_header, as_nchw, to_unit
from .registry import register_source


def _open(path):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"data.path: cannot open {path} as HDF5 ({' '.join(str(e).split())})") from e


def _dataset_names(f) -> list[str]:
    import h5py

    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


@register_source("hdf5")
class HDF5Source(Source):
    """uint8 (or float in [-1, 1]) images stored NHW, NCHW or NHWC; only requested rows are read."""

    accepts = "an HDF5 file with an image dataset (data.key, default 'images')"

    def __init__(self, cfg):
        super().__init__(cfg)
        if self.path.is_dir():  # h5py's message: "file read failed: time = ..., errno = 21, buf = 0x7ffc...": one line
            raise DataError(f"data.path: {self.path} is a folder; allowed: {self.accepts}")
        self.key = cfg.key or "images"
        with _open(self.path) as f:
            names = _dataset_names(f)
            if self.key not in names:
                raise DataError(
                    f"data.key: no dataset {self.key!r} in {self.path}; "
                    f"available: {', '.join(names) or 'none'}"
                )
            shape, dtype = f[self.key].shape, f[self.key].dtype
        self.dtype, self.layout, self.n = array_header(shape, dtype, self.where())  # dtype as stored (door)

    def where(self) -> str:
        return f"{self.path} dataset {self.key!r}"

    def __len__(self) -> int:
        return self.n

    def _read(self, ids: np.ndarray) -> np.ndarray:
        uniq, inverse = np.unique(ids, return_inverse=True)  # h5py wants increasing indices
        lo, hi = int(uniq[0]), int(uniq[-1]) + 1
        with _open(self.path) as f:
            ds = f[self.key]
            try:
                rows = ds[lo:hi][uniq - lo] if hi - lo <= 4 * len(uniq) else ds[uniq]  # dense: one slice
            except OSError as e:  # a damaged chunk ("filter returned failure during read") was a traceback
                raise DataError(
                    f"{self.where()} rows {lo}..{hi - 1}: cannot read them ({' '.join(str(e).split())}); allowed: "
                    "an HDF5 file whose image dataset reads whole (check it with h5dump, or write it again)"
                ) from None
        return as_nchw(to_unit(rows[inverse], self.where(), ids), self.layout)
