"""README claims about the CLI door: `--list` lists plugin attacks; an unknown key names the allowed keys."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import sweep_files

from mia_ray.sweep import main

PLUGIN = "mia_ray_test_plugins"  # tests/mia_ray_test_plugins.py registers the attack "crash_once"


def listed(*args: str) -> str:
    """`--list` in a fresh interpreter (the registries of this one may already hold the plugin)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "mia_ray.sweep", "--list", *args], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.slow  # three fresh interpreters importing torch
def test_list_imports_plugins_from_flag_and_sweep_file(tmp_path):
    assert "attack crash_once" not in listed()
    assert "attack crash_once:" in listed("--plugins", PLUGIN)
    sweep = sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"), plugins=[PLUGIN])
    assert "attack crash_once:" in listed(sweep)


def test_list_with_unknown_plugin_is_one_line(capsys):
    assert main(["--list", "--plugins", "no_such_plugin_module"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --plugins: cannot import 'no_such_plugin_module'") and "\n" not in err


@pytest.mark.parametrize(
    "over, expect",
    [
        ({"resources": {"scorer_actor": 2}}, "Did you mean one of: 'scorer_actors'"),  # close: the closest
        ({"resources": {"zzz": 2}}, "allowed keys: scorer_actors, scorer_cpus"),  # none close: all of them
        ({"zzz": 1}, "allowed keys: name, output, store, families"),
    ],
)
def test_unknown_key_names_the_allowed_keys(tmp_path, capsys, over, expect):
    sweep = sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"), **over)
    assert main([sweep, "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert expect in err and "\n" not in err


@pytest.mark.parametrize("argv, line", [
    (["S", "--dryrun"], r"^error: unrecognized arguments: --dryrun; see python -m mia_ray\.sweep --help$"),
    (["S", "--estimate", "--price-per-hour", "abc"],
     r"^error: argument --price-per-hour: invalid float value: 'abc'; see python -m mia_ray\.sweep --help$"),
    (["S", "--output"], r"^error: argument --output: expected one argument; see "),
    ([], r"^error: give a sweep YAML file \(or --list\); see python -m mia_ray\.sweep --help$"),
])
def test_usage_errors_are_one_line(tmp_path, capsys, argv, line):
    """argparse printed its 4-line usage block before the error."""
    import re

    sweep = sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"))
    try:
        rc = main([sweep if a == "S" else a for a in argv])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and re.match(line, err), err


def test_an_empty_output_flag_is_refused_not_ignored(tmp_path, capsys):
    """``--output ''`` was dropped (results went to the YAML's output); ``output: ''`` made the root /<name>."""
    sweep = sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"))
    assert main([sweep, "--dry-run", "--output", ""]) == 2
    err = capsys.readouterr().err
    assert err == "error: --output ''; allowed: a folder path or a URI such as s3://bucket/prefix\n"
