"""The door (issue 14): every bad data pool or checkpoint is refused through the CLI with exit 2, one line
on stderr and nothing written, before Ray starts; and the pieces behind it (pool scan and its cache,
checkpoint checks, given membership)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from PIL import Image

from mia_ray.config import DataConfig, ModelConfig
from mia_ray.data import open_source
from mia_ray.data import validate as pool_validate
from mia_ray.data.given import check_disjoint, given_split, open_given
from mia_ray.door import check_content, check_model
from mia_ray.errors import ConfigError, DataError
from mia_ray.models import WEIGHTS, build_unet

ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)
TINY_UNET = ModelConfig(block_out_channels=[8, 16], layers_per_block=1, norm_num_groups=8)


def pool(n=200, c=1, r=8) -> np.ndarray:
    return RNG.uniform(-1, 1, (n, c, r, r)).astype(np.float32)


def save_unet(path: Path, channels=1, size=8) -> Path:
    build_unet(TINY_UNET, size, channels).save_pretrained(path, safe_serialization=True)
    return path


def write_pngs(folder: Path, images: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    return folder


def sweep(tmp: Path, data: dict, **over) -> Path:
    cfg = {
        "name": "door",
        "families": ["ddpm"],
        "train_sizes": [64],
        "eval_size": 16,
        "data": {"resolution": 8, "channels": 1, **data},
        "model": {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 8},
        "train": {"steps": 5},
        "attacks": {"loss": {"steps": [0, 10]}},
        **over,
    }
    cfg["store"] = str(tmp / "out" / "store")  # under the output dir: must stay unwritten too
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# --- each bad input: (builder of the sweep file under tmp, what the one line must say) --------------------


def _npy_nan(tmp):
    a = pool()
    a[150, 0, 3, 3] = np.nan
    np.save(tmp / "pool.npy", a)
    return sweep(tmp, {"source": "npz", "path": str(tmp / "pool.npy")}), r"pool\.npy image 150: contains NaN"


def _npy_inf(tmp):
    a = pool()
    a[7, 0, 0, 0] = -np.inf
    np.save(tmp / "pool.npy", a)
    return sweep(tmp, {"source": "npz", "path": str(tmp / "pool.npy")}), r"pool\.npy image 7: contains NaN or inf"


def _npy_out_of_range(tmp):
    a = pool()
    a[199] *= 255
    np.save(tmp / "pool.npy", a)
    return sweep(tmp, {"source": "npz", "path": str(tmp / "pool.npy")}), r"image 199: float values span"


def _bad_pngs(tmp):
    folder = write_pngs(tmp / "imgs", RNG.integers(0, 256, (100, 8, 8), dtype=np.uint8))
    (folder / "050.png").write_bytes(b"not a png at all")
    (folder / "077.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return sweep(tmp, {"source": "folder", "path": str(folder)}), r"cannot read image \S*imgs/050\.png"


def _sixteen_bit_pngs(tmp):
    folder = write_pngs(tmp / "imgs", RNG.integers(0, 256, (100, 8, 8), dtype=np.uint8))
    Image.fromarray(RNG.integers(0, 65536, (8, 8), dtype=np.uint16)).save(folder / "060.png")  # mode I;16
    return sweep(tmp, {"source": "folder", "path": str(folder)}), r"image \S*imgs/060\.png: mode I;16 \(16-bit"


def _missing_pretrained(tmp):
    return sweep(tmp, {"source": "digits"}, model={"pretrained": str(tmp / "nope")}), r"model\.pretrained: \S*nope does"


def _garbage_weights(tmp):
    d = save_unet(tmp / "ckpt")
    (d / WEIGHTS).write_bytes(b"garbage" * 100)
    return sweep(tmp, {"source": "digits"}, model={"pretrained": str(d)}), r"not a complete safetensors file"


def _truncated_weights(tmp):
    d = save_unet(tmp / "ckpt")
    blob = (d / WEIGHTS).read_bytes()
    (d / WEIGHTS).write_bytes(blob[: len(blob) * 2 // 3])
    return sweep(tmp, {"source": "digits"}, model={"pretrained": str(d)}), r"not a complete safetensors file"


def _gray_ckpt_rgb_data(tmp):
    d = save_unet(tmp / "ckpt", channels=1)
    return (
        sweep(tmp, {"source": "digits", "channels": 3}, model={"pretrained": str(d)}),
        r"in_channels = 1 but data\.channels = 3",
    )


def _size_mismatch(tmp):
    d = save_unet(tmp / "ckpt", size=16)
    return sweep(tmp, {"source": "digits"}, model={"pretrained": str(d)}), r"sample_size 16 but data\.resolution = 8"


def _no_weights(tmp):
    d = save_unet(tmp / "ckpt")
    (d / WEIGHTS).unlink()
    return sweep(tmp, {"source": "digits"}, model={"pretrained": str(d)}), r"safetensors"


def _unknown_scheduler(tmp):
    from diffusers import DDPMPipeline, EulerDiscreteScheduler

    DDPMPipeline(unet=build_unet(TINY_UNET, 8, 1), scheduler=EulerDiscreteScheduler()).save_pretrained(tmp / "pipe")
    return (
        sweep(tmp, {"source": "digits"}, model={"pretrained": str(tmp / "pipe")}),
        r"scheduler 'EulerDiscreteScheduler' is not supported; allowed: DDIMScheduler, DDPMScheduler",
    )


def _empty_sweep(tmp):
    (tmp / "out").mkdir()
    (tmp / "sweep.yaml").write_text("# nothing yet\n")
    return tmp / "sweep.yaml", r"sweep\.yaml is empty; "


def _pretrained_yaml(tmp):
    return ROOT / "sweeps" / "pretrained.yaml", r"(data\.members|model\.pretrained)"


CASES = {
    "npy_nan": _npy_nan,
    "npy_inf": _npy_inf,
    "npy_out_of_range": _npy_out_of_range,
    "unreadable_pngs": _bad_pngs,
    "sixteen_bit_png": _sixteen_bit_pngs,  # PIL clipped its pixels to 0..255: a silently white image
    "missing_pretrained": _missing_pretrained,
    "garbage_weights": _garbage_weights,
    "truncated_safetensors": _truncated_weights,
    "gray_checkpoint_rgb_data": _gray_ckpt_rgb_data,
    "sample_size_mismatch": _size_mismatch,
    "no_safetensors": _no_weights,
    "unknown_scheduler": _unknown_scheduler,
    "empty_sweep": _empty_sweep,
    "pretrained_yaml_placeholders": _pretrained_yaml,
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, tmp_path, capfd, monkeypatch):
    """The CLI's ``main`` in this process (a subprocess per case cost 13 torch imports, ~60 s on 2 cores; the
    real process's exit status is checked by the overlapping-folders test below): return code 2, one line on
    the process's stderr (fd level: a logged warning would show), Ray never started, nothing written."""
    import re

    from mia_ray.sweep import main

    path, pattern = CASES[case](tmp_path)
    out = tmp_path / "out"
    monkeypatch.setenv("MIA_RAY_CACHE", str(out / "cache"))  # a scan record would show up
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.chdir(tmp_path)
    capfd.readouterr()
    rc = main([str(path), "--output", str(out)])
    err = capfd.readouterr().err
    lines = err.splitlines()
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and re.search(pattern, lines[0]), lines[0]
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
    written = [p for p in out.rglob("*")] if out.exists() else []
    assert written == [], written


