"""``npz``: images in a NumPy ``.npz`` (array ``data.key``) or ``.npy`` file (memory-mapped)."""

from __future__ import annotations

import zipfile
import zlib

import numpy as np

from ..errors import DataError
from .base import Source
from .pixels import array_header, as_nchw, to_unit
from .registry import register_source

_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _npz_header(path, key: str | None) -> tuple[str, tuple[int, ...], np.dtype]:
    """(key, shape, dtype) of one array in an .npz, read from its header without loading it."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"data.path: cannot open {path} as .npz ({e})") from e
    with zf:
        names = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
        if not names:
            raise DataError(f"data.path: {path} holds no arrays")
        if key is None:
            key = "images" if "images" in names else names[0]
        if key not in names:
            raise DataError(f"data.key: no array {key!r} in {path}; available: {', '.join(names)}")
        try:
            with zf.open(key + ".npy") as fh:
                reader = _HEADER_READERS.get(np.lib.format.read_magic(fh))
                if reader is not None:
                    shape, _, dtype = reader(fh)
                    return key, shape, dtype
        except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError) as e:  # a corrupt deflate stream
            raise DataError(
                f"data.path: {path} array {key!r}: cannot read its header ("
                f"{' '.join(str(e).split())}); allowed: a complete .npz as numpy.savez / numpy.savez_compressed "
                "write it"
            ) from None
    arr = _npz_array(path, key)  # rare header versions: load it
    return key, arr.shape, arr.dtype


def _npz_array(path, key: str) -> np.ndarray:
    """Array ``key`` of an .npz, loaded whole: a damaged member (a corrupt deflate stream, data shorter than its
    header says) is one line naming it (zlib.error, BadZipFile or numpy's EOF ValueError were tracebacks)."""
    try:
        with np.load(path) as z:
            return z[key]
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError) as e:
        raise DataError(
            f"{path} array {key!r}: cannot read it ({' '.join(str(e).split())}); allowed: a "
            "complete .npz as numpy.savez / numpy.savez_compressed write it"
        ) from None


def _npy(path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except (ValueError, OSError) as e:
        raise DataError(f"data.path: cannot read {path} as .npy ({' '.join(str(e).split())})") from e


@register_source("npz")
class ArraySource(Source):
    """uint8 (0..255) or float ([-1, 1]) arrays, NHW, NCHW or NHWC; .npz arrays load once, .npy is mmapped."""

    accepts = "a .npz file (array data.key, default 'images' or the first) or a .npy file"

    def __init__(self, cfg):
        super().__init__(cfg)
        suffix = self.path.suffix.lower()
        if suffix == ".npy":
            if cfg.key:
                raise DataError(
                    f"data.key = {cfg.key!r} does not apply to {self.path}: a .npy file holds one array"
                )
            self.key = None
            arr = _npy(self.path)
            shape, dtype = arr.shape, arr.dtype
        elif suffix == ".npz":
            self.key, shape, dtype = _npz_header(self.path, cfg.key)
        else:
            raise DataError(
                f"data.path: {self.path} is not a .npz or .npy file; source 'npz' reads {self.accepts}"
            )
        self.dtype, self.layout, self.n = array_header(shape, dtype, self.where())  # dtype as stored (door)
        self._array: np.ndarray | None = None

    def where(self) -> str:
        return str(self.path) if self.key is None else f"{self.path} array {self.key!r}"

    def __len__(self) -> int:
        return self.n

    def _full(self) -> np.ndarray:
        if self._array is None:
            self._array = _npy(self.path) if self.key is None else _npz_array(self.path, self.key)
        return self._array

    def _read(self, ids: np.ndarray) -> np.ndarray:
        return as_nchw(to_unit(np.asarray(self._full()[ids]), self.where(), ids), self.layout)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}  # ship the path, not the pixels
