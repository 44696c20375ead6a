"""Door pass 6 on sweep inputs: given arrays stored with different pixel dtypes, ... Each is refused with one line
naming the key and what is allowed, before any compute."""

from __future__ import annotations

import pytest
from test_door_inputs5 import given_cfg


def test_given_arrays_of_uint8_beside_float_are_refused(tmp_path, monkeypatch):
    """Members float32 in [-1, 1], non-members uint8: only the uint8 set lies on 256 levels, which an attack can
    score instead of membership (as JPEG beside PNG). float64 beside float32 is read on one grid: passes."""
    import h5py
    import numpy as np

    from mia_ray.door import check_content, open_pool
    from mia_ray.errors import DataError

    rng = np.random.default_rng(6)
    u8 = rng.integers(0, 256, (60, 8, 8), dtype=np.uint8)
    smooth = rng.uniform(-1, 1, (30, 8, 8))
    np.save(tmp_path / "m32.npy", smooth.astype(np.float32))
    np.save(tmp_path / "m16.npy", smooth.astype(np.float16))
    np.save(tmp_path / "m64.npy", smooth[:, ::-1].astype(np.float64))
    np.save(tmp_path / "n8.npy", u8[30:])
    np.save(tmp_path / "m8.npy", u8[:30])
    for members, stored in [("m32", "float32 or wider"), ("m16", "float16")]:
        cfg = given_cfg("npz", tmp_path / f"{members}.npy", tmp_path / "n8.npy", monkeypatch, tmp_path / "cache")
        with pytest.raises(DataError, match=rf"^data\.nonmembers: pixels are stored as uint8 but the members' as "
                                            rf"{stored}; allowed: members and non-members stored alike \(convert one "
                                            r"set: the quantisation of one set only lets an attack tell them apart by "
                                            r"the storage, not by membership\)$"):
            check_content(cfg, open_pool(cfg))
    for members, nonmembers in [("m8", "n8"), ("m32", "m64")]:  # stored alike: pass
        cfg = given_cfg("npz", tmp_path / f"{members}.npy", tmp_path / f"{nonmembers}.npy", monkeypatch,
                        tmp_path / "cache")
        check_content(cfg, open_pool(cfg))
    for name, array in (("m", smooth.astype(np.float32)), ("n", u8[30:])):
        with h5py.File(tmp_path / f"{name}.h5", "w") as f:
            f.create_dataset("images", data=array)
    cfg = given_cfg("hdf5", tmp_path / "m.h5", tmp_path / "n.h5", monkeypatch, tmp_path / "cache")
    with pytest.raises(DataError, match=r"^data\.nonmembers: pixels are stored as uint8 but the members' as float32"):
        check_content(cfg, open_pool(cfg))


def test_given_parquet_of_encoded_bytes_beside_arrays_is_refused(tmp_path, monkeypatch):
    import io

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from mia_ray.door import check_content, open_pool
    from mia_ray.errors import DataError

    rng = np.random.default_rng(7)
    u8 = rng.integers(0, 256, (40, 8, 8), dtype=np.uint8)
    png = []
    for x in u8[:20]:
        b = io.BytesIO()
        Image.fromarray(x).save(b, "PNG")
        png.append(b.getvalue())
    pq.write_table(pa.table({"image": png}), tmp_path / "m.parquet")
    lists = pa.array([x.tolist() for x in u8[20:]], pa.list_(pa.list_(pa.uint8())))
    pq.write_table(pa.table({"image": lists}), tmp_path / "n.parquet")
    cfg = given_cfg("parquet", tmp_path / "m.parquet", tmp_path / "n.parquet", monkeypatch, tmp_path / "cache")
    with pytest.raises(DataError, match=r"^data\.nonmembers: pixels are stored as uint8 but the members' as encoded "
                                        r"image bytes; allowed"):
        check_content(cfg, open_pool(cfg))
