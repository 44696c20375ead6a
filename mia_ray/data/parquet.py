"""``parquet``: an image column (``data.key``, default ``image``) of a Parquet file or folder of files.

The column holds encoded PNG/JPEG bytes (binary, or a struct with a ``bytes`` field as Hugging Face
datasets write it), nested lists of numbers (HW, CHW or HWC per row), or an arrow fixed-shape tensor.
Only the row groups holding requested ids are read.
"""

from __future__ import annotations

import io

import numpy as np

from ..errors import DataError
from .base import Source
from .pixels import as_nchw, decode_image, layout_of, to_unit
from .registry import register_source

ALLOWED_COLUMNS = (
    "encoded image bytes (binary, or struct with a 'bytes' field), nested lists of uint8/float, "
    "or a fixed-shape tensor"
)


def _is_list(t) -> bool:
    import pyarrow as pa

    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _column_kind(t, where: str) -> tuple[str, np.dtype | None]:
    """('bytes' | 'struct' | 'list' | 'tensor', numpy dtype of the numbers or None)."""
    import pyarrow as pa

    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "bytes", None
    if pa.types.is_struct(t) and t.get_field_index("bytes") >= 0:
        return "struct", None
    if isinstance(t, pa.FixedShapeTensorType) or _is_list(t):
        leaf = t.value_type
        while _is_list(leaf):
            leaf = leaf.value_type
        if pa.types.is_uint8(leaf) or pa.types.is_floating(leaf):
            return ("list" if _is_list(t) else "tensor"), np.dtype(leaf.to_pandas_dtype())
    raise DataError(f"{where}: column type {t} is not supported; allowed: {ALLOWED_COLUMNS}")


@register_source("parquet")
class ParquetSource(Source):
    """Rows of a Parquet file (or of the sorted ``*.parquet`` files of a folder) are the images."""

    accepts = "a Parquet file or folder of them with an image column (data.key, default 'image')"

    def __init__(self, cfg):
        super().__init__(cfg)
        import pyarrow.parquet as pq

        self.key = cfg.key or "image"
        self.files = sorted(self.path.glob("*.parquet")) if self.path.is_dir() else [self.path]
        if not self.files:
            raise DataError(f"data.path: folder {self.path} holds no .parquet files")
        self.groups: list[tuple[int, int]] = []  # (file index, row group) in id order
        sizes: list[int] = []
        first: tuple = ()  # the first file's column type and kind
        for fi, file in enumerate(self.files):
            try:
                pf = pq.ParquetFile(file)
            except Exception as e:
                raise DataError(
                    f"data.path: cannot read {file} as Parquet ({' '.join(str(e).split())})"
                ) from e
            names = pf.schema_arrow.names
            if self.key not in names:
                raise DataError(f"data.key: no column {self.key!r} in {file}; available: {', '.join(names)}")
            t = pf.schema_arrow.field(self.key).type
            kind = _column_kind(t, self._where(file)), getattr(t, "shape", None)
            if fi == 0:
                first = (t, kind)
            if kind != first[1]:  # the last file's kind was used to decode every file's rows
                raise DataError(
                    f"data.path: column {self.key!r} is {first[0]} in {self.files[0]} but {t} in {file}; allowed: one "
                    "kind of image column (encoded bytes, nested lists of one dtype, one tensor shape) in every file"
                )
            self.kind, self.dtype = kind[0]
            if self.kind == "tensor":
                self.layout = layout_of((0, *t.shape), self._where(file))
            for g in range(pf.metadata.num_row_groups):
                self.groups.append((fi, g))
                sizes.append(pf.metadata.row_group(g).num_rows)
        self.starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        if self.starts[-1] == 0:
            raise DataError(f"data.path: {self.where()} holds no rows")

    def _where(self, file, row: int | None = None) -> str:
        at = f" row {row}" if row is not None else ""
        return f"{file} column {self.key!r}{at}"

    def where(self) -> str:
        return self._where(self.path)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def scan_chunks(self, size: int = 256):
        """One chunk per row group: each is read once."""
        for g in range(len(self.groups)):
            if self.starts[g + 1] > self.starts[g]:
                yield np.arange(self.starts[g], self.starts[g + 1], dtype=np.int64)

    def files_to_fingerprint(self) -> list:
        return list(self.files)

    def _values(self, uniq: np.ndarray) -> list:
        """Column values (arrow scalars) of the sorted unique ids, reading only their row groups."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        group_of = np.searchsorted(self.starts, uniq, side="right") - 1
        values: list = []
        for g in np.unique(group_of):
            fi, rg = self.groups[g]
            try:
                col = pq.ParquetFile(self.files[fi]).read_row_group(rg, columns=[self.key]).column(self.key)
            except (pa.ArrowException, OSError) as e:  # a damaged page ("Unexpected end of stream") was a traceback
                raise DataError(
                    f"{self._where(self.files[fi])} row group {rg}: cannot read it ({' '.join(str(e).split())}); "
                    "allowed: a Parquet file whose image column reads whole (write it again)"
                ) from None
            values.extend(col.take(uniq[group_of == g] - self.starts[g]))
        return values

    def image_name(self, i: int) -> str:
        return self._where(self._file_of(i), i)

    def _file_of(self, i: int):
        return self.files[self.groups[np.searchsorted(self.starts, i, side="right") - 1][0]]

    def _decode(self, i: int, value) -> np.ndarray:
        """One arrow value -> float32 [C, H, W] in [-1, 1] at its native size."""
        where = self._where(self._file_of(i), i)
        v = value.as_py()
        if self.kind == "struct":
            v = v and v.get("bytes")
        if v is None:
            raise DataError(f"{where}: no image (null); allowed: {ALLOWED_COLUMNS}")
        if self.kind in ("bytes", "struct"):
            return decode_image(io.BytesIO(v), self.cfg.channels, where)
        if self.kind == "tensor":
            a = np.asarray(value.to_numpy(), dtype=self.dtype)[None]
            return as_nchw(to_unit(a, where), self.layout)[0]
        try:
            a = np.asarray(v, dtype=self.dtype)
        except ValueError as e:
            raise DataError(f"{where}: ragged nested lists; allowed: one HW, CHW or HWC array per row") from e
        return as_nchw(to_unit(a[None], where), layout_of(a[None].shape, where))[0]

    def _read(self, ids: np.ndarray) -> list[np.ndarray] | np.ndarray:
        uniq, inverse = np.unique(ids, return_inverse=True)
        images = [self._decode(int(i), v) for i, v in zip(uniq, self._values(uniq), strict=True)]
        if self.kind in ("bytes", "struct"):
            return [images[k] for k in inverse]  # encoded images may differ in size: each is resized
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise DataError(
                f"{self.where()}: mixed image shapes {sorted(shapes)}; allowed: one shape for every row"
            )
        return np.stack(images)[inverse]