def test_cli_refuses_a_members_folder_overlapping_the_nonmembers(tmp_path):
    imgs = RNG.integers(0, 256, (90, 8, 8), dtype=np.uint8)
    write_pngs(tmp_path / "train", imgs[:70])
    write_pngs(tmp_path / "test", imgs[70:])
    shutil.copy(tmp_path / "train" / "005.png", tmp_path / "test" / "zz_copy.png")
    path = sweep(tmp_path, {"source": "folder", "members": str(tmp_path / "train"),
                            "nonmembers": str(tmp_path / "test")}, model={"pretrained": str(save_unet(tmp_path / "u"))})
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "mia_ray.sweep", str(path), "--output", str(tmp_path / "out")],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1, p.stderr
    assert "zz_copy.png) is identical to member image 5" in p.stderr, p.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))


# --- the pool scan ----------------------------------------------------------------------------------------


def npz_source(path, channels=1, resolution=8):
    return open_source(DataConfig(source="npz", path=str(path), channels=channels, resolution=resolution))


@pytest.mark.parametrize("bad", [0, 255, 256, 257, 598])
def test_scan_names_the_first_bad_image_across_chunks(tmp_path, bad):
    a = pool(600)
    a[bad, 0, 1, 1] = np.nan
    a[599, 0, 0, 0] = np.inf  # a later bad image is not the one named
    np.save(tmp_path / "p.npy", a)
    with pytest.raises(DataError, match=rf"^data\.path: \S+p\.npy image {bad}: contains NaN or inf"):
        pool_validate.check_pool(npz_source(tmp_path / "p.npy"))


