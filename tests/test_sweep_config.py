"""The sweep loader: every value validated and typed once, at the door; grid axes fill the typed configs."""

import dataclasses
import math
import re

import pytest
import sweep_files

from mia_ray import sweep_config
from mia_ray.attacks.loss import LossParams
from mia_ray.config import AttackSpec, DPConfig, FamilyConfig
from mia_ray.data.base import Source
from mia_ray.data.registry import SOURCES, register_source
from mia_ray.errors import ConfigError

if "test_needs_path" not in SOURCES:

    @register_source("test_needs_path")
    class NeedsPath(Source):  # a plugin source that reads a file: the door must ask for data.path
        accepts = "a test file"


def load(tmp_path, **over):
    return sweep_config.load(sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"), **over))


def test_attacks_are_typed_once_and_carried_into_the_trials(tmp_path, monkeypatch):
    cfg, _ = load(tmp_path, attacks={"loss": {"steps": [0, 7], "max_samples": 4}})
    (spec,) = cfg.attacks.values()
    assert spec == AttackSpec("loss", LossParams(steps=[0, 7]), max_samples=4)
    calls = []
    monkeypatch.setattr(sweep_config, "_attack_spec", lambda *a: calls.append(a))
    (trial,) = sweep_config.expand(cfg)
    assert trial.attacks[0] is spec and calls == []  # expand does not type them again


def test_grid_axes_fill_family_name_and_epsilon(tmp_path):
    cfg, text = load(tmp_path, families=["ddpm", "vesde"], epsilons=[float("inf"), 4.0],
                     family={"num_steps": 500}, dp={"delta": 1e-6}, attacks={"loss": {"steps": [0, 100]}})
    trials = sweep_config.expand(cfg)
    got = {(t.spec.family.name, t.spec.dp.epsilon) for t in trials}
    assert got == {("ddpm", math.inf), ("ddpm", 4.0), ("vesde", math.inf), ("vesde", 4.0)}
    vesde = next(t.spec for t in trials if t.spec.family.name == "vesde" and t.spec.dp.epsilon == 4.0)
    assert vesde.family == dataclasses.replace(FamilyConfig(num_steps=500), name="vesde")
    assert vesde.dp == DPConfig(epsilon=4.0, delta=1e-6)
    # the resolved YAML has no key a grid axis fills, so it loads back as it is
    assert "epsilon:" not in text and "  name:" not in text
    (tmp_path / "again").mkdir()
    again = tmp_path / "again" / "sweep.yaml"
    again.write_text(text)
    assert [t.trial_id for t in sweep_config.expand(sweep_config.load(str(again))[0])] == [
        t.trial_id for t in trials
    ]


@pytest.mark.parametrize("over,needle", [
    ({"family": {"name": "smld"}}, "families"),
    ({"dp": {"epsilon": 3.0}}, "epsilons"),
    ({"data": {"source": "test_needs_path"}}, "data.path is required for data.source = 'test_needs_path'"),
    ({"data": {"source": "digits", "channels": 2}}, "data.channels"),
    ({"data": {"source": "digits", "resolution": 2}}, "data.resolution"),
    ({"train": {"lr": -1.0}}, "train.lr = -1.0; allowed: a number > 0"),
    ({"train": {"ema_decay": 2.0}}, "train.ema_decay = 2.0; allowed: 0 <= ema_decay < 1"),
])
def test_bad_values_are_one_line_errors_at_the_door(tmp_path, over, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.").replace("(", r"\(")) as e:
        load(tmp_path, **over)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("over, line", [
    ({"data": 5}, r": data = 5; allowed: a mapping of its keys \(source, path, "),
    ({"model": [1]}, r": model = \[1\]; allowed: a mapping of its keys \(block_out_channels, "),
    ({"attacks": ["loss"]}, r": attacks = \['loss'\]; allowed: a mapping of attack names to their parameters"),
    ({"attacks": {"loss": 3}}, r"^attacks\.loss = 3; allowed: a mapping of its parameters, or null for defaults$"),
    ({"attacks": {"loss": {"steps": [1, 1, 2]}}}, r"^attacks\.loss\.steps: step 1 is listed twice; allowed: distinct"),
    ({"attacks": {"sima": {"steps": [20, 0, 20]}}}, r"^attacks\.sima\.steps: step 20 is listed twice"),
    ({"seeds": [0, 1, 0]}, r"^seeds has 0 twice; allowed: distinct values$"),
    ({"epsilons": [1, 1.0]}, r"^epsilons has 1\.0 twice; allowed: distinct values$"),
    ({"families": ["ddpm", "ddpm"]}, r"^families has ddpm twice; allowed: distinct values$"),
    ({"seeds": [-1]}, r"^seeds has -1; allowed: integers >= 0$"),
])
def test_malformed_sections_repeats_and_negative_seeds_are_one_line(tmp_path, over, line):
    """``data: 5`` and ``attacks: [loss]`` got omegaconf messages naming no key, ``attacks: {loss: 3}`` a
    TypeError, a repeated step duplicated its score rows, a repeated grid value made two trials with one id,
    and a negative seed failed in numpy at training time."""
    with pytest.raises(ConfigError, match=line) as e:
        load(tmp_path, **over)
    assert "\n" not in str(e.value)
    cfg, _ = load(tmp_path, attacks={"loss": None})  # null: the defaults
    assert cfg.attacks["loss"].params == LossParams()


@pytest.mark.parametrize("over, line", [
    ({"model": {"attention": 3}}, r"model\.attention = 3; allowed: true or false$"),
    ({"model": {"bf16": "fast"}}, r"model\.bf16 = 'fast'; allowed: true or false$"),
    ({"dp": {"poisson": 0}}, r"dp\.poisson = 0; allowed: true or false$"),
    ({"attacks": {"lira": {"global_variance": 1}}}, r"^attacks\.lira\.global_variance = 1; allowed: true or false$"),
])
def test_boolean_keys_take_true_or_false_only(tmp_path, over, line):
    """omegaconf alone would read 3 or a string as true: a boolean key is refused with one line otherwise."""
    with pytest.raises(ConfigError, match=line):
        load(tmp_path, **over)
    cfg, _ = load(tmp_path, model={"attention": False, "bf16": False})
    assert cfg.model.attention is False and cfg.model.bf16 is False


@pytest.mark.parametrize("over, line", [
    ({"train": {"lr": float("inf")}}, r"^train\.lr = inf; allowed: finite numbers$"),
    ({"dp": {"max_grad_norm": float("nan")}}, r"^dp\.max_grad_norm = nan; allowed: finite numbers$"),
    ({"dp": {"max_grad_norm": float("inf")}}, r"^dp\.max_grad_norm = inf; allowed: finite numbers$"),
    ({"family": {"beta_max": float("inf")}}, r"^family\.beta_max = inf; allowed: finite numbers$"),
    ({"family": {"sigma_max": float("inf")}}, r"^family\.sigma_max = inf; allowed: finite numbers$"),
    ({"resources": {"scorer_cpus": float("nan")}}, r"^resources\.scorer_cpus = nan; allowed: finite numbers$"),
    ({"resources": {"train_gpus": float("inf")}}, r"^resources\.train_gpus = inf; allowed: finite numbers$"),
    ({"seeds": [2**70]}, r"^seeds has 1180591620717411303424; allowed: integers between -2\*\*63 and 2\*\*63 - 1"),
    ({"train": {"steps": 2**64}}, r"^train\.steps = 18446744073709551616; allowed: an integer in \[1, 10_000_000\]"),
    ({"attacks": {"likelihood": {"rtol": float("inf")}}}, r"^attacks\.likelihood\.rtol = inf; allowed: finite"),
    ({"attacks": {"pia": {"p": float("inf")}}}, r"^attacks\.pia\.p = inf; allowed: finite numbers$"),
    ({"attacks": {"loss": {"seed": 2**63}}}, r"^attacks\.loss\.seed = 9223372036854775808; allowed: integers"),
    ({"attacks": {"loss": {"max_samples": True}}}, r"^attacks\.loss\.max_samples = True; allowed: an integer >= 1"),
    ({"train": {"warmup": -1}}, r"^train\.warmup = -1; allowed: an integer >= 0"),
    ({"train": {"grad_clip": -1.0}}, r"^train\.grad_clip = -1\.0; allowed: a number >= 0"),
    ({"train": {"grad_clip": float("nan")}}, r"^train\.grad_clip = nan; allowed: a number >= 0"),
    ({"model": {"norm_num_groups": 0}}, r"^model\.norm_num_groups = 0; allowed: an integer >= 1$"),
    ({"model": {"norm_num_groups": -8}}, r"^model\.norm_num_groups = -8; allowed: an integer >= 1$"),
    ({"model": {"layers_per_block": 0}}, r"^model\.layers_per_block = 0; allowed: an integer >= 1$"),
    ({"model": {"block_out_channels": [0, 0]}}, r"^model\.block_out_channels = \[0, 0\]; allowed: a non-empty list"),
    ({"model": {"block_out_channels": [-8, 16]}}, r"^model\.block_out_channels = \[-8, 16\]; allowed:"),
    ({"resources": {"num_cpus": 0}}, r"^resources\.num_cpus = 0; allowed: an integer >= 1, or null"),
    ({"resources": {"num_cpus": -2}}, r"^resources\.num_cpus = -2; allowed: an integer >= 1, or null"),
    ({"name": ".."}, r"^name = '\.\.'; allowed: a non-empty folder name \(at most 255 bytes\) without '/' or control "
     r"characters, other than '\.' and '\.\.'$"),
    ({"name": "."}, r"^name = '\.'; allowed: "),
    ({"output": ""}, r"^output = ''; allowed: a folder path or a URI"),
    ({"output": " "}, r"^output = ' '; allowed: a folder path or a URI"),  # was a folder named ' '
    # blank optional paths were read as null: model.pretrained "" trained a model from scratch instead
    ({"model": {"pretrained": ""}}, r"^model\.pretrained = ''; allowed: a non-blank path or name, or null"),
    ({"data": {"key": " "}}, r"^data\.key = ' '; allowed: a non-blank path or name, or null \(leave the key out\)$"),
    ({"data": {"members": ""}}, r"^data\.members = ''; allowed: a non-blank path"),
    ({"data": {"path": "\t"}}, r"^data\.path = '\\t'; allowed: a non-blank path"),
    ({"train_sizes": {"a": 1}}, r"train_sizes has \{'a': 1\}; allowed: a list of values \(or one value\)$"),
    # a data.path without data.source trained on the bundled digits; data.key of a folder was ignored
    ({"data": {"path": "/data/ffhq64.h5"}}, r"^data\.path = '/data/ffhq64\.h5' is not read: data\.source = 'digits' "
     r"reads no files; allowed: a source that reads it \(folder, hdf5, npz, parquet"),
    ({"data": {"source": "folder", "path": "/imgs", "key": "images"}},
     r"^data\.key = 'images' is not read by data\.source = 'folder'; allowed: null \(a key names an array, dataset or "
     r"column for hdf5, npz, parquet"),
    ({"audit": {"canaries": 8}, "model": {**sweep_files.TINY["model"], "pretrained": "/x"}},
     r"^audit\.canaries = 8 with model\.pretrained: canaries are added to the training set of a target the sweep"),
])
def test_unusable_numbers_and_sizes_are_one_line(tmp_path, over, line):
    """Each of these passed the door and failed later: NaN / inf reached training or scoring (``not x > 0`` holds
    for inf), an int beyond 64 bits failed when a trial's Parquet rows were written, ``norm_num_groups: 0`` raised
    ZeroDivisionError, ``name: ..`` wrote the results beside the output folder, ``output: ''`` at /<name>, a grid
    axis given as a mapping raised TypeError, ``max_samples: true`` read as 1, ``num_cpus: 0`` started a Ray that
    could run nothing, and canaries were "included" in a given model that never saw them."""
    with pytest.raises(ConfigError, match=line) as e:
        load(tmp_path, **over)
    assert "\n" not in str(e.value)


def test_a_blank_store_is_refused_not_made_a_folder_named_blank(tmp_path):
    path = sweep_files.write_sweep(tmp_path / "s.yaml", " ")
    with pytest.raises(ConfigError, match=r"^store = ' '; allowed: a non-blank path or name, or null"):
        sweep_config.load(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_large_seeds_that_fit_64_bits_are_kept(tmp_path):
    cfg, _ = load(tmp_path, seeds=[2**40], attacks={"loss": {"steps": [0], "seed": -5}})
    assert cfg.seeds == [2**40] and cfg.attacks["loss"].params.seed == -5


def _raw(tmp_path, text: str) -> str:
    path = tmp_path / "raw.yaml"
    path.write_text("families: [ddpm]\ntrain_sizes: [64]\neval_size: 16\n" + text)
    return str(path)


def test_the_attacks_named_replace_the_default_loss(tmp_path):
    """``attacks: {pia: {}}`` also ran the default ``loss`` (omegaconf merged the two), and ``attacks: {}``, which
    names no attack, ran loss instead of being refused."""
    cfg, text = sweep_config.load(_raw(tmp_path, "attacks: {pia: {p: 2}}\n"))
    assert list(cfg.attacks) == ["pia"] and cfg.attacks["pia"].params.p == 2 and "loss" not in text
    cfg, _ = sweep_config.load(_raw(tmp_path, "attacks: {pia: null}\n"), ["attacks.sima.p=3"])
    assert list(cfg.attacks) == ["pia", "sima"]  # a dotted override adds to the sweep's attacks
    cfg, _ = sweep_config.load(_raw(tmp_path, "attacks: {loss: null}\n"), ["attacks={secmi: {}}"])
    assert list(cfg.attacks) == ["secmi"]  # a whole-value override replaces them
    for overrides in (["attacks={pia: {}}", "attacks={secmi: {}}"], ["attacks.pia.p=3", "attacks={secmi: {}}"]):
        cfg, _ = sweep_config.load(_raw(tmp_path, ""), overrides)  # in order: the last whole value replaces all
        assert list(cfg.attacks) == ["secmi"]  # (before session 12 the two were merged: pia ran too)
    assert list(sweep_config.load(_raw(tmp_path, ""))[0].attacks) == ["loss"]  # none named: the default
    with pytest.raises(ConfigError, match=r"^attacks is empty; allowed: (\w+, )*likelihood, lira, loss"):
        sweep_config.load(_raw(tmp_path, "attacks: {}\n"))


def test_a_number_for_a_list_of_steps_is_that_one_step(tmp_path):
    """``secmi: {t_sec: 100}`` (the authors' setting, and every config written before t_sec became a list) and
    ``loss: {steps: 50}`` mean one step; a boolean or a float there is still refused in one line."""
    cfg, _ = sweep_config.load(_raw(tmp_path, "attacks: {secmi: {t_sec: 100}, loss: {steps: 50}}\n"))
    assert cfg.attacks["secmi"].params.t_sec == [100] and cfg.attacks["loss"].params.steps == [50]
    assert sweep_config.load(_raw(tmp_path, "attacks: {secmi: null}\n"))[0].attacks["secmi"].params.t_sec == [
        100, 200, 300, 400]
    for bad in ("true", "100.5"):
        with pytest.raises(ConfigError, match=r"^attacks\.secmi\.t_sec.*") as e:
            sweep_config.load(_raw(tmp_path, f"attacks: {{secmi: {{t_sec: {bad}}}}}\n"))
        assert "\n" not in str(e.value)


def test_a_sweep_file_holding_a_list_is_one_line(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- families: [ddpm]\n- name: x\n")
    with pytest.raises(ConfigError, match=r"list\.yaml holds a list; allowed: a mapping of keys \(name:, data:"):
        sweep_config.load(str(path))


def test_an_epsilon_dp_sgd_cannot_reach_is_refused_with_the_config(tmp_path):
    """Opacus' calibration gives up past its largest noise ("The privacy budget is too low"): that was a
    ValueError inside the training task, after Ray had started. PRV reaches it (and is checked too: 1e-3 is
    beyond it); canaries need the pool (test_issue13_wiring)."""
    over = {"epsilons": [float("inf"), 0.1], "train": {**sweep_files.TINY["train"], "steps": 300}}
    line = (r"^epsilons has 0\.1: DP-SGD with the RDP accountant cannot reach it at dp\.delta = 1e-05 over 300 "
            r"steps on train_size 64 \(Opacus: The privacy budget is too low\.\); allowed: .*or dp\.accountant: prv$")
    with pytest.raises(ConfigError, match=line):
        load(tmp_path, **over)
    assert load(tmp_path, **over, dp={"accountant": "prv"})[0].epsilons == [float("inf"), 0.1]
    prv_line = r"^epsilons has 0\.001: DP-SGD with the PRV accountant cannot reach it .*fewer train\.steps$"
    with pytest.raises(ConfigError, match=prv_line):
        load(tmp_path, **{**over, "epsilons": [0.001]}, dp={"accountant": "prv"})
    assert load(tmp_path, epsilons=[0.5], train={**sweep_files.TINY["train"], "steps": 300})[0].epsilons == [0.5]


def test_the_slow_prv_check_at_the_door_says_so_first(tmp_path, caplog):
    """PRV's own calibration, run only where RDP cannot reach the epsilon, took minutes on small full-batch sets
    with nothing on the console: a line says what is being checked before the wait; none when RDP reaches it."""
    over = {"epsilons": [0.1], "train": {**sweep_files.TINY["train"], "steps": 300}, "dp": {"accountant": "prv"}}
    with caplog.at_level("WARNING", logger="mia_ray"):
        load(tmp_path, **over)
    assert [r.getMessage() for r in caplog.records] == [
        "epsilon 0.1 at delta 1e-05 over 300 steps on train_size 64: RDP cannot reach it; checking Opacus' PRV "
        "calibration (seconds to minutes)"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="mia_ray"):
        load(tmp_path, **{**over, "epsilons": [0.5]})
    assert not caplog.records


@pytest.mark.parametrize("name, reason", [
    ("", r"not a dotted module name"),  # importlib raised ValueError: a traceback
    (".relative", r"not a dotted module name"),  # TypeError
    ("mia_ray_broken_plugin_xyz", r"SyntaxError invalid syntax"),
    ("no_such_module_xyz", r"No module named 'no_such_module_xyz'"),
])
def test_plugins_that_cannot_be_imported_are_one_line(tmp_path, monkeypatch, name, reason):
    (tmp_path / "mia_ray_broken_plugin_xyz.py").write_text("def broken(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=rf"^plugins: cannot import '{re.escape(name)}' \({reason}.*\); allowed: "):
        load(tmp_path, plugins=[name])


def test_a_grid_axis_given_as_an_interpolation_of_one_value_is_a_one_point_grid(tmp_path):
    """``seeds: ${eval_size}`` ran seeds [16] on main (the file's axis was resolved, then listed); with the overrides
    merged one at a time it was refused as "key '?': int is not a ListConfig" (no key, nothing allowed). Now resolved
    on the merged sweep, so an override of the key it names counts, as for any other interpolation."""
    assert sweep_config.load(_raw(tmp_path, "seeds: ${eval_size}\n"))[0].seeds == [16]
    assert sweep_config.load(_raw(tmp_path, "seeds: ${eval_size}\n"), ["eval_size=8"])[0].seeds == [8]
    assert sweep_config.load(_raw(tmp_path, ""), ["seeds=${eval_size}"])[0].seeds == [16]
    assert sweep_config.load(_raw(tmp_path, "seeds: ${train_sizes}\n"))[0].seeds == [64]
    with pytest.raises(ConfigError, match=r"raw\.yaml: key 'seeds': Interpolation key 'nope' not found$"):
        sweep_config.load(_raw(tmp_path, "seeds: ${nope}\n"))
    with pytest.raises(ConfigError, match=r"^override 'seeds=\$\{name\}': .*'\w+'.* could not be converted to "
                                          r"Integer; allowed: a list of integers$"):
        sweep_config.load(_raw(tmp_path, "name: t\n"), ["seeds=${name}"])


def test_an_unresolvable_override_is_named_beside_an_interpolated_axis_of_the_file(tmp_path):
    """Where omegaconf names no key, the override to blame is found by resolving the sweep override by override;
    that search did not list a file's ``seeds: ${eval_size}``, so the file alone failed and was blamed."""
    with pytest.raises(ConfigError, match=r"^override 'family=\$\{data\}': Invalid type assigned"):
        sweep_config.load(_raw(tmp_path, "seeds: ${eval_size}\n"), ["train.lr=0.1", "family=${data}"])
