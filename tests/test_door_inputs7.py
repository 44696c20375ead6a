"""The door's seventh adversarial pass (door7): --address forms, audit keys without an audit, override errors that
named the sweep file, and the inputs of the hunt below. Each is refused with one line naming the key, flag or file
and what is allowed, before Ray starts or anything is written; none of these tests starts Ray."""

from __future__ import annotations

import os
import sys

import pytest
import sweep_files

from mia_ray.errors import ConfigError
from mia_ray.preflight import check_address
from mia_ray.sweep import main

QUICK = os.path.join(os.path.dirname(__file__), "..", "sweeps", "quickstart.yaml")
load = sweep_files.load_sweep


def _no_ray() -> bool:
    return "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def _one_error_line(capfd) -> str:
    lines = capfd.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


# --- --address -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("address, hostport", [
    ("auto", None), ("local", None), ("127.0.0.1:6379", ("127.0.0.1", 6379)), ("head-node:6379", ("head-node", 6379)),
    ("ray://10.0.0.5:10001", ("10.0.0.5", 10001)), ("[::1]:6379", ("::1", 6379)), ("h:65535", ("h", 65535)),
])
def test_ray_address_forms_pass(address, hostport):
    assert check_address(address) == hostport


@pytest.mark.parametrize("address, why", [
    ("nonsense", ""), ("10.0.0.5", ""), ("head:port", ""), (" auto", ""), ("a b:1", ""), ("foo://x", ""),
    ("h:0", " (port 0 is outside 1..65535)"), ("h:99999", " (port 99999 is outside 1..65535)"),  # OverflowError
    ("ray://head", " (ray:// needs the Ray Client port, 10001 by default)"),  # dialled port 443
    ("http://head:8265", " (that is the dashboard's HTTP address; Ray wants the head's GCS port"),  # a ValueError
])
def test_other_addresses_are_refused_naming_the_forms_allowed(address, why):
    with pytest.raises(ConfigError) as e:
        check_address(address, f"--address {address}")
    line = str(e.value)
    assert line.startswith(f"--address {address}: not a Ray address{why}") and "\n" not in line
    assert line.endswith("allowed: host:port of a Ray head (e.g. 10.0.0.5:6379), ray://host:port (Ray Client), auto "
                         "(a cluster started on this machine) or local")


@pytest.mark.parametrize("address, line", [
    # exited 0: a dry run never looked at --address
    ("nonsense", r"error: --address nonsense: not a Ray address; allowed: host:port"),
    ("h:70000", r"error: --address h:70000: not a Ray address \(port 70000 is outside 1\.\.65535\)"),
    # '' is falsy: the sweep started a local Ray, silently
    ("", r"error: --address ''; allowed: host:port of a Ray head .*; leave it out for a local Ray$"),
])
def test_a_dry_run_checks_the_address_without_contacting_it(tmp_path, capfd, address, line):
    import re

    out = tmp_path / "out"
    assert main([QUICK, "--dry-run", "--address", address, "--output", str(out)]) == 2
    assert re.match(line, _one_error_line(capfd))
    assert _no_ray() and not out.exists()


def test_a_malformed_ray_address_env_is_refused_before_the_data_is_read(tmp_path, capfd, monkeypatch):
    from mia_ray import preflight

    def never(cfg):
        raise AssertionError("the data was read before the address was checked")

    monkeypatch.setenv("RAY_ADDRESS", "nonsense")
    monkeypatch.setattr(preflight, "check_data", never)
    path = sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"), output=str(tmp_path / "out"))
    assert main([path]) == 2
    assert _one_error_line(capfd).startswith("error: RAY_ADDRESS='nonsense' (the sweep's Ray address when --address "
                                             "is not given): not a Ray address; allowed: host:port")
    assert _no_ray() and not (tmp_path / "out").exists()


