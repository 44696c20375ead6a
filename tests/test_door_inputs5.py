"""The door against inputs a real user brings (door5): damaged or degenerate data files, checkpoints that load but
cannot be scored, CLI flags and overrides, results folders. Each is refused with one line naming the key or file,
before any compute, or was read with the wrong science before."""

from __future__ import annotations

import re
import sys

import pytest
import sweep_files


@pytest.mark.parametrize("blank", ["", " "])
def test_a_blank_estimate_from_is_refused_not_a_real_sweep(tmp_path, capsys, monkeypatch, blank):
    """'' was falsy: neither an estimate nor a refusal, the whole sweep was trained."""
    from mia_ray import sweep

    monkeypatch.setattr(sweep, "_run", lambda args: pytest.fail("the sweep ran"))
    path = sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"))
    assert sweep.main([path, "--estimate-from", blank]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --estimate-from {blank!r}; allowed: the path of a timings JSON file (benchmarks/" \
                  "gpu_check.py writes one), or --estimate to time this machine\n"
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


# --- data files ----------------------------------------------------------------------------------------------


def data_cfg(source: str, path, **kw):
    from mia_ray.config import DataConfig

    return DataConfig(source=source, path=str(path), resolution=8, channels=1, **kw)


def check_pool(source: str, path, **kw):
    """The door's pool check of one source (scan, no cache): what ``check_data`` runs before Ray starts."""
    from mia_ray.data import open_source
    from mia_ray.data.validate import check_pool as check

    return check(open_source(data_cfg(source, path, **kw)))


def test_images_of_zero_rows_or_columns_are_refused_not_read_as_blank(tmp_path):
    """(400, 0, 8) uint8 was accepted: every image resized from nothing, all members equal to all non-members."""
    import h5py
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mia_ray.errors import DataError

    np.save(tmp_path / "h0.npy", np.zeros((40, 0, 8), np.uint8))
    np.save(tmp_path / "w0.npy", np.zeros((40, 3, 8, 0), np.uint8))
    with h5py.File(tmp_path / "w0.h5", "w") as f:
        f.create_dataset("images", shape=(40, 8, 0), dtype="u1")
    lists = pa.table({"image": [[[]]] * 40}, schema=pa.schema([("image", pa.list_(pa.list_(pa.float32())))]))
    pq.write_table(lists, tmp_path / "w0.parquet")
    for source, file, shape in [("npz", "h0.npy", r"\(40, 0, 8\) \(NHW\) holds images of 0x8"),
                                ("npz", "w0.npy", r"\(40, 3, 8, 0\) \(NCHW\) holds images of 8x0"),
                                ("hdf5", "w0.h5", r"\(40, 8, 0\) \(NHW\) holds images of 8x0"),
                                ("parquet", "w0.parquet", r"\(1, 1, 0\) \(NHW\) holds images of 1x0")]:
        with pytest.raises(DataError, match=rf"{file}.*: image array of shape {shape} pixels; allowed: images of "
                                            r"at least 1x1 pixels, NHW, NCHW or NHWC with 1 or 3 channels$") as e:
            check_pool(source, tmp_path / file)
        assert "\n" not in str(e.value)
    np.save(tmp_path / "ok.npy", np.zeros((40, 1, 1), np.uint8) + np.arange(40, dtype=np.uint8)[:, None, None])
    assert check_pool("npz", tmp_path / "ok.npy").n == 40  # 1x1 images are images: upsampled like any other


def _flip(path, lo: float, hi: float) -> None:
    """XOR the bytes between fractions ``lo`` and ``hi`` of the file (a damaged disk or transfer)."""
    b = bytearray(path.read_bytes())
    for k in range(int(len(b) * lo), int(len(b) * hi)):
        b[k] ^= 0x77
    path.write_bytes(bytes(b))


def test_damaged_array_files_are_one_line_not_tracebacks(tmp_path):
    """Headers intact, data damaged: a corrupt deflate stream in an .npz (zlib.error), an .npz member shorter than
    its header says (numpy's EOF ValueError), a gzip chunk of an HDF5 dataset (OSError), a zstd page of a Parquet
    file (OSError) were tracebacks of the door's scan (or of a trial, once Ray had started)."""
    import io
    import zipfile

    import h5py
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mia_ray.errors import DataError

    u8 = np.random.default_rng(0).integers(0, 256, (300, 8, 8), dtype=np.uint8)
    np.savez_compressed(tmp_path / "z.npz", images=u8)
    _flip(tmp_path / "z.npz", 0.3, 0.6)
    raw = io.BytesIO()
    np.save(raw, u8)
    with zipfile.ZipFile(tmp_path / "short.npz", "w") as z:
        z.writestr("images.npy", raw.getvalue()[:-500])
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f.create_dataset("images", data=u8, chunks=(1, 8, 8), compression="gzip")
    b = bytearray((tmp_path / "c.h5").read_bytes())
    b[-300:-200] = b"\xff" * 100  # the last chunks
    (tmp_path / "c.h5").write_bytes(bytes(b))
    lists = pa.table({"image": [x.tolist() for x in u8]}, schema=pa.schema([("image", pa.list_(pa.list_(pa.uint8())))]))
    pq.write_table(lists, tmp_path / "c.parquet", compression="zstd")
    _flip(tmp_path / "c.parquet", 0.25, 0.5)
    for source, file, line in [
        ("npz", "z.npz", r"z\.npz array 'images': cannot read (it|its header) \(.*\); allowed: a complete \.npz as "
                         r"numpy\.savez / numpy\.savez_compressed write it$"),
        ("npz", "short.npz", r"short\.npz array 'images': cannot read it \(EOF: reading array data, expected 19200 "
                             r"bytes got 18700\); allowed: a complete \.npz"),
        ("hdf5", "c.h5", r"c\.h5 dataset 'images' rows 256\.\.299: cannot read them \(.*filter returned failure"
                         r".*\); allowed: an HDF5 file whose image dataset reads whole"),
        ("parquet", "c.parquet", r"c\.parquet column 'image' row group 0: cannot read it \(.*\); allowed: a Parquet "
                                 r"file whose image column reads whole \(write it again\)$"),
    ]:
        with pytest.raises(DataError, match=rf"^data\.path: \S+{line}") as e:
            check_pool(source, tmp_path / file)
        assert "\n" not in str(e.value)


def test_a_parquet_folder_mixing_column_kinds_is_refused_naming_both_files(tmp_path):
    """PNG bytes in a.parquet, nested lists in b.parquet: the last file's kind decoded every row, and a.parquet's PNG
    bytes were refused as 'ragged nested lists' (the wrong reason); a float tensor beside uint8 lists read both."""
    import io

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from mia_ray.errors import DataError

    u8 = np.random.default_rng(0).integers(0, 256, (40, 8, 8), dtype=np.uint8)

    def png(x):
        b = io.BytesIO()
        Image.fromarray(x).save(b, "PNG")
        return b.getvalue()

    lists = pa.schema([("image", pa.list_(pa.list_(pa.uint8())))])
    (tmp_path / "mixed").mkdir()
    pq.write_table(pa.table({"image": [png(x) for x in u8[:20]]}), tmp_path / "mixed" / "a.parquet")
    pq.write_table(pa.table({"image": [x.tolist() for x in u8[20:]]}, schema=lists), tmp_path / "mixed" / "b.parquet")
    with pytest.raises(DataError, match=r"^data\.path: column 'image' is binary in \S+a\.parquet but list<element: "
                                        r"list<element: uint8>> in \S+b\.parquet; allowed: one kind of image "
                                        r"column \(encoded bytes, nested lists of one dtype, one tensor shape\) in "
                                        r"every file$"):
        check_pool("parquet", tmp_path / "mixed")
    (tmp_path / "same").mkdir()  # one kind in every file: read as before
    pq.write_table(pa.table({"image": [x.tolist() for x in u8[:20]]}, schema=lists), tmp_path / "same" / "a.parquet")
    pq.write_table(pa.table({"image": [x.tolist() for x in u8[20:]]}, schema=lists), tmp_path / "same" / "b.parquet")
    assert check_pool("parquet", tmp_path / "same").n == 40


# --- model.pretrained ----------------------------------------------------------------------------------------


def _unet(**config):
    from diffusers import UNet2DModel

    base = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                norm_num_groups=8)
    return UNet2DModel(**{**base, **config})


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_checkpoint_with_nan_or_inf_weights_is_refused(tmp_path, value):
    """It loaded strictly and passed: every attack's score was NaN, ranked silently by the metrics."""
    import torch

    from mia_ray.checkpoint import check_checkpoint
    from mia_ray.errors import ConfigError

    unet = _unet()
    with torch.no_grad():
        unet.conv_out.bias[0] = value
    unet.save_pretrained(tmp_path / "u", safe_serialization=True)
    with pytest.raises(ConfigError, match=r"^model\.pretrained: \S+/u/diffusion_pytorch_model\.safetensors holds NaN "
                                          r"or inf in 'conv_out\.bias'; allowed: finite weights \(a checkpoint saved "
                                          r"before training diverged\)$"):
        check_checkpoint(str(tmp_path / "u"), 1, 8)
    _unet().save_pretrained(tmp_path / "ok", safe_serialization=True)
    assert check_checkpoint(str(tmp_path / "ok"), 1, 8) is None


