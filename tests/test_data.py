"""Data layer: splits, every registered source on tiny synthetic data, and every bad input's error."""

from __future__ import annotations

import io
import json
import pickle
import re

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mia_ray.config import DataConfig
from mia_ray.data import SOURCES, Split, make_split, open_source
from mia_ray.errors import ConfigError, DataError

RNG = np.random.default_rng(0)
IMGS = RNG.integers(0, 256, size=(5, 6, 6, 3), dtype=np.uint8)  # NHWC, known pixels
EXPECTED = IMGS.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1  # NCHW in [-1, 1]


def cfg(source, path=None, resolution=6, channels=3, key=None) -> DataConfig:
    return DataConfig(
        source=source,
        path=None if path is None else str(path),
        resolution=resolution,
        channels=channels,
        key=key,
    )


def raises(exc, pattern):
    """pytest.raises that also checks the message is one line."""

    class _Ctx:
        def __enter__(self):
            self.ctx = pytest.raises(exc, match=pattern)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *a):
            out = self.ctx.__exit__(*a)
            assert "\n" not in str(self.info.value)
            return out

    return _Ctx()


def png_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- split


def test_split_is_deterministic_and_seed_dependent():
    a, b, c = (
        make_split(100, 30, 20, seed=1),
        make_split(100, 30, 20, seed=1),
        make_split(100, 30, 20, seed=2),
    )
    assert a == b
    assert a != c and not np.array_equal(a.members, c.members)


def test_split_sizes_disjoint_and_eval_subset():
    s = make_split(100, 30, 20, seed=3)
    assert (len(s.members), len(s.eval_members), len(s.nonmembers)) == (30, 20, 20)
    assert s.members.dtype == s.nonmembers.dtype == s.eval_members.dtype == np.int64
    assert not set(s.members) & set(s.nonmembers)
    assert set(s.eval_members) <= set(s.members)
    assert len(set(s.eval_members)) == 20
    # members are the first train_size of the seeded permutation, whatever eval_size is
    assert np.array_equal(s.members, make_split(100, 30, 5, seed=3).members)
    ids, is_member = s.eval_ids()
    assert ids.tolist() == s.eval_members.tolist() + s.nonmembers.tolist()
    assert is_member.sum() == 20 and len(is_member) == 40


def test_split_arrays_are_read_only():
    s = make_split(10, 4, 2, seed=0)
    with pytest.raises(ValueError):
        s.members[0] = 5


def test_split_rows():
    s = make_split(50, 10, 4, seed=0)
    rows = s.rows()
    assert len(rows) == 14
    assert sum(r["is_member"] for r in rows) == 10
    assert sum(r["in_eval"] for r in rows) == 8
    assert all(r["in_eval"] for r in rows if not r["is_member"])
    assert {r["sample_id"] for r in rows if r["is_member"] and r["in_eval"]} == set(s.eval_members.tolist())


def test_split_save_load_roundtrip(tmp_path):
    s = make_split(1797, 64, 32, seed=7)
    path = s.save(tmp_path / "splits" / "split.json")
    assert Split.load(path) == s
    assert json.loads(path.read_text())["members"] == s.members.tolist()
    assert [p.name for p in path.parent.iterdir()] == ["split.json"]  # no temp files left


def test_split_check_detects_overlap():
    with raises(DataError, "both members and non-members"):
        Split(members=[1, 2, 3], eval_members=[1], nonmembers=[3, 4], seed=0, pool_size=10).check()
    with raises(DataError, "evaluation members are not members"):
        Split(members=[1, 2, 3], eval_members=[5], nonmembers=[4], seed=0, pool_size=10).check()


def test_split_load_bad_file(tmp_path):
    bad = tmp_path / "split.json"
    bad.write_text("{}")
    with raises(DataError, re.escape(str(bad))):
        Split.load(bad)


def test_split_pool_too_small():
    with raises(
        ConfigError, r"split: train_size \+ eval_size = 1800 exceeds the pool of 1797 images of digits"
    ):
        make_split(1797, 1000, 800, seed=0, dataset="digits")


def test_split_eval_larger_than_train():
    with raises(ConfigError, r"split\.eval_size = 20 exceeds split\.train_size = 10"):
        make_split(100, 10, 20, seed=0)
    with raises(ConfigError, r"split\.train_size"):
        make_split(100, 0, 0, seed=0)


# ---------------------------------------------------------------- digits


def test_digits_native():
    from sklearn.datasets import load_digits

    src = open_source(cfg("digits", resolution=8, channels=1))
    assert len(src) == 1797 and src.name == "digits" and "1797" in src.describe()
    x = src.load(np.arange(len(src)))
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32
    assert x.min() == -1.0 and x.max() == 1.0
    np.testing.assert_allclose(x[:, 0], load_digits().images / 16 * 2 - 1, atol=1e-6)
    y = src.load([5, 2, 5])  # order and repeats are kept
    np.testing.assert_array_equal(y, x[[5, 2, 5]])