# --- audit keys without an audit ------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, shown", [
    (["audit.k_plus=3"], "audit.k_plus = 3"),
    (["audit.k_minus=0"], "audit.k_minus = 0"),
    (["audit.alpha=0.01"], "audit.alpha = 0.01"),
    (["audit.k_plus=32", "audit.k_minus=32"], "audit.k_plus = 32, audit.k_minus = 32"),
])
def test_audit_guesses_without_canaries_are_refused(tmp_path, overrides, shown):
    """Ignored without a word: no audit runs with audit.canaries = 0 (the default)."""
    with pytest.raises(ConfigError, match=rf"^{shown} with audit\.canaries = 0 \(no canary audit\): allowed: "
                                          r"audit\.canaries >= 1 to run the audit, or leave k_plus / k_minus null "
                                          r"and alpha at 0\.05$"):
        load(tmp_path, overrides)


@pytest.mark.parametrize("overrides", [
    ["audit.k_plus=null", "audit.alpha=0.05"], ["audit.canaries=8", "audit.k_plus=1", "audit.alpha=0.01"],
])
def test_audit_defaults_without_canaries_and_guesses_with_them_pass(tmp_path, overrides):
    load(tmp_path, overrides)


# --- override errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("override, rest", [
    # these named the sweep file, as if the file were wrong
    ("model.attention=3", "model.attention = 3; allowed: true or false"),
    ("name=yes", "name = True: YAML reads an unquoted yes"),
    ("family.name=x", "key 'family.name' is a grid axis; set families: [...] instead"),
    ("families={a: 1}", "families has {'a': 1}; allowed: a list of values (or one value)"),
    ("name=${nope}", "Interpolation key 'nope' not found"),
    ("family=${data}", "Invalid type assigned: DataConfig is not a subclass of FamilyConfig"),
    ("train.steps=${name}", "While dereferencing interpolation '${name}': Value 't' of type 'str' could not be "
                            "converted to Integer"),
    # these were already named, in the same format
    ("train.steps=abc", "Value 'abc' of type 'str' could not be converted to Integer"),
    ("data=5", "data = 5; allowed: a mapping of its keys"),
    ("plugins=a", "plugins = 'a'; allowed: a list (e.g. [10, 20])"),
])
def test_every_override_error_names_the_override_in_one_format(tmp_path, override, rest):
    with pytest.raises(ConfigError) as e:
        load(tmp_path, ["train.lr=0.001", override, "seeds=[1]"])
    line = str(e.value)
    assert line.startswith(f"override {override!r}: {rest}") and "s.yaml" not in line and "\n" not in line


def test_a_file_error_still_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"s\.yaml: model\.attention = 3; allowed: true or false$"):
        load(tmp_path, model={"attention": 3})


def test_an_override_may_refer_to_another_key(tmp_path):
    """``store=${output}/st``: refused on main ("s.yaml: key 'store': Interpolation key 'output' not found"), the
    override checked alone; now checked on the merged sweep, where ``output`` exists."""
    cfg, _ = load(tmp_path, ["output=" + str(tmp_path / "o"), "store=${output}/st", "seeds=${train_sizes}"])
    assert cfg.store == str(tmp_path / "o" / "st") and cfg.seeds == cfg.train_sizes == [64]


def test_an_override_of_the_wrong_type_says_what_the_key_takes(tmp_path):
    """omegaconf's "Cannot convert 'ListConfig' to string" or "Incompatible value 'None'" said nothing allowed."""
    for override, allowed in (("name=[a]", "a string"), ("train.steps=", "an integer"), ("train.lr=fast", "a number"),
                              ("resources.num_cpus=x", "an integer, or null"), ("store=[1]", "a string, or null"),
                              ("seeds=[a]", "a list of integers"), ("data=null", "a mapping of its keys (source, ")):
        with pytest.raises(ConfigError) as e:
            load(tmp_path, [override])
        assert str(e.value).startswith(f"override {override!r}: ") and f"; allowed: {allowed}" in str(e.value)
    with pytest.raises(ConfigError, match=r"s\.yaml: key 'eval_size': Value .* could not be converted to Integer; "
                                          r"allowed: an integer$"):
        load(tmp_path, eval_size={"a": 1})