def test_a_class_conditional_unet_is_refused_at_the_door(tmp_path):
    """num_class_embeds passed the door; each attack's first call raised diffusers' 'class_labels should be provided
    when doing class conditioning' in a trial, after Ray had started."""
    from mia_ray.checkpoint import check_checkpoint
    from mia_ray.errors import ConfigError

    _unet(num_class_embeds=10).save_pretrained(tmp_path / "u", safe_serialization=True)
    with pytest.raises(ConfigError, match=r"^model\.pretrained: \S+/u has num_class_embeds = 10 \(a class-conditional "
                                          r"UNet\); allowed: num_class_embeds null \(an unconditional UNet2DModel: "
                                          r"the attacks give it no class labels\)$"):
        check_checkpoint(str(tmp_path / "u"), 1, 8)


def test_channels_that_are_not_integers_are_named_not_contradicted(tmp_path):
    """in_channels "1" said 'has in_channels = 1 but data.channels = 1; allowed: data.channels = 1'."""
    import json

    from mia_ray.checkpoint import check_checkpoint
    from mia_ray.errors import ConfigError

    _unet().save_pretrained(tmp_path / "u", safe_serialization=True)
    config = json.loads((tmp_path / "u" / "config.json").read_text())
    (tmp_path / "u" / "config.json").write_text(json.dumps({**config, "in_channels": "1"}))
    with pytest.raises(ConfigError, match=r"^model\.pretrained: \S+/u has in_channels = '1'; allowed: a positive "
                                          r"integer in its config\.json$"):
        check_checkpoint(str(tmp_path / "u"), 1, 8)