@pytest.mark.parametrize("resolution", [16, 32])
def test_digits_upsampled_rgb(resolution):
    src = open_source(cfg("digits", resolution=resolution, channels=3))
    x = src.load([0, 1, 2])
    assert x.shape == (3, 3, resolution, resolution)
    assert x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(x[:, 0], x[:, 2])  # gray repeated
    native = open_source(cfg("digits", resolution=8, channels=1)).load([0, 1, 2])
    np.testing.assert_allclose(x.mean(axis=(1, 2, 3)), native.mean(axis=(1, 2, 3)), atol=0.05)


def test_empty_and_bad_ids():
    src = open_source(cfg("digits", resolution=8, channels=1))
    assert src.load([]).shape == (0, 1, 8, 8)
    with raises(DataError, r"sample id 1797 is outside \[0, 1797\)"):
        src.load([0, 1797])


# ---------------------------------------------------------------- folder


def test_folder_roundtrip(tmp_path):
    for i, img in enumerate(IMGS):  # nested folders; ids follow sorted relative paths
        sub = tmp_path / ("b" if i % 2 else "a")
        sub.mkdir(exist_ok=True)
        Image.fromarray(img).save(sub / f"{i}.png")
    src = open_source(cfg("folder", tmp_path))
    assert len(src) == 5 and src.files == ["a/0.png", "a/2.png", "a/4.png", "b/1.png", "b/3.png"]
    x = src.load(np.arange(5))
    np.testing.assert_allclose(x, EXPECTED[[0, 2, 4, 1, 3]], atol=1e-6)


def test_folder_gray_resize_and_jpeg(tmp_path):
    Image.fromarray(np.full((12, 20, 3), 200, np.uint8)).save(tmp_path / "wide.jpg", quality=100)
    Image.fromarray(np.full((4, 4), 51, np.uint8)).save(tmp_path / "small.PNG")
    src = open_source(cfg("folder", tmp_path, resolution=8, channels=1))
    x = src.load([0, 1])
    assert x.shape == (2, 1, 8, 8)
    np.testing.assert_allclose(x[0], 51 / 127.5 - 1, atol=1e-5)  # small.PNG sorts first
    np.testing.assert_allclose(x[1], 200 / 127.5 - 1, atol=0.02)


# ---------------------------------------------------------------- hdf5


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_hdf5_roundtrip(tmp_path, layout):
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f["images"] = IMGS.transpose(0, 3, 1, 2) if layout == "NCHW" else IMGS
    src = open_source(cfg("hdf5", path))
    assert len(src) == 5 and src.layout == layout
    np.testing.assert_allclose(src.load([4, 0, 4, 2]), EXPECTED[[4, 0, 4, 2]], atol=1e-6)


def test_hdf5_gray_nested_key_sparse_read(tmp_path):
    gray = RNG.integers(0, 256, size=(40, 6, 6), dtype=np.uint8)
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f["group/pixels"] = gray
    src = open_source(cfg("hdf5", path, channels=1, key="group/pixels"))
    ids = [39, 0, 20]  # sparse: fancy indexing path
    np.testing.assert_allclose(src.load(ids)[:, 0], gray[ids] / 127.5 - 1, atol=1e-6)


# ---------------------------------------------------------------- npz / npy


def test_npz_default_key(tmp_path):
    path = tmp_path / "d.npz"
    np.savez_compressed(path, labels=np.arange(5), images=IMGS)
    src = open_source(cfg("npz", path))
    assert src.key == "images" and len(src) == 5
    np.testing.assert_allclose(src.load([3, 1]), EXPECTED[[3, 1]], atol=1e-6)
    assert pickle.loads(pickle.dumps(src))._array is None  # ships the path, not the pixels


def test_npz_explicit_and_first_key_float(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=EXPECTED, y=np.zeros((2, 6, 6), np.float32))
    src = open_source(cfg("npz", path))  # no 'images': the first array
    assert src.key == "x"
    np.testing.assert_allclose(src.load([0, 4]), EXPECTED[[0, 4]], atol=1e-6)
    src = open_source(cfg("npz", path, key="y", channels=1))
    assert src.load([1]).shape == (1, 1, 6, 6) and (src.load([1]) == 0).all()


def test_npy_mmap(tmp_path):
    path = tmp_path / "d.npy"
    np.save(path, IMGS.transpose(0, 3, 1, 2))
    src = open_source(cfg("npz", path))
    assert isinstance(src._full(), np.memmap)
    np.testing.assert_allclose(src.load([2, 2, 0]), EXPECTED[[2, 2, 0]], atol=1e-6)


