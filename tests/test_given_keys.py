"""Given members and non-members from ONE HDF5 / .npz file under two keys (``data.members_key`` /
``data.nonmembers_key``): a common layout (``train`` and ``test`` datasets in one file) that ``data.key``, shared
by both sets, could not read."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from mia_ray.config import DataConfig, TargetSpec
from mia_ray.data.given import open_given
from mia_ray.errors import ConfigError, DataError

RNG = np.random.default_rng(0)
TRAIN = RNG.uniform(-1, 1, (12, 1, 8, 8)).astype(np.float32)
TEST = RNG.uniform(-1, 1, (9, 1, 8, 8)).astype(np.float32)


def keyed(source: str, **keys) -> DataConfig:
    data = DataConfig(source=source, resolution=8, channels=1)
    for k, v in keys.items():
        setattr(data, k, v)
    return data


@pytest.fixture
def h5(tmp_path):
    path = tmp_path / "both.h5"
    with h5py.File(path, "w") as f:
        f["train"], f["test"] = TRAIN, TEST
    return str(path)


@pytest.fixture
def npz(tmp_path):
    path = tmp_path / "both.npz"
    np.savez(path, train=TRAIN, test=TEST)
    return str(path)


@pytest.mark.parametrize("source", ["hdf5", "npz"])
def test_each_set_is_read_from_its_own_key(source, h5, npz):
    path = h5 if source == "hdf5" else npz
    pool = open_given(keyed(source, members_key="train", nonmembers_key="test"), path, path)
    assert (pool.n_members, len(pool)) == (12, 21)
    np.testing.assert_array_equal(pool.load(np.arange(12)), TRAIN)
    np.testing.assert_array_equal(pool.load(np.arange(12, 21)), TEST)
    # one own key, the other set falls back to data.key
    pool = open_given(keyed(source, key="train", nonmembers_key="test"), path, path)
    np.testing.assert_array_equal(pool.load(np.array([0, 12])), np.stack([TRAIN[0], TEST[0]]))


def test_a_missing_key_names_the_sets_own_key(h5):
    with pytest.raises(DataError, match=r"^data\.nonmembers_key: no dataset 'val' in \S+both\.h5") as e:
        open_given(keyed("hdf5", members_key="train", nonmembers_key="val"), h5, h5)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match=r"^data\.key: no dataset 'images'"):  # the shared key, named as such
        open_given(keyed("hdf5", members_key="train"), h5, h5)


def test_the_door_scans_both_keys_and_refuses_an_image_in_both(tmp_path, monkeypatch, h5):
    """The scan record of one key must not stand for the other (the fingerprint holds the key); a copy of a member
    among the non-members is refused as for two files."""
    from types import SimpleNamespace

    from mia_ray.door import check_content, open_pool

    monkeypatch.setenv("MIA_RAY_CACHE", str(tmp_path / "cache"))
    cfg = SimpleNamespace(data=keyed("hdf5", members=h5, nonmembers=h5, members_key="train", nonmembers_key="test"))
    check_content(cfg, open_pool(cfg))
    path = tmp_path / "leak.h5"
    with h5py.File(path, "w") as f:
        f["train"], f["test"] = TRAIN, np.concatenate([TEST, TRAIN[3:4]])
    cfg = SimpleNamespace(data=keyed("hdf5", members=str(path), nonmembers=str(path), members_key="train",
                                     nonmembers_key="test"))
    with pytest.raises(DataError, match="member") as e:
        check_content(cfg, open_pool(cfg))
    assert "\n" not in str(e.value)


def test_a_sets_key_without_given_membership_or_on_a_keyless_source_is_refused():
    from mia_ray.sweep_config import check_data_config

    with pytest.raises(ConfigError, match=r"^data\.members_key = 'train' needs data\.members; allowed: null"):
        check_data_config(keyed("hdf5", path="/d.h5", members_key="train"))
    with pytest.raises(ConfigError, match=r"^data\.nonmembers_key = 'x' is not read by data\.source = 'folder'"):
        check_data_config(keyed("folder", members="/a", nonmembers="/b", nonmembers_key="x"), given=True)


def test_target_ids_without_the_keys_are_unchanged_and_the_keys_are_hashed_and_labelled(h5):
    from mia_ray.results import dataset_label

    plain = TargetSpec(data=keyed("hdf5", members=h5, nonmembers=h5, key="train"))
    assert "members_key" not in plain.to_dict()["data"]  # ids pinned before the keys existed stay
    a = TargetSpec(data=keyed("hdf5", members=h5, nonmembers=h5, members_key="train", nonmembers_key="test"))
    b = TargetSpec(data=keyed("hdf5", members=h5, nonmembers=h5, members_key="train", nonmembers_key="val"))
    assert len({plain.target_id, a.target_id, b.target_id}) == 3
    assert dataset_label(a.data) == f"hdf5:members={h5},nonmembers={h5},members_key=train,nonmembers_key=test"