def given_cfg(source: str, members, nonmembers, monkeypatch, cache):
    """A config with given membership at 1 x 8 x 8 (what the door's content check reads); the scan cache in
    ``cache``, not the user's."""
    from types import SimpleNamespace

    from mia_ray.config import DataConfig

    monkeypatch.setenv("MIA_RAY_CACHE", str(cache))
    data = DataConfig(source=source, resolution=8, channels=1)
    data.members, data.nonmembers = str(members), str(nonmembers)
    return SimpleNamespace(data=data)


# --- duplicates ----------------------------------------------------------------------------------------------


def test_a_pool_holding_one_image_twice_is_refused_naming_both_copies(tmp_path):
    """A drawn split keeps sample ids apart, not contents: the two copies of an image could be drawn as a member and
    as a non-member, and a 'non-member' was then trained on. Both copies are named, by file where images are files;
    the refusal also comes from the scan record of the pool, and a record written before the check scans again."""
    import json
    import shutil
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from mia_ray.data import open_source
    from mia_ray.data import validate as pool_validate
    from mia_ray.errors import DataError

    u8 = np.random.default_rng(0).integers(0, 256, (60, 8, 8), dtype=np.uint8)
    u8[41] = u8[7]
    np.save(tmp_path / "p.npy", u8)
    line = (r"^data\.path: image 41 \(\S+p\.npy image 41\) is identical to image 7 \(\S+p\.npy image 7\); allowed: "
            r"distinct images \(a drawn split can make one copy a member and another a non-member: delete the "
            r"copies\)$")
    cache = str(tmp_path / "cache")
    for _ in range(2):  # a scan, then the record of that scan
        with pytest.raises(DataError, match=line):
            pool_validate.check_pool(open_source(data_cfg("npz", tmp_path / "p.npy")), cache)
    (record,) = Path(cache).glob("*.json")
    old = json.loads(record.read_text())
    assert old["duplicate"] == [7, 41]
    record.write_text(json.dumps({k: v for k, v in old.items() if k not in ("duplicate", "shapes")}
                                 | {"format": "mia_ray.pool_scan/2"}))  # passed before duplicates were checked
    with pytest.raises(DataError, match=line):
        pool_validate.check_pool(open_source(data_cfg("npz", tmp_path / "p.npy")), cache)

    (tmp_path / "f").mkdir()
    for i, x in enumerate(u8[:40]):
        Image.fromarray(x).save(tmp_path / "f" / f"{i:02d}.png")
    shutil.copy(tmp_path / "f" / "05.png", tmp_path / "f" / "05 copy.png")
    with pytest.raises(DataError, match=r"^data\.path: image 6 \(\S+/f/05\.png\) is identical to image 5 "
                                        r"\(\S+/f/05 copy\.png\); allowed: distinct images"):  # ' ' sorts before '.'
        check_pool("folder", tmp_path / "f")
    (tmp_path / "f" / "05 copy.png").unlink()
    assert check_pool("folder", tmp_path / "f").n == 40


