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


# --- sweep YAML values ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, line", [
    # 1e12 optimiser steps without DP passed: training keeps every step's loss (32 TB) and ran for years
    (["train.steps=1000000000000"], r"^train\.steps = 1000000000000; allowed: an integer in \[1, 10_000_000\] "
                                    r"\(training keeps every step's loss; use --estimate for the device-hours of a "
                                    r"long run\)$"),
    (["train.steps=10000001"], r"^train\.steps = 10000001; allowed: an integer in \[1, 10_000_000\]"),
    # a warm-up longer than training: the learning rate ramped over 1000 steps and training ended at 5/1000 of it
    (["train.warmup=1000"], r"^train\.warmup = 1000 with train\.steps = 5: the learning rate would never reach "
                            r"train\.lr; allowed: an integer in \[0, train\.steps\] \(0 = no warm-up\)$"),
    # below Ray's resource unit: refused by Ray only when the first actor or training task was made, after Ray started
    (["resources.scorer_gpus=0.00001"], r"^resources\.scorer_gpus = 1e-05; allowed: 0 or a number >= 0\.0001 \(Ray "
                                        r"counts resources in steps of 0\.0001 and refuses a smaller fraction once it "
                                        r"has started\)$"),
    (["resources.train_gpus=0.00005"], r"^resources\.train_gpus = 5e-05; allowed: 0 or a number >= 0\.0001"),
    (["resources.train_cpus=0.00001"], r"^resources\.train_cpus = 1e-05; allowed: 0 or a number >= 0\.0001"),
    # a scalar that is not an integer where a list of steps belongs: "Invalid value assigned: AnyNode is not a
    # ListConfig, TupleConfig, list, or tuple.; allowed keys: t_sec, k, ..." named no value and no allowed form
    (['attacks={secmi: {t_sec: "100"}}'], r"^attacks\.secmi\.t_sec = '100'; allowed: a list of integer steps, or one "
                                          r"integer step$"),
    (["attacks={secmi: {t_sec: .nan}}"], r"^attacks\.secmi\.t_sec = nan; allowed: a list of integer steps, or one "),
    (["attacks={loss: {steps: abc}}"], r"^attacks\.loss\.steps = 'abc'; allowed: a list of integer steps, or one "),
])
def test_sweep_values_refused_in_one_line_before_ray(tmp_path, overrides, line):
    import sys

    import sweep_files

    from mia_ray.errors import ConfigError

    with pytest.raises(ConfigError, match=line):
        sweep_files.load_sweep(tmp_path, overrides)
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


@pytest.mark.parametrize("overrides", [
    ["train.steps=10000000"], ["train.warmup=5"], ["resources.train_gpus=0.0001", "resources.scorer_gpus=0"],
    ["attacks={secmi: {t_sec: 100}}"], ["attacks={loss: {steps: 10}}"],
])
def test_the_edges_of_those_values_pass(tmp_path, overrides):
    import sweep_files

    sweep_files.load_sweep(tmp_path, overrides)


def test_the_yaml_forms_of_those_values_are_refused_too(tmp_path):
    """Written in the file (YAML .nan, a quoted number) rather than as overrides."""
    import sweep_files

    from mia_ray.errors import ConfigError

    with pytest.raises(ConfigError, match=r"attacks\.secmi\.t_sec = nan; allowed"):
        sweep_files.load_sweep(tmp_path, attacks={"secmi": {"t_sec": float("nan")}})
    with pytest.raises(ConfigError, match=r"train\.warmup = 6 with train\.steps = 5"):
        sweep_files.load_sweep(tmp_path, train={"steps": 5, "batch_size": 64, "lr": 0.002, "warmup": 6})


# --- a rerun into a folder of another config -----------------------------------------------------------------