# ---------------------------------------------------------------- parquet


def test_parquet_png_bytes(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"image": [png_bytes(a) for a in IMGS], "label": list(range(5))}), path)
    src = open_source(cfg("parquet", path))
    assert len(src) == 5
    np.testing.assert_allclose(src.load([4, 1, 4]), EXPECTED[[4, 1, 4]], atol=1e-6)


def test_parquet_hf_struct_and_row_groups(tmp_path):
    path = tmp_path / "d.parquet"
    col = [{"bytes": png_bytes(a), "path": f"{i}.png"} for i, a in enumerate(IMGS)]
    pq.write_table(pa.table({"img": col}), path, row_group_size=2)
    src = open_source(cfg("parquet", path, key="img"))
    assert len(src.groups) == 3
    np.testing.assert_allclose(src.load([4, 0, 3]), EXPECTED[[4, 0, 3]], atol=1e-6)


def test_parquet_nested_lists_folder_of_files(tmp_path):
    for part, rows in (("part-0", IMGS[:3]), ("part-1", IMGS[3:])):
        t = pa.table({"image": pa.array(rows.tolist(), type=pa.list_(pa.list_(pa.list_(pa.uint8()))))})
        pq.write_table(t, tmp_path / f"{part}.parquet")
    src = open_source(cfg("parquet", tmp_path))
    assert len(src) == 5 and src.kind == "list"
    np.testing.assert_allclose(src.load([4, 0, 2, 3]), EXPECTED[[4, 0, 2, 3]], atol=1e-6)


def test_parquet_fixed_shape_tensor(tmp_path):
    path = tmp_path / "d.parquet"
    storage = pa.FixedSizeListArray.from_arrays(pa.array(EXPECTED.reshape(-1)), 3 * 6 * 6)
    tensor = pa.ExtensionArray.from_storage(pa.fixed_shape_tensor(pa.float32(), [3, 6, 6]), storage)
    pq.write_table(pa.table({"image": tensor}), path)
    src = open_source(cfg("parquet", path))
    assert src.kind == "tensor"
    np.testing.assert_allclose(src.load([1, 3]), EXPECTED[[1, 3]], atol=1e-6)


# ---------------------------------------------------------------- bad input


def test_unknown_source_and_bad_config():
    assert {"digits", "folder", "hdf5", "npz", "parquet"} <= set(SOURCES.names())
    with raises(ConfigError, r"data\.source: unknown data source 'imagenet'; allowed: digits, folder"):
        open_source(cfg("imagenet"))
    with raises(ConfigError, r"data\.channels = 2"):
        open_source(cfg("digits", channels=2))
    with raises(ConfigError, r"data\.resolution = 0"):
        open_source(cfg("digits", resolution=0))


def test_sources_and_the_door_share_one_image_shape_rule():
    """A source opened directly refuses what the sweep's door refuses, with the same line."""
    from mia_ray.sweep_config import check_data_config

    for bad in ({"resolution": 3}, {"resolution": True}, {"channels": 2}):
        with pytest.raises(ConfigError) as direct:
            open_source(cfg("digits", **bad))
        with pytest.raises(ConfigError) as door:
            check_data_config(cfg("digits", **bad))
        assert str(direct.value) == str(door.value)
    assert open_source(cfg("digits", resolution=4, channels=1)).load(np.array([0])).shape == (1, 1, 4, 4)


@pytest.mark.parametrize("source", ["folder", "hdf5", "npz", "parquet"])
def test_missing_path(tmp_path, source):
    with raises(DataError, rf"data\.path is required for source '{source}'.*set data\.path="):
        open_source(cfg(source))
    missing = tmp_path / "nope"
    with raises(DataError, rf"data\.path: {re.escape(str(missing))} does not exist"):
        open_source(cfg(source, missing))


def test_folder_empty_and_unreadable(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with raises(DataError, rf"folder {re.escape(str(tmp_path))} holds no \.png/\.jpg/\.jpeg files"):
        open_source(cfg("folder", tmp_path))
    Image.fromarray(IMGS[0]).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"not a png")
    src = open_source(cfg("folder", tmp_path))
    src.load([0])
    with raises(DataError, rf"cannot read image {re.escape(str(tmp_path / 'b.png'))}"):
        src.load([0, 1])
    with raises(DataError, "is not a folder"):
        open_source(cfg("folder", tmp_path / "a.png"))