def test_an_image_twice_within_a_given_set_is_a_warning_naming_both(tmp_path, monkeypatch, caplog):
    """Within one given set both copies are in the same class (members of a real training set such as CIFAR-10's
    may repeat exactly): a warning naming the copies and how many, not a refusal; across the sets it is refused."""

    import numpy as np

    from mia_ray.door import check_content, open_pool
    from mia_ray.errors import DataError

    u8 = np.random.default_rng(1).integers(0, 256, (60, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "m.npy", u8[:30])
    nm = u8[30:].copy()
    nm[20] = nm[3]
    np.save(tmp_path / "nm.npy", nm)
    cfg = given_cfg("npz", tmp_path / "m.npy", tmp_path / "nm.npy", monkeypatch, tmp_path / "cache")
    nm[25] = nm[3]
    np.save(tmp_path / "nm.npy", nm)
    with caplog.at_level("WARNING", logger="mia_ray"):
        check_content(cfg, open_pool(cfg))
    assert re.search(r"nm\.npy: image 20 \(\S+nm\.npy image 20\) is identical to image 3 \(\S+nm\.npy image 3\) "
                     r"\(2 images of the pool repeat an earlier one\); each copy is scored as a sample of its own$",
                     caplog.text, re.M), caplog.text
    np.save(tmp_path / "nm.npy", np.concatenate([u8[30:], u8[:1]]))  # a member among the non-members: refused
    with pytest.raises(DataError, match=r"^data\.nonmembers: "):
        check_content(cfg, open_pool(cfg))


def test_given_sets_of_different_native_shapes_are_refused(tmp_path, monkeypatch):
    """Members 3x16x16 RGB, non-members 1x8x8 gray at data 1x8x8: only the members were downsampled and turned to
    luma, and an attack could score the conversion instead of membership. Sets sharing a shape, or both of many
    sizes (photos), pass."""

    import numpy as np
    from PIL import Image

    from mia_ray.door import check_content, check_same_shapes, open_pool
    from mia_ray.errors import DataError

    rng = np.random.default_rng(2)
    np.save(tmp_path / "m.npy", rng.integers(0, 256, (30, 3, 16, 16), dtype=np.uint8))
    np.save(tmp_path / "nm.npy", rng.integers(0, 256, (30, 8, 8), dtype=np.uint8))
    cfg = given_cfg("npz", tmp_path / "m.npy", tmp_path / "nm.npy", monkeypatch, tmp_path / "cache")
    with pytest.raises(DataError, match=r"^data\.nonmembers: images are 1x8x8 \(C x H x W\) but the members are "
                                        r"3x16x16; allowed: members and non-members of the same native size and "
                                        r"channels \(converting one set only lets an attack tell them apart by the "
                                        r"conversion, not by membership\)$"):
        check_content(cfg, open_pool(cfg))
    np.save(tmp_path / "m.npy", rng.integers(0, 256, (30, 8, 8), dtype=np.uint8))
    check_content(cfg, open_pool(cfg))
    (tmp_path / "a").mkdir()  # a folder of two sizes beside one of one of those sizes: passes
    (tmp_path / "b").mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (8 + 4 * (i % 2), 8), dtype=np.uint8)).save(tmp_path / "a" / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (12, 8), dtype=np.uint8)).save(tmp_path / "b" / f"{i}.png")
    two = given_cfg("folder", tmp_path / "a", tmp_path / "b", monkeypatch, tmp_path / "cache")
    check_content(two, open_pool(two))
    check_same_shapes([(3, 10, 12), (3, 20, 9)], [(3, 31, 7), (3, 5, 5)])  # photos of many sizes: left to the user
    with pytest.raises(DataError, match=r"images are 3x32x32 \(C x H x W\) but the members are 3x10x12, 3x20x9;"):
        check_same_shapes([(3, 10, 12), (3, 20, 9)], [(3, 32, 32)])