def test_a_rerun_after_the_target_config_changed_is_refused_before_ray(tmp_path):
    """train.steps edited, same name and output: the new targets' ids differ only in their hash, nothing finished
    matched, and the sweep trained them beside the old ones; the analysis then averaged both as two seeds of one
    setting. More seeds or sizes (other settings) still extend a folder."""
    import sweep_files
    from test_resume_guard import finish

    from mia_ray import sweep_config
    from mia_ray.errors import ConfigError
    from mia_ray.resume import check_resumable, expected_rows

    def trials_of(**over):
        path = sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"), output=str(tmp_path / "out"),
                                       **over)
        cfg, _ = sweep_config.load(path)
        return sweep_config.results_root(cfg), sweep_config.expand(cfg)

    root, old = trials_of()
    finish(root, old[0], sorted(expected_rows(old[0]), key=str))
    check_resumable(root, old)
    _, more = trials_of(seeds=[0, 1], train_sizes=[64, 128])  # extends: the finished trial is one of them
    check_resumable(root, more)
    _, new = trials_of(train={"steps": 6, "batch_size": 64, "lr": 0.002})
    assert new[0].trial_id != old[0].trial_id
    with pytest.raises(ConfigError, match=rf"^{root}: its finished trial {old[0].trial_id} is the setting and seed of "
                                          rf"this sweep's {new[0].trial_id} but another target \(the model, train, dp, "
                                          r"data or audit\.canaries config changed\); allowed: rerun with the config "
                                          r"that wrote it \(its sweep\.yaml\), or give the sweep a new name or output"):
        check_resumable(root, new)