def test_scan_passes_a_clean_pool_and_uint8(tmp_path):
    np.save(tmp_path / "f.npy", pool(300))
    np.save(tmp_path / "u.npy", RNG.integers(0, 256, (300, 8, 8, 3), dtype=np.uint8))
    assert pool_validate.check_pool(npz_source(tmp_path / "f.npy")).n == 300
    assert pool_validate.check_pool(npz_source(tmp_path / "u.npy", channels=3)).n == 300


def test_scan_of_hdf5_and_parquet_names_the_row(tmp_path):
    import h5py
    import pyarrow as pa
    import pyarrow.parquet as pq

    a = pool(40)
    a[33, 0, 2, 2] = np.nan
    with h5py.File(tmp_path / "p.h5", "w") as f:
        f["images"] = a
    src = open_source(DataConfig(source="hdf5", path=str(tmp_path / "p.h5"), channels=1, resolution=8))
    with pytest.raises(DataError, match=r"dataset 'images' image 33: contains NaN"):
        pool_validate.check_pool(src)
    good = [Image.fromarray(RNG.integers(0, 256, (8, 8), dtype=np.uint8)) for _ in range(12)]
    blobs = []
    for img in good:
        buf = __import__("io").BytesIO()
        img.save(buf, format="PNG")
        blobs.append(buf.getvalue())
    blobs[9] = b"broken"
    pq.write_table(pa.table({"image": blobs}), tmp_path / "p.parquet", row_group_size=5)
    src = open_source(DataConfig(source="parquet", path=str(tmp_path / "p.parquet"), channels=1, resolution=8))
    with pytest.raises(DataError, match=r"column 'image' row 9"):
        pool_validate.check_pool(src)


def test_scan_cache_skips_an_unchanged_pool_and_rescans_a_changed_one(tmp_path, monkeypatch):
    path = tmp_path / "p.npy"
    np.save(path, pool(50))
    cache = str(tmp_path / "cache")
    assert pool_validate.cached_scan(npz_source(path), cache).n == 50
    assert len(list(Path(cache).glob("*.json"))) == 1
    calls = []
    real = pool_validate.scan
    monkeypatch.setattr(pool_validate, "scan", lambda *a, **k: calls.append(1) or real(*a, **k))
    pool_validate.cached_scan(npz_source(path), cache)
    assert calls == []  # unchanged: not read again
    a = pool(50)
    a[3, 0, 0, 0] = np.nan
    np.save(path, a)
    os.utime(path, ns=(1, 1))  # a rewrite within the mtime resolution still changes the recorded mtime
    with pytest.raises(DataError, match="image 3"):
        pool_validate.cached_scan(npz_source(path), cache)
    assert calls == [1]


def test_a_pool_of_floats_in_0_1_is_warned_about_once_scanned_and_when_cached(tmp_path, caplog):
    """Floats are read as [-1, 1] as they are: a pool with no pixel below 0 is most likely [0, 1] images that
    were never rescaled (trained on silently, half the range unused). A warning names the file, also on a
    cache hit; a [-1, 1] pool gets none."""
    unit = (pool(40) + 1) / 2
    np.save(tmp_path / "unit.npy", unit)
    np.save(tmp_path / "ok.npy", pool(40))
    cache = str(tmp_path / "cache")
    for _ in range(2):  # a scan, then the cache's record
        caplog.clear()
        with caplog.at_level("WARNING", logger="mia_ray"):
            assert pool_validate.check_pool(npz_source(tmp_path / "unit.npy"), cache).lo >= 0
        (msg,) = [r.getMessage() for r in caplog.records]
        assert "unit.npy" in msg and "[0, 1]" in msg and "\n" not in msg
    caplog.clear()
    with caplog.at_level("WARNING", logger="mia_ray"):
        assert pool_validate.check_pool(npz_source(tmp_path / "ok.npy"), cache).lo < 0
    assert not caplog.records