def test_a_file_refused_on_opening_names_its_key(tmp_path):
    """'x.npy: dtype int64 is not supported' named no key: with given membership not even which set was refused."""
    import numpy as np

    from mia_ray.config import DataConfig
    from mia_ray.data.given import open_given
    from mia_ray.errors import DataError
    from mia_ray.preflight import check_data

    np.save(tmp_path / "ok.npy", np.zeros((30, 8, 8), np.uint8))
    np.save(tmp_path / "int.npy", np.zeros((30, 8, 8), np.int64))
    data = DataConfig(source="npz", resolution=8, channels=1)
    with pytest.raises(DataError, match=r"^data\.nonmembers: \S+int\.npy: dtype int64 is not supported; allowed: "
                                        r"uint8 \(0\.\.255\) or float \(already in \[-1, 1\]\)$"):
        open_given(data, str(tmp_path / "ok.npy"), str(tmp_path / "int.npy"))
    cfg, _ = sweep_files.load_sweep(tmp_path, data={"source": "npz", "path": str(tmp_path / "int.npy"), "resolution": 8,
                                                    "channels": 1})
    with pytest.raises(DataError, match=r"^data\.path: \S+int\.npy: dtype int64 is not supported; allowed: uint8 "
                                        r"\(0\.\.255\) or float \(already in \[-1, 1\]\) \(prepare the images"):
        check_data(cfg)