def test_analysis_refuses_two_targets_of_one_setting_and_seed(tmp_path, capsys):
    """Such a folder, written before the sweep refused it: two targets counted as two seeds of one seed."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from test_analysis_fixture import build_results

    from analysis.__main__ import main

    root = build_results(str(tmp_path / "fixture"), keep=lambda t: t.startswith("ddpm-200"))
    for table in ("metrics", "targets", "scores", "splits"):
        src = f"{root}/{table}/ddpm-200-nodp.parquet"
        t = pq.read_table(src)
        i = t.schema.get_field_index("trial_id")
        t = t.set_column(i, t.schema.field(i), pa.array(["ddpm-200-nodp-other"] * len(t), pa.string()))
        pq.write_table(t, f"{root}/{table}/ddpm-200-nodp-other.parquet")
    assert main([root, "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {root}/metrics: trials 'ddpm-200-nodp' and 'ddpm-200-nodp-other' have the same dataset, "
                   "family, train size, ε and seed but different targets (a rerun into this folder after the model, "
                   "train or dp config changed); allowed: one target per setting and seed (the tables would average "
                   "them as two seeds): move one set of trials to another folder\n")
    assert not (tmp_path / "report").exists()


# --- CLI flags -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("timing, price, line", [
    # each timing passed "positive numbers of seconds", and the bill printed "total   inf h"
    ({"forward_s_per_sample": 1e308, "backward_s_per_sample": 1e308}, None,
     r"^error: --estimate-from \S+t\.json: the timings give inf device-hours for this sweep; allowed: seconds per "
     r"step and per sample that a device takes \(benchmarks/gpu_check\.py writes them\)$"),
    ({}, "1e308", r"^error: --price-per-hour = 1e\+308 gives a cost of inf; allowed: a finite price >= 0 whose cost "
                  r"is finite$"),
])
def test_an_estimate_that_overflows_is_refused_naming_the_flag(tmp_path, capsys, timing, price, line):
    import json
    import os
    import re

    from mia_ray import sweep

    full = os.path.join(os.path.dirname(__file__), "..", "sweeps", "full_paper.yaml")
    fake = {"device": "fake", "train_plain_s_per_step": 1.0, "train_dp_s_per_step": 2.0,
            "forward_s_per_sample": 1e-3, "backward_s_per_sample": 2e-3}
    (tmp_path / "t.json").write_text(json.dumps({**fake, **timing}))
    flags = ["--estimate-from", str(tmp_path / "t.json")] + (["--price-per-hour", price] if price else [])
    assert sweep.main([full, *flags]) == 2
    captured = capsys.readouterr()
    assert re.match(line, captured.err) and captured.err.count("\n") == 1, captured.err
    assert "estimate on" not in captured.out


def test_a_results_folder_whose_grids_is_a_file_is_refused_before_ray(tmp_path):
    """grids/ as a file passed the door: the trial trained and scored, then failed writing its utility sample grid."""
    import re

    import sweep_files

    from mia_ray.errors import ConfigError
    from mia_ray.preflight import check_writable

    root = tmp_path / "out" / "t"
    root.mkdir(parents=True)
    (root / "grids").write_text("x")
    cfg, _ = sweep_files.load_sweep(tmp_path, [f"output={tmp_path / 'out'}"])
    with pytest.raises(ConfigError, match=rf"^output: {re.escape(str(root / 'grids'))} is a file, not a folder; "
                                          r"allowed: a results folder written by this sweep"):
        check_writable(cfg)
    (root / "grids").unlink()
    check_writable(cfg)


def test_estimate_with_an_address_is_refused_before_timing(tmp_path, capsys, monkeypatch):
    """--address was ignored by --estimate: the bill timed this machine, not the cluster named."""
    import sweep_files

    from mia_ray import estimate, sweep

    monkeypatch.setattr(estimate, "measure", lambda *a, **k: pytest.fail("timed"))
    path = sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"))
    assert sweep.main([path, "--estimate", "--address", "ray://head:10001"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: --estimate with --address ray://head:10001: --estimate times this machine's device, not "
                   "the cluster's; allowed: --estimate alone on a machine like the cluster's nodes, or --estimate-from "
                   "the JSON benchmarks/gpu_check.py writes on one\n")


def test_given_sets_on_two_pixel_scales_are_refused(tmp_path, monkeypatch):
    """Members as floats of [0, 1] stored as they are beside non-members on [-1, 1] (or uint8 masks of 0/1 beside
    photos of 0..255): no member pixel is below 0, the scale alone separates the sets. A pool got only a warning,
    on the member set, and the sweep ran."""
    import numpy as np

    from mia_ray.door import check_content, open_pool
    from mia_ray.errors import DataError

    rng = np.random.default_rng(8)
    np.save(tmp_path / "unit.npy", rng.uniform(0, 1, (30, 8, 8)).astype(np.float32))
    np.save(tmp_path / "signed.npy", rng.uniform(-1, 1, (30, 8, 8)).astype(np.float32))
    np.save(tmp_path / "signed2.npy", rng.uniform(-1, 1, (30, 8, 8)).astype(np.float32))
    np.save(tmp_path / "mask.npy", rng.integers(0, 2, (30, 8, 8), dtype=np.uint8))
    np.save(tmp_path / "photo.npy", rng.integers(0, 256, (30, 8, 8), dtype=np.uint8))

    def content(members, nonmembers):
        cfg = given_cfg("npz", tmp_path / members, tmp_path / nonmembers, monkeypatch, tmp_path / "cache")
        check_content(cfg, open_pool(cfg))

    with pytest.raises(DataError, match=r"^data\.members: no pixel below 0 on mia_ray's \[-1, 1\] scale \(smallest "
                                        r"\S+\), but the non-members reach -0\.99\d; allowed: both sets on one scale, "
                                        r"floats in \[-1, 1\] \(store 2x - 1 of images in \[0, 1\]\) \(a set on "
                                        r"another scale lets an attack tell them apart by the scale, not by "
                                        r"membership\)$"):
        content("unit.npy", "signed.npy")
    with pytest.raises(DataError, match=r"^data\.nonmembers: no pixel below 0 .* but the members reach -0\.99\d; "):
        content("signed.npy", "unit.npy")
    with pytest.raises(DataError, match=r"^data\.nonmembers: no pixel above -0\.8 on mia_ray's \[-1, 1\] scale "
                                        r"\(largest -0\.992\), but the members reach 1; allowed: both sets on one "
                                        r"scale, uint8 scaled to 0\.\.255"):
        content("photo.npy", "mask.npy")
    content("signed.npy", "signed2.npy")  # one scale: passes


@pytest.mark.parametrize("flags, named", [
    (["--estimate"], "--estimate"), (["--dry-run"], "--dry-run"),
    (["--estimate-from", "t.json", "--price-per-hour", "2"], "--estimate-from, --price-per-hour"),
    (["--output", "elsewhere", "--no-report"], "--output, --no-report"),
])
def test_list_with_run_flags_is_refused_not_silently_a_listing(capsys, flags, named):
    """--list printed the registries and exited 0: the estimate or dry run asked beside it never happened."""
    from mia_ray import sweep

    assert sweep.main(["--list", *flags]) == 2
    assert capsys.readouterr().err == (f"error: --list with {named}: allowed: --list alone (with a SWEEP, its "
                                       "overrides and --plugins: it lists families, attacks and sources, and runs "
                                       "nothing)\n")


def test_a_number_beyond_float64_is_refused_not_read_as_inf(tmp_path):
    """epsilons: [1e400] read as inf: the target trained without DP-SGD and was labelled eps inf, silently."""
    import sweep_files

    from mia_ray import sweep_config
    from mia_ray.errors import ConfigError

    path = sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"))
    with open(path, "a") as f:
        f.write("dp: {delta: 1.0e-05, max_grad_norm: 1.0}\n")
    text = open(path).read().replace("- .inf", "- 1e400")
    assert "1e400" in text
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"s\.yaml: epsilons has 1e400, beyond float64 \(it reads as inf, which "
                                          r"epsilons take for no DP\); allowed: a finite number \(at most 1\.8e308\), "
                                          r"or \.inf where infinity is meant$"):
        sweep_config.load(path)
    with pytest.raises(ConfigError, match=r"^override 'train\.lr=2\.5e999': train\.lr has 2\.5e999, beyond float64 "
                                          r"\(it reads as inf\); allowed"):
        sweep_files.load_sweep(tmp_path, ["train.lr=2.5e999"])
    with pytest.raises(ConfigError, match=r"^override 'epsilons=\[10, -1E\+999\]': epsilons has -1E\+999, beyond"):
        sweep_files.load_sweep(tmp_path, ["epsilons=[10, -1E+999]"])
    cfg, _ = sweep_files.load_sweep(tmp_path, ["epsilons=[.inf]", "train.lr=1e300"])  # .inf, a large finite: pass
    assert cfg.epsilons == [float("inf")] and cfg.train.lr == 1e300


@pytest.mark.parametrize("over, line", [
    # name: yes wrote the results to <output>/True; store: no to a store named False
    ({"name": True}, r"s\.yaml: name = True: YAML reads an unquoted yes, no, on, off, true or false as a boolean; "
                     r"allowed: a string \(quoted when it is one of those words: name: 'yes'\)$"),
    ({"output": False}, r"s\.yaml: output = False: YAML reads"),
    ({"data": {"source": "digits", "key": True}}, r"s\.yaml: data\.key = True: YAML reads"),
    ({"dp": {"accountant": True}}, r"s\.yaml: dp\.accountant = True: YAML reads"),
    ({"attacks": {"likelihood": {"solver": False}}}, r"^attacks\.likelihood\.solver = False: YAML reads"),
])
def test_a_yaml_boolean_where_a_string_belongs_is_refused(tmp_path, over, line):
    import sweep_files
    import yaml

    from mia_ray import sweep_config
    from mia_ray.errors import ConfigError

    path = sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"), **over)
    assert ": true" in open(path).read() or ": false" in open(path).read()  # as a user's unquoted yes / no reads
    assert yaml.safe_load("name: yes") == {"name": True}
    with pytest.raises(ConfigError, match=line):
        sweep_config.load(path)