# --- the hunt: sweep files, plugins, a checkpoint refused after a warning ----------------------------------------


def test_sweep_files_that_are_no_yaml_mapping_are_one_line(tmp_path):
    from mia_ray import sweep_config

    scalar, latin1 = tmp_path / "scalar.yaml", tmp_path / "latin1.yaml"
    scalar.write_text("5\n")
    latin1.write_bytes(b"name: caf\xe9\n")
    (tmp_path / "loop1.yaml").symlink_to(tmp_path / "loop2.yaml")
    (tmp_path / "loop2.yaml").symlink_to(tmp_path / "loop1.yaml")
    for path, line in (
        (scalar, r"scalar\.yaml holds a single int value; allowed: a mapping of keys \(name:, data:, families:"),
        (latin1, r"latin1\.yaml: cannot read the sweep: byte 0xe9 at position 9 is not UTF-8; allowed: a UTF-8"),
        (tmp_path / "loop1.yaml", r"loop1\.yaml' is a symlink to nothing \(broken, or a loop\); pass a YAML file"),
        ("/dev/null", r"^sweep file '/dev/null' is not a regular file; pass a YAML file"),  # said "does not exist"
    ):
        with pytest.raises(ConfigError, match=line) as e:
            sweep_config.load(str(path))
        assert "\n" not in str(e.value)


PLUGINS = {
    "door7_boom": ('raise RuntimeError("boom at import")', "RuntimeError: boom at import"),
    "door7_exit": ("import sys\nsys.exit(3)", "SystemExit: 3"),
    "door7_twice": ('from mia_ray.attacks import ATTACKS\n\n@ATTACKS.register("loss")\nclass Again:\n    pass\n',
                    "ValueError: attack 'loss' is already registered"),
}


@pytest.mark.parametrize("module", sorted(PLUGINS))
def test_a_plugin_whose_import_fails_is_one_line(tmp_path, monkeypatch, capfd, module):
    """A traceback (exit 1) for any failure but ImportError / SyntaxError; sys.exit in the plugin ended the sweep
    with its status and no word."""
    code, reason = PLUGINS[module]
    (tmp_path / f"{module}.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=rf"^plugins: importing '{module}' raised {reason}; allowed: modules that "
                                          r"import cleanly \(fix the plugin, or leave it out\)$"):
        load(tmp_path, [f"plugins=[{module}]"])
    sys.modules.pop(module, None)
    capfd.readouterr()
    assert main(["--list", "--plugins", module]) == 2
    assert _one_error_line(capfd).startswith(f"error: --plugins: importing '{module}' raised {reason}")
    sys.modules.pop(module, None)


def test_a_refused_checkpoint_is_the_only_line(tmp_path):
    """The "model.pretrained with a split drawn from digits" warning came first: two lines for one refusal (a
    subprocess: the warning goes to the real stderr through logging, which pytest captures otherwise)."""
    import subprocess

    path = sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"), output=str(tmp_path / "out"))
    root = os.path.join(os.path.dirname(__file__), "..")
    run = subprocess.run([sys.executable, "-m", "mia_ray.sweep", path, "--dry-run",
                          f"model.pretrained={tmp_path / 'nope'}"], capture_output=True, text=True, cwd=root,
                         env={**os.environ, "PYTHONPATH": os.path.abspath(root)}, timeout=300)
    assert run.returncode == 2 and len(run.stderr.splitlines()) == 1, run.stderr
    assert run.stderr.startswith(f"error: model.pretrained: {tmp_path / 'nope'} does not exist; allowed: a diffusers")
    assert not (tmp_path / "out").exists()