# --- the CLIs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("override, line", [
    ("nokey=1", r"^override 'nokey=1': Key 'nokey' not in 'SweepConfig'; allowed keys: name, output, store, "),
    ("train.nokey=3", r"^override 'train\.nokey=3': Key 'nokey' not in 'TrainConfig'; allowed keys: steps, "),
    ("data.resolution=8.0", r"^override 'data\.resolution=8\.0': Value '8\.0' of type 'float' could not be converted"),
    ("epsilons=[abc]", r"^override 'epsilons=\[abc\]': Value 'abc' of type 'str' could not be converted to Float; "
                       r"allowed: a list of numbers$"),
    ("data=3", r"^override 'data=3': data = 3; allowed: a mapping of its keys \(source, path, "),
])
def test_an_override_of_an_unknown_key_or_wrong_type_names_the_override(tmp_path, override, line):
    """Each named the sweep file ("s.yaml: key 'nokey': ..."), which holds no such key."""
    from mia_ray.errors import ConfigError

    with pytest.raises(ConfigError, match=line) as e:
        sweep_files.load_sweep(tmp_path, [override])
    assert "s.yaml" not in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"s\.yaml: key 'nokey': Key 'nokey' not in 'SweepConfig'"):  # the file's own
        sweep_files.load_sweep(tmp_path, ["seeds=[3]"], nokey=1)


def test_analysis_of_a_trial_in_two_metrics_files_is_one_line(tmp_path, capsys):
    """metrics/x.parquet and its copy 'x copy.parquet' (a file manager's, a merge of two machines' folders): the
    trial was read twice and averaged in twice, exit 0."""
    import shutil

    from test_analysis_fixture import build_results

    from analysis.__main__ import main as analysis_main

    root = tmp_path / "r"
    root.mkdir()
    build_results(str(root), keep=lambda t: t in ("ddpm-200-nodp", "smld-200-nodp"))
    shutil.copy(root / "metrics" / "smld-200-nodp.parquet", root / "metrics" / "smld-200-nodp copy.parquet")
    assert analysis_main([str(root), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {root}/metrics: trial 'smld-200-nodp' has 12 rows for 6 (attack, step) pairs, in "
                   "smld-200-nodp copy.parquet, smld-200-nodp.parquet; allowed: one file per trial, as the sweep "
                   "writes it (<trial_id>.parquet): delete the copy\n")
    assert not (tmp_path / "rep").exists()
    (root / "metrics" / "smld-200-nodp copy.parquet").unlink()
    assert analysis_main([str(root), "--out", str(tmp_path / "rep")]) == 0


def test_a_folder_whose_images_are_behind_a_link_says_links_are_not_followed(tmp_path):
    """'holds no .png/.jpg/.jpeg files (searched recursively)' of a folder whose images the user sees in it, through
    a link to another folder (recursion does not follow links: a link to '..' would never end)."""
    import numpy as np
    from PIL import Image

    from mia_ray.errors import DataError

    (tmp_path / "real").mkdir()
    (tmp_path / "data").mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), i, np.uint8)).save(tmp_path / "real" / f"{i}.png")
    (tmp_path / "data" / "train").symlink_to(tmp_path / "real")
    with pytest.raises(DataError, match=r"^data\.path: folder \S+/data holds no \.png/\.jpg/\.jpeg files \(searched "
                                        r"recursively; links to folders, such as \S+/data/train -> \S+/real, are not "
                                        r"followed\); allowed: a folder that holds the images, e\.g\. "
                                        r"data\.path=\S+/real$"):
        check_pool("folder", tmp_path / "data")
    assert check_pool("folder", tmp_path / "real").n == 3


@pytest.mark.parametrize("device", [None, ["a", "b"], "", "GPU\nx"])
def test_timings_whose_device_is_no_one_line_name_are_refused(tmp_path, device):
    """The bill printed 'estimate on None' (or across two lines) and exit 0."""
    import json
    import re

    from mia_ray.errors import ConfigError
    from mia_ray.estimate import Timing

    t = dict(device=device, train_plain_s_per_step=0.01, train_dp_s_per_step=0.02, forward_s_per_sample=1e-4,
             backward_s_per_sample=2e-4)
    (tmp_path / "t.json").write_text(json.dumps(t))
    line = (rf"^--estimate-from \S+t\.json: device = {re.escape(repr(device))}; allowed: the device's name, one "
            r"line \(e\.g\. \"NVIDIA H100 80GB HBM3\"\)$")
    with pytest.raises(ConfigError, match=line):
        Timing.from_json(str(tmp_path / "t.json"))
    (tmp_path / "t.json").write_text(json.dumps({**t, "device": "NVIDIA H200"}))
    assert Timing.from_json(str(tmp_path / "t.json")).device == "NVIDIA H200"


