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