def test_a_scan_record_without_the_smallest_pixel_is_scanned_again_once(tmp_path, monkeypatch):
    """Records of the first format have no "lo": read as a miss (one new scan), so a [0, 1] pool scanned by an
    older mia_ray is still warned about."""
    import json

    np.save(tmp_path / "p.npy", (pool(20) + 1) / 2)
    cache = str(tmp_path / "cache")
    pool_validate.cached_scan(npz_source(tmp_path / "p.npy"), cache)
    (record,) = Path(cache).glob("*.json")
    old = json.loads(record.read_text())
    record.write_text(json.dumps({k: v for k, v in old.items() if k != "lo"} | {"format": "mia_ray.pool_scan/1"}))
    calls = []
    real = pool_validate.scan
    monkeypatch.setattr(pool_validate, "scan", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert pool_validate.cached_scan(npz_source(tmp_path / "p.npy"), cache).lo >= 0
    assert pool_validate.cached_scan(npz_source(tmp_path / "p.npy"), cache).lo >= 0
    assert calls == [1]


def test_failed_scan_writes_no_cache_record(tmp_path):
    a = pool(20)
    a[0, 0, 0, 0] = np.nan
    np.save(tmp_path / "p.npy", a)
    with pytest.raises(DataError):
        pool_validate.cached_scan(npz_source(tmp_path / "p.npy"), str(tmp_path / "cache"))
    assert not (tmp_path / "cache").exists()


# --- given membership -------------------------------------------------------------------------------------


def test_given_pool_records_membership_and_reads_both_sets(tmp_path):
    members, nonmembers = pool(30), pool(20)
    np.save(tmp_path / "m.npy", members)
    np.save(tmp_path / "n.npy", nonmembers)
    g = open_given(DataConfig(source="npz", resolution=8, channels=1), tmp_path / "m.npy", tmp_path / "n.npy")
    assert len(g) == 50 and g.is_member().sum() == 30
    split = given_split(g, eval_size=10, seed=3)
    assert split.members.tolist() == list(range(30)) and len(split.eval_members) == 10
    assert set(split.nonmembers.tolist()) <= set(range(30, 50)) and len(split.nonmembers) == 10
    ids, is_member = split.eval_ids()
    x = g.load(ids)
    np.testing.assert_allclose(x[is_member], members[ids[is_member]], atol=1e-6)
    np.testing.assert_allclose(x[~is_member], nonmembers[ids[~is_member] - 30], atol=1e-6)
    assert given_split(g, 10, 3) == split and given_split(g, 10, 4) != split
    with pytest.raises(ConfigError, match=r"eval_size = 21; allowed: 1\.\.20"):
        given_split(g, 21, 0)


def given_cfg(tmp_path, source, members, nonmembers):
    data = DataConfig(source=source, resolution=8, channels=1, members=str(members), nonmembers=str(nonmembers))
    return SimpleNamespace(data=data, store=str(tmp_path / "store"), output=str(tmp_path / "out"),
                           model=SimpleNamespace(pretrained=None))


def test_members_folder_overlapping_nonmembers_is_refused_by_content(tmp_path):
    imgs = RNG.integers(0, 256, (12, 8, 8), dtype=np.uint8)
    write_pngs(tmp_path / "train", imgs[:8])
    write_pngs(tmp_path / "test", imgs[8:])
    shutil.copy(tmp_path / "train" / "005.png", tmp_path / "test" / "zz_copy.png")  # same pixels, other name
    cfg = given_cfg(tmp_path, "folder", tmp_path / "train", tmp_path / "test")
    g = open_given(cfg.data, cfg.data.members, cfg.data.nonmembers)
    with pytest.raises(DataError, match=r"^data\.nonmembers: image 4 \(\S+test/zz_copy\.png\) is identical to member "
                                        r"image 5 \(\S+train/005\.png\); allowed: .*no image in common$"):
        check_content(cfg, g)
    (tmp_path / "test" / "zz_copy.png").unlink()
    check_content(cfg, open_given(cfg.data, cfg.data.members, cfg.data.nonmembers))  # disjoint: passes


def test_given_arrays_overlap_and_bad_nonmember_are_named(tmp_path):
    m, n = pool(10), pool(10)
    n[6] = m[2]
    np.save(tmp_path / "m.npy", m)
    np.save(tmp_path / "n.npy", n)
    cfg = given_cfg(tmp_path, "npz", tmp_path / "m.npy", tmp_path / "n.npy")
    g = open_given(cfg.data, cfg.data.members, cfg.data.nonmembers)
    with pytest.raises(DataError, match=r"image 6 \(\S+n\.npy image 6\) is identical to member image 2"):
        check_disjoint(g, pool_validate.scan(g, digests=True).digests)
    n[6, 0, 0, 0] = np.nan
    np.save(tmp_path / "n.npy", n)
    with pytest.raises(DataError, match=r"^data\.nonmembers: \S+n\.npy image 6: contains NaN"):
        check_content(cfg, open_given(cfg.data, cfg.data.members, cfg.data.nonmembers))


def test_given_membership_refuses_data_path_and_missing_sets(tmp_path):
    np.save(tmp_path / "m.npy", pool(5))
    with pytest.raises(ConfigError, match=r"^data\.path = .* cannot be combined with data\.members"):
        open_given(DataConfig(source="npz", path=str(tmp_path / "m.npy")), tmp_path / "m.npy", tmp_path / "m.npy")
    with pytest.raises(ConfigError, match=r"^data\.nonmembers is required"):
        open_given(DataConfig(source="npz"), tmp_path / "m.npy", None)
    with pytest.raises(DataError, match=r"^data\.nonmembers: \S+nope\.npy does not exist"):
        open_given(DataConfig(source="npz"), tmp_path / "m.npy", tmp_path / "nope.npy")


# --- the checkpoint at the door, in process -----------------------------------------------------------------


def model_cfg(path, channels=1, resolution=8, families=("ddpm",)):
    return SimpleNamespace(model=SimpleNamespace(pretrained=str(path)), families=list(families),
                           data=SimpleNamespace(channels=channels, resolution=resolution))


def test_a_good_checkpoint_passes_and_a_pipeline_gives_its_family(tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler

    assert check_model(model_cfg(save_unet(tmp_path / "u"))) is None
    sched = DDPMScheduler(num_train_timesteps=500, beta_start=2e-4, beta_end=0.03, beta_schedule="linear")
    DDPMPipeline(unet=build_unet(TINY_UNET, 8, 1), scheduler=sched).save_pretrained(tmp_path / "pipe")
    fam = check_model(model_cfg(tmp_path / "pipe"))
    assert (fam.name, fam.num_steps) == ("ddpm", 500)
    assert fam.beta_min == pytest.approx(0.1) and fam.beta_max == pytest.approx(15.0)


def test_weights_of_another_config_are_refused_not_left_random(tmp_path):
    a = save_unet(tmp_path / "a")
    build_unet(ModelConfig(block_out_channels=[8, 24], norm_num_groups=8), 8, 1).save_pretrained(tmp_path / "b")
    shutil.copy(tmp_path / "b" / WEIGHTS, a / WEIGHTS)
    with pytest.raises(ConfigError, match=r"^model\.pretrained: .*(does not fit its config\.json|cannot load)"):
        check_model(model_cfg(a))


def test_good_inputs_pass_preflight_and_the_scan_is_recorded_in_the_user_cache(tmp_path, monkeypatch, caplog):
    from mia_ray import sweep_config
    from mia_ray.preflight import check_data

    np.save(tmp_path / "pool.npy", pool())
    path = sweep(tmp_path, {"source": "npz", "path": str(tmp_path / "pool.npy")},
                 model={"pretrained": str(save_unet(tmp_path / "ckpt"))})
    cfg, _ = sweep_config.load(str(path))
    monkeypatch.setenv("MIA_RAY_CACHE", str(tmp_path / "cache"))
    with caplog.at_level("WARNING", logger="mia_ray"):
        check_data(cfg)
    # a given model attacked on a drawn split passes, with a warning that its 'members' are only the seed's draw
    assert "model.pretrained with a split drawn from" in caplog.text and "give data.members" in caplog.text
    records = list((tmp_path / "cache" / "pool_scans").glob("*.json"))
    assert len(records) == 1 and '"n": 200' in records[0].read_text()
    assert not (tmp_path / "out").exists()  # the output and the store stay untouched until Ray's checks pass


@pytest.mark.parametrize("key", ["output", "store"])
def test_an_output_or_store_path_through_a_file_is_refused_before_ray(key, tmp_path, capfd, monkeypatch):
    """A results root or store that cannot be a folder (a file on its path) used to fail after Ray started,
    writing the sweep record; now one line at the door, also under --dry-run, and the file is untouched."""
    from mia_ray.sweep import main

    blocker = tmp_path / "results.txt"
    blocker.write_text("mine")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    quick = str(ROOT / "sweeps" / "quickstart.yaml")
    path = str(blocker / "sub") if key == "output" else str(blocker)
    for extra in ([], ["--dry-run"]):
        capfd.readouterr()
        rc = main([quick, f"{key}={path}", f"output={tmp_path / 'out'}" if key == "store" else "seeds=[0]", *extra])
        lines = capfd.readouterr().err.splitlines()
        assert rc == 2 and len(lines) == 1, lines
        allowed = "allowed: a folder path (created if missing)"
        assert lines[0] == f"error: {key}: {blocker} is a file, not a folder; {allowed}"
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
    assert blocker.read_text() == "mine" and not (tmp_path / "out").exists()


@pytest.mark.parametrize("key", ["output", "store"])
def test_an_output_or_store_uri_that_does_not_open_is_refused_before_ray(key, tmp_path, capfd, monkeypatch):
    """A URI of a scheme pyarrow does not know was an ArrowInvalid traceback when the sweep record was written,
    after Ray had started; now one line before the data is read (and never contacted at --dry-run)."""
    from mia_ray.sweep import main

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    quick = str(ROOT / "sweeps" / "quickstart.yaml")
    other = f"output={tmp_path / 'out'}" if key == "store" else f"store={tmp_path / 'store'}"
    capfd.readouterr()
    rc = main([quick, f"{key}=nosuchscheme://bucket/x", other])
    lines = capfd.readouterr().err.splitlines()
    assert rc == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: {key}: cannot open nosuchscheme://bucket/x") and "allowed: " in lines[0]
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
    assert not (tmp_path / "out").exists() and not (tmp_path / "store").exists()
    assert main([quick, f"{key}=nosuchscheme://bucket/x", other, "--dry-run"]) == 0


@pytest.mark.parametrize("key", ["output", "store"])
def test_an_output_where_no_folder_can_be_made_is_refused_at_the_door(key, tmp_path, capfd, monkeypatch):
    """/proc passes access(2) for root, yet no folder can be made there: the sweep failed with a traceback when it
    wrote its record, after Ray had started. Another user is refused by the access check, in one line too."""
    from mia_ray.sweep import main

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    quick = str(ROOT / "sweeps" / "quickstart.yaml")
    other = f"output={tmp_path / 'out'}" if key == "store" else f"store={tmp_path / 'store'}"
    for extra in ([], ["--dry-run"]):
        capfd.readouterr()
        rc = main([quick, f"{key}=/proc/mia_ray_results", other, *extra])
        lines = capfd.readouterr().err.splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith(f"error: {key}: "), lines
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
    assert not os.path.exists("/proc/mia_ray_results") and not (tmp_path / "out").exists()


@pytest.mark.parametrize("size, shown", [([8, 16], r"\[8, 16\]"), ("8", "'8'"), (0, "0"), (-8, "-8"), (True, "True")])
def test_a_checkpoint_sample_size_that_is_no_square_size_is_named_not_contradicted(tmp_path, size, shown):
    """sample_size [8, 16] or "8" at data.resolution = 8 said "allowed: data.resolution = 8"; 0 advised
    data.resolution = 0, which the door refuses."""
    import json

    d = save_unet(tmp_path / "ckpt")
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, "sample_size": size}))
    with pytest.raises(ConfigError, match=rf"^model\.pretrained: {tmp_path / 'ckpt'} has sample_size {shown}; allowed: "
                                          r"a positive integer \(or a square \[n, n\]\) in its config\.json$"):
        check_model(SimpleNamespace(model=ModelConfig(pretrained=str(d)), data=DataConfig(), families=["ddpm"]))
    (d / "config.json").write_text(json.dumps({**config, "sample_size": [8, 8]}))  # a square pair fits
    check_model(SimpleNamespace(model=ModelConfig(pretrained=str(d)), data=DataConfig(), families=["ddpm"]))


@pytest.mark.parametrize("channels, said", [
    ([65536, 65536], r"describes a UNet2DModel of 1\.11e\+12 parameters; allowed: at most 2e\+09"),
    ([16, 32], r"describes a UNet2DModel of [\d.e+]+ parameters but the weights hold [\d.e+]+; allowed: weights saved "
               r"with the same UNet2DModel config"),
])
def test_a_checkpoint_config_larger_than_its_weights_is_refused_before_it_is_built(tmp_path, channels, said):
    """A config.json of [65536, 65536] channels beside small weights made the door build the UNet (68 GB
    asked of the allocator) before the strict load could refuse it: counted on the meta device now."""
    import json

    d = save_unet(tmp_path / "ckpt")
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, "block_out_channels": channels}))
    with pytest.raises(ConfigError, match=rf"^model\.pretrained: {tmp_path / 'ckpt'}/config\.json {said}"):
        check_model(SimpleNamespace(model=ModelConfig(pretrained=str(d)), data=DataConfig(), families=["ddpm"]))