def test_a_parquet_cell_that_is_no_image_is_named_without_a_memory_address(tmp_path):
    """'cannot identify image file <_io.BytesIO object at 0x7fa8c10d4ef0>': a different line on every run."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mia_ray.errors import DataError

    pq.write_table(pa.table({"image": [b"junk"] * 3}), tmp_path / "j.parquet")
    with pytest.raises(DataError, match=r"^data\.path: cannot read image \S+j\.parquet column 'image' row 0: "
                                        r"UnidentifiedImageError: cannot identify image file of these bytes; allowed: "
                                        r"PNG or JPEG$"):
        check_pool("parquet", tmp_path / "j.parquet")


def test_a_folder_given_to_the_hdf5_source_is_named_a_folder(tmp_path):
    """h5py's message held a time stamp, a file descriptor and a buffer address ('buf = 0x7ffc44e8e848')."""
    from mia_ray.errors import DataError

    with pytest.raises(DataError, match=rf"^data\.path: {tmp_path} is a folder; allowed: an HDF5 file with an image "
                                        r"dataset \(data\.key, default 'images'\)$"):
        check_pool("hdf5", tmp_path)


def test_resuming_trials_of_an_unreadable_schema_version_is_refused_before_ray(tmp_path):
    """A folder finished by a newer mia_ray (schema_version 3): its trials were kept as done, the missing ones
    trained beside them, and the sweep's own summary then refused the folder."""
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    from mia_ray import sweep_config
    from mia_ray.errors import ConfigError
    from mia_ray.results import TABLES
    from mia_ray.resume import check_resumable, expected_rows

    path = sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"), output=str(tmp_path / "out"))
    cfg, _ = sweep_config.load(path)
    root, trials = sweep_config.results_root(cfg), sweep_config.expand(cfg)
    for t in TABLES:
        os.makedirs(f"{root}/{t}", exist_ok=True)
        open(f"{root}/{t}/{trials[0].trial_id}.parquet", "wb").close()
    rows = sorted(expected_rows(trials[0]), key=str)

    def metrics(version):
        pq.write_table(pa.table({"attack": [a for a, _ in rows], "step": pa.array([s for _, s in rows], pa.int64()),
                                 "n_members": [16] * len(rows), "n_nonmembers": [16] * len(rows),
                                 "schema_version": pa.array([version] * len(rows), pa.int32())}),
                       f"{root}/metrics/{trials[0].trial_id}.parquet")

    metrics(3)
    with pytest.raises(ConfigError, match=rf"^{root}: its finished trials \(e\.g\. {trials[0].trial_id}\) are of "
                                          r"results schema_version 3, this mia_ray writes 2 and reads 1, 2; allowed: "
                                          r"resume with the mia_ray that wrote them, or give the sweep a new name or "
                                          r"output$"):
        check_resumable(root, trials)
    for version in (1, 2):
        metrics(version)
        check_resumable(root, trials)


def test_given_folders_of_png_beside_jpeg_are_refused(tmp_path, monkeypatch):
    """Members saved as PNG, non-members as JPEG: the compression artifacts of one set were a membership signal."""

    import numpy as np
    from PIL import Image

    from mia_ray.door import check_content, open_pool
    from mia_ray.errors import DataError

    rng = np.random.default_rng(3)
    for name in ("m", "n"):
        (tmp_path / name).mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / "m" / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / "n" / f"{i}.jpg")
    cfg = given_cfg("folder", tmp_path / "m", tmp_path / "n", monkeypatch, tmp_path / "cache")
    with pytest.raises(DataError, match=r"^data\.nonmembers: images are JPEG files but the members are PNG files; "
                                        r"allowed: members and non-members stored in the same format \(compression "
                                        r"artifacts on one set only let an attack tell them apart by the format, not "
                                        r"by membership\)$"):
        check_content(cfg, open_pool(cfg))
    Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / "m" / "extra.jpeg")
    check_content(cfg, open_pool(cfg))  # a format in common: left to the user


