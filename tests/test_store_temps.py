"""Temporaries that a writer killed before its rename leaves in the shared target store (targets, feature nets):
removed at once when their writer's process is gone from this host, else once stale; a live writer's kept."""

import os
import subprocess
import sys

import pytest
from conftest import tiny_spec

from mia_ray import store_temps
from mia_ray.config import DataConfig
from mia_ray.training import TargetStore, get_or_train
from mia_ray.training import store as store_mod
from mia_ray.utility import features as features_mod
from mia_ray.utility.features import FeatureConfig, feature_key, get_or_train_features

pytestmark = pytest.mark.usefixtures("one_thread")
DIGITS = DataConfig(source="digits", resolution=8, channels=1)


@pytest.fixture(scope="module")
def dead_pid():
    """The pid of a process that has exited (a writer killed with the sweep)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _make(path, folder=True):
    if folder:
        os.makedirs(os.path.join(path, "model"))
    else:
        with open(path, "wb") as f:
            f.write(b"half")
    return path


def test_a_temporary_is_abandoned_when_its_writer_is_gone_or_it_is_stale(tmp_path, dead_pid):
    host = store_temps.HOST
    dead = _make(str(tmp_path / f".tmp-abc-{'0' * 32}-p{dead_pid}@{host}"))
    live = _make(str(tmp_path / f".tmp-abc-{'1' * 32}-{store_temps.owner_tag()}"))
    elsewhere = _make(str(tmp_path / f".tmp-abc-{'2' * 32}-p{dead_pid}@another.node"))
    untagged = _make(str(tmp_path / f".x.png.{'3' * 32}.tmp"), folder=False)
    file_dead = _make(str(tmp_path / f".x.png.{'4' * 32}-p{dead_pid}@{host}.tmp"), folder=False)
    assert store_temps.abandoned(dead) and store_temps.abandoned(file_dead)
    assert not any(store_temps.abandoned(p) for p in (live, elsewhere, untagged))  # fresh: maybe a live writer
    later = os.path.getmtime(live) + store_temps.STALE_SECONDS + 1
    assert all(store_temps.abandoned(p, now=later) for p in (live, elsewhere, untagged))
    assert store_temps.owner_tag() == f"p{os.getpid()}@{host}" and "-" not in host


def test_a_dead_writers_target_temporary_is_removed_by_the_rerun(tmp_path, digits64, dead_pid, monkeypatch):
    """kill -9 of a sweep mid-save (simulated: the rename never happens) leaves ``.tmp-<tid>-<hex>-<writer>``; the
    rerun's store of that target removes it at once (its writer is gone), keeps a live writer's, and a rerun that
    finds the target stored (a reference another trial stored first) removes it too."""
    store = TargetStore(str(tmp_path / "store"))
    spec = tiny_spec(steps=2)
    tid = spec.target_id

    def killed(*a, **k):
        raise KeyboardInterrupt("kill -9 before the rename")

    monkeypatch.setattr(store_mod.os, "rename", killed)
    with pytest.raises(KeyboardInterrupt):
        get_or_train(store, spec, images_fn=lambda: digits64, progress=False)
    monkeypatch.undo()
    (left,) = [e for e in os.listdir(store.base) if e.startswith(f".tmp-{tid}-")]
    assert left.endswith(f"-{store_temps.owner_tag()}")  # the writer is named in the temporary
    os.rename(os.path.join(store.base, left), os.path.join(store.base, left.replace(f"p{os.getpid()}@",
                                                                                      f"p{dead_pid}@")))
    live = _make(os.path.join(store.base, f".tmp-{tid}-{'1' * 32}-{store_temps.owner_tag()}"))
    get_or_train(store, spec, images_fn=lambda: digits64, progress=False)
    assert sorted(os.listdir(store.base)) == sorted([tid, os.path.basename(live)])
    _make(os.path.join(store.base, f".tmp-{tid}-{'2' * 32}-p{dead_pid}@{store_temps.HOST}"))
    assert not get_or_train(store, spec, images_fn=lambda: digits64, progress=False).trained_now
    assert sorted(os.listdir(store.base)) == sorted([tid, os.path.basename(live)])


def test_a_dead_writers_feature_net_temporary_is_removed_by_the_rerun(tmp_path, dead_pid, monkeypatch):
    """The same for a feature net (``features/.tmp-<key>-<hex>-<writer>``), whether the rerun trains the net or
    finds it stored (two training tasks had trained it at once and the killed one lost)."""
    store = str(tmp_path / "store")
    cfg = FeatureConfig(steps=5)
    key = feature_key(DIGITS, 1797, cfg)
    where = os.path.join(store, "features")

    def killed(*a, **k):
        raise KeyboardInterrupt("kill -9 before the rename")

    monkeypatch.setattr(features_mod.os, "rename", killed)
    with pytest.raises(KeyboardInterrupt):
        get_or_train_features(store, DIGITS, cfg)
    monkeypatch.undo()
    (left,) = os.listdir(where)
    assert left.startswith(f".tmp-{key}-") and left.endswith(f"-{store_temps.owner_tag()}")
    os.rename(os.path.join(where, left), os.path.join(where, left.replace(f"p{os.getpid()}@", f"p{dead_pid}@")))
    live = f".tmp-{key}-{'1' * 32}-{store_temps.owner_tag()}"
    _make(os.path.join(where, live))
    get_or_train_features(store, DIGITS, cfg)
    assert sorted(os.listdir(where)) == sorted([key, live])
    _make(os.path.join(where, f".tmp-{key}-{'2' * 32}-p{dead_pid}@{store_temps.HOST}"))
    other = f".tmp-0123456789abcdef-{'3' * 32}-p{dead_pid}@{store_temps.HOST}"  # another net's: its own rerun's
    _make(os.path.join(where, other))
    monkeypatch.setattr(features_mod, "train_features", lambda *a, **k: pytest.fail("retrained"))
    get_or_train_features(store, DIGITS, cfg)
    assert sorted(os.listdir(where)) == sorted([key, live, other])


def test_the_writer_tag_names_its_pid_namespace(tmp_path, dead_pid):
    """Two containers on one machine may share a hostname (``--network host``) but not a pid table: a writer alive in
    the other container read as gone here, and its temporary was removed mid-save (its rename then failed). The tag
    names the pid namespace, so only a writer of this pid table is judged by it."""
    ns = os.readlink("/proc/self/ns/pid").split("[")[1].rstrip("]")
    assert store_temps.HOST.endswith(f".ns{ns}")
    other = store_temps.HOST[: -len(ns)] + "1"  # the same hostname, another pid namespace
    assert not store_temps.abandoned(_make(str(tmp_path / f".tmp-abc-{'0' * 32}-p{dead_pid}@{other}")))