def test_warnings_of_the_door_are_held_back_when_it_refuses(tmp_path, monkeypatch, caplog):
    """Given sets whose images repeat within a set (a warning each) and that share an image (a refusal): four warning
    lines came before the one-line error. Held now, and printed (once each) when every check passes."""
    import numpy as np
    from test_door import save_unet, sweep

    from mia_ray import sweep_config
    from mia_ray.errors import DataError
    from mia_ray.preflight import check_data

    monkeypatch.setenv("MIA_RAY_CACHE", str(tmp_path / "cache"))
    images = np.random.default_rng(0).integers(0, 256, (40, 8, 8), dtype=np.uint8)
    images[1] = images[0]  # a copy within each set: warned about, not refused
    np.savez(tmp_path / "sets.npz", a=images, b=255 - images)
    given = {"source": "npz", "members": str(tmp_path / "sets.npz"), "nonmembers": str(tmp_path / "sets.npz")}
    unet = str(save_unet(tmp_path / "ckpt"))
    cfg, _ = sweep_config.load(str(sweep(tmp_path, {**given, "members_key": "a", "nonmembers_key": "a"},
                                         model={"pretrained": unet})))
    with caplog.at_level("WARNING", logger="mia_ray"), pytest.raises(DataError, match=r"^data\.nonmembers: image 0 "):
        check_data(cfg)
    assert not caplog.records
    cfg, _ = sweep_config.load(str(sweep(tmp_path, {**given, "members_key": "a", "nonmembers_key": "b"},
                                         model={"pretrained": unet})))
    with caplog.at_level("WARNING", logger="mia_ray"):
        check_data(cfg)  # passes: each set's copy warned about, once per set
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [f"{tmp_path / 'sets.npz'} array 'a'",
                                                                      f"{tmp_path / 'sets.npz'} array 'b'"]


def test_an_unreadable_parquet_file_in_the_results_folder_is_refused_before_ray(tmp_path, capfd):
    """A truncated or foreign metrics/x.parquet passed the door: the sweep trained and scored, its summary then
    failed on the file ("cannot read Parquet"), and the exit status was 0."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mia_ray.resume import check_readable

    out = tmp_path / "out"
    (out / "t" / "metrics").mkdir(parents=True)
    (out / "t" / "targets").mkdir()
    pq.write_table(pa.table({"a": [1]}), out / "t" / "targets" / "fine.parquet")
    (out / "t" / "metrics" / ".x.parquet.tmp").write_text("a temp file of a write cut short: not read")
    check_readable(str(out / "t"))
    (out / "t" / "metrics" / "x.parquet").write_text("garbage")
    path = sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"), output=str(out))
    capfd.readouterr()
    assert main([path]) == 2
    assert _one_error_line(capfd).startswith(f"error: output: {out / 't' / 'metrics' / 'x.parquet'} is not a "
                                             "readable Parquet file (")
    assert _no_ray() and sorted(p.name for p in (out / "t").iterdir()) == ["metrics", "targets"]
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("output, rest", [
    # named "override 'output=\"${nope}\"'": an override the user never wrote (the sweep makes one of --output)
    ("${nope}", "Interpolation key 'nope' not found"),
    ("a: b/${oc.env:DOOR7_UNSET_VARIABLE}", "KeyError raised while resolving interpolation"),
])
def test_an_output_flag_error_names_the_flag(tmp_path, capfd, monkeypatch, output, rest):
    monkeypatch.delenv("DOOR7_UNSET_VARIABLE", raising=False)
    path = sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"))
    capfd.readouterr()
    assert main([path, "--dry-run", "--output", output]) == 2
    line = _one_error_line(capfd)
    assert line.startswith(f"error: --output {output}: {rest}") and "allowed: a string" not in line, line


def test_an_interpolated_override_of_the_wrong_type_says_what_the_key_takes(tmp_path):
    """omegaconf names no key for these (its full_key is empty): the override's own key says what is allowed."""
    for override, allowed in (("family=${data}", "a mapping of its keys (name, "),
                              ("seeds=${name}", "a list of integers"),
                              ("audit=${train}", "a mapping of its keys (canaries, ")):
        with pytest.raises(ConfigError) as e:
            load(tmp_path, [override])
        assert str(e.value).startswith(f"override {override!r}: ") and f"; allowed: {allowed}" in str(e.value)