def test_a_uint8_pool_of_0_1_or_0_16_is_warned_about_once_scanned_and_when_cached(tmp_path, caplog):
    """uint8 is read as 0..255: masks stored as 0/1 (or sklearn-like 0..16 intensities) became near-black images,
    trained on silently; a pool reaching 255 gets no warning."""
    import numpy as np

    from mia_ray.data import open_source
    from mia_ray.data import validate as pool_validate

    rng = np.random.default_rng(4)
    np.save(tmp_path / "mask.npy", rng.integers(0, 2, (40, 8, 8), dtype=np.uint8))
    np.save(tmp_path / "ok.npy", rng.integers(0, 256, (40, 8, 8), dtype=np.uint8))
    cache = str(tmp_path / "cache")
    for _ in range(2):  # a scan, then the record of that scan
        caplog.clear()
        with caplog.at_level("WARNING", logger="mia_ray"):
            pool_validate.check_pool(open_source(data_cfg("npz", tmp_path / "mask.npy")), cache)
        (msg,) = [r.getMessage() for r in caplog.records]
        assert msg.endswith("mask.npy: no pixel of the pool is above -0.992 on mia_ray's [-1, 1] scale (uint8 1): if "
                            "these are uint8 images of 0..1 or 0..16 (masks, intensity levels), store them scaled to "
                            "0..255 (uint8 is read as 0..255)")
    caplog.clear()
    with caplog.at_level("WARNING", logger="mia_ray"):
        pool_validate.check_pool(open_source(data_cfg("npz", tmp_path / "ok.npy")), cache)
    assert not caplog.records


def test_the_estimate_of_a_given_model_bills_no_training_and_times_its_own_unet(tmp_path, monkeypatch):
    """With model.pretrained nothing is trained, yet the bill counted train.steps per target, and --estimate timed
    (and trained) the YAML's model: keys instead of the checkpoint's UNet."""
    import numpy as np

    from mia_ray import estimate, sweep_config

    _unet(block_out_channels=(8, 24), norm_num_groups=8).save_pretrained(tmp_path / "u", safe_serialization=True)
    rng = np.random.default_rng(5)
    np.save(tmp_path / "m.npy", rng.integers(0, 256, (20, 8, 8), dtype=np.uint8))
    np.save(tmp_path / "n.npy", rng.integers(0, 256, (20, 8, 8), dtype=np.uint8))
    path = sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"), eval_size=8,
                                   model={"pretrained": str(tmp_path / "u")},
                                   data={"source": "npz", "members": str(tmp_path / "m.npy"),
                                         "nonmembers": str(tmp_path / "n.npy"), "resolution": 8, "channels": 1})
    cfg, _ = sweep_config.load(path)
    trials = sweep_config.expand(cfg)
    timing = estimate.Timing("x", 10.0, 20.0, 1e-4, 2e-4)
    assert estimate.bill(trials, timing, cfg.family.num_steps)["device_hours"]["training"] == 0
    timed = []
    monkeypatch.setattr(estimate, "time_train_steps", lambda *a, **k: pytest.fail("a given model was trained"))
    monkeypatch.setattr(estimate, "time_passes", lambda *a: timed.append(a[-1]) or (1e-4, 2e-4))
    t = estimate.measure(cfg, trials, device="cpu")
    assert (t.train_plain_s_per_step, t.train_dp_s_per_step) == (0.0, 0.0)
    assert list(timed[0].config.block_out_channels) == [8, 24]  # the checkpoint's, not the YAML's [8, 16]