def test_unknown_keys_list_available(tmp_path):
    h5 = tmp_path / "d.h5"
    with h5py.File(h5, "w") as f:
        f["pixels"] = IMGS
        f["labels"] = np.arange(5)
    with raises(
        DataError, rf"data\.key: no dataset 'images' in {re.escape(str(h5))}; available: labels, pixels"
    ):
        open_source(cfg("hdf5", h5))
    npz = tmp_path / "d.npz"
    np.savez(npz, images=IMGS)
    with raises(DataError, rf"data\.key: no array 'x' in {re.escape(str(npz))}; available: images"):
        open_source(cfg("npz", npz, key="x"))
    pqf = tmp_path / "d.parquet"
    pq.write_table(pa.table({"png": [png_bytes(IMGS[0])], "label": [0]}), pqf)
    with raises(DataError, rf"data\.key: no column 'image' in {re.escape(str(pqf))}; available: png, label"):
        open_source(cfg("parquet", pqf))


def test_npz_bad_values(tmp_path):
    nan = EXPECTED.copy()
    nan[2, 0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", images=nan)
    src = open_source(cfg("npz", tmp_path / "nan.npz"))
    src.load([0, 1])  # the bad image is not read
    with raises(DataError, r"nan\.npz array 'images' image 2: contains NaN or inf"):  # the bad image is named
        src.load([2])
    np.save(tmp_path / "big.npy", EXPECTED * 255)
    with raises(DataError, r"big\.npy image 0: float values span .*allowed: floats in \[-1, 1\] or uint8"):
        open_source(cfg("npz", tmp_path / "big.npy")).load([0])
    np.save(tmp_path / "int.npy", IMGS.astype(np.int64))
    with raises(DataError, r"int\.npy: dtype int64 is not supported; allowed: uint8"):
        open_source(cfg("npz", tmp_path / "int.npy"))
    np.save(tmp_path / "rgba.npy", np.zeros((2, 4, 5, 6), np.uint8))
    with raises(DataError, r"rgba\.npy: cannot read image array of shape \(2, 4, 5, 6\); allowed: NHW, NCHW"):
        open_source(cfg("npz", tmp_path / "rgba.npy"))
    np.save(tmp_path / "empty.npy", np.zeros((0, 6, 6), np.uint8))
    with raises(DataError, r"empty\.npy holds no images"):
        open_source(cfg("npz", tmp_path / "empty.npy"))
    with raises(DataError, r"data\.key = 'x' does not apply to .*int\.npy"):
        open_source(cfg("npz", tmp_path / "int.npy", key="x"))
    (tmp_path / "d.csv").write_text("1,2")
    with raises(DataError, r"d\.csv is not a \.npz or \.npy file"):
        open_source(cfg("npz", tmp_path / "d.csv"))


def test_hdf5_bad_file_and_inf(tmp_path):
    (tmp_path / "fake.h5").write_text("nope")
    with raises(DataError, r"cannot open .*fake\.h5 as HDF5"):
        open_source(cfg("hdf5", tmp_path / "fake.h5"))
    bad = EXPECTED.copy()
    bad[0, 0, 0, 0] = np.inf
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["images"] = bad
    with raises(DataError, r"d\.h5 dataset 'images' image 0: contains NaN or inf"):
        open_source(cfg("hdf5", tmp_path / "d.h5")).load([0])


def test_parquet_mixed_shapes_and_bad_cells(tmp_path):
    rows = [np.zeros((6, 6), np.uint8).tolist(), np.zeros((5, 5), np.uint8).tolist()]
    pq.write_table(
        pa.table({"image": pa.array(rows, type=pa.list_(pa.list_(pa.uint8())))}), tmp_path / "m.parquet"
    )
    src = open_source(cfg("parquet", tmp_path / "m.parquet", channels=1))
    with raises(DataError, r"m\.parquet column 'image': mixed image shapes"):
        src.load([0, 1])
    pq.write_table(pa.table({"image": [png_bytes(IMGS[0]), b"junk", None]}), tmp_path / "b.parquet")
    src = open_source(cfg("parquet", tmp_path / "b.parquet"))
    with raises(DataError, r"cannot read image .*b\.parquet column 'image' row 1"):
        src.load([1])
    with raises(DataError, r"b\.parquet column 'image' row 2: no image"):
        src.load([2])
    pq.write_table(pa.table({"image": ["a.png"]}), tmp_path / "s.parquet")
    with raises(
        DataError, r"s\.parquet column 'image': column type string is not supported; allowed: encoded"
    ):
        open_source(cfg("parquet", tmp_path / "s.parquet"))
    pq.write_table(pa.table({"image": pa.array([], pa.binary())}), tmp_path / "e.parquet")
    with raises(DataError, r"e\.parquet column 'image' holds no rows"):
        open_source(cfg("parquet", tmp_path / "e.parquet"))
