"""The door's size caps and late refusals (door3): sizes that exhaust memory (T, resolution, a UNet too large to
train), GPUs a local Ray cannot have, and an analysis folder without metric rows are each one line, before any
compute, with nothing written."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import sweep_files

from analysis.__main__ import main as analysis_main
from mia_ray import sweep_config
from mia_ray.config import ModelConfig
from mia_ray.errors import ConfigError
from mia_ray.models import build_unet, count_parameters
from mia_ray.preflight import check_local_gpus

ROOT = Path(__file__).resolve().parents[1]


load = sweep_files.load_sweep


@pytest.mark.parametrize("override, line", [
    ("family.num_steps=1099511627776", r"^family\.num_steps = 1099511627776; allowed: an integer in \[2, 100000\]$"),
    ("family.num_steps=100001", r"^family\.num_steps = 100001; allowed: an integer in \[2, 100000\]$"),
    ("family.num_steps=1", r"^family\.num_steps = 1; allowed: an integer in \[2, 100000\]$"),
    ("data.resolution=1048576", r"^data\.resolution = 1048576; allowed: an integer in \[4, 1024\]$"),
    ("data.resolution=1025", r"^data\.resolution = 1025; allowed: an integer in \[4, 1024\]$"),
    ("model.block_out_channels=[65536,65536]", r"^model\.block_out_channels = \[65536, 65536\] with "
     r"model\.layers_per_block = 1 make a UNet of over 3\.87e\+10 parameters; allowed: at most 2e\+09"),
    ("model.block_out_channels=[4611686018427387904,4611686018427387904]",  # overflowed torch's size arithmetic
     r"^model\.block_out_channels = \[4611686018427387904, 4611686018427387904\] .* parameters; allowed: at most"),
    ("model.block_out_channels=[512,1024,2048,4096]",  # each level fits, the sum does not: counted on meta
     r"^model\.block_out_channels = \[512, 1024, 2048, 4096\] with model\.layers_per_block = 1 make a UNet of "
     r"2\.47e\+09 parameters; allowed: at most 2e\+09 \(lower the channels or layers per block\)$"),
    ("model.layers_per_block=17", r"^model\.layers_per_block = 17; allowed: an integer in \[1, 16\]$"),
])
def test_sizes_that_exhaust_memory_are_refused_at_the_door(tmp_path, override, line):
    with pytest.raises(ConfigError, match=line) as e:
        load(tmp_path, [override])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("override", ["family.num_steps=100000", "data.resolution=1024", "model.layers_per_block=16"])
def test_the_caps_themselves_are_allowed(tmp_path, override):
    over = {"attacks": {"loss": {"steps": [0, 50]}}}
    if override.startswith("data.resolution"):
        over["model"] = {**sweep_files.TINY["model"]}
    cfg, _ = load(tmp_path, [override], **over)
    assert cfg is not None


def test_parameters_are_counted_without_allocating_and_match_the_built_unet():
    """The meta-device count equals the real network's (a small one is built for real to compare)."""
    small = ModelConfig(block_out_channels=[8, 16], layers_per_block=1, norm_num_groups=8, attention=True)
    real = sum(p.numel() for p in build_unet(small, 8, 3).parameters())
    assert count_parameters(small, 3) == real
    full = sweep_config.load(str(ROOT / "sweeps" / "full_paper.yaml"))[0]
    assert count_parameters(full.model, full.data.channels) == 35_746_307  # the paper's 35.7M DDPM UNet


def test_every_shipped_sweep_passes_the_size_caps():
    for path in sorted((ROOT / "sweeps").glob("*.yaml")):
        if path.name == "pretrained.yaml":  # placeholders for the user's files: refused by design
            continue
        cfg, _ = sweep_config.load(str(path))
        assert cfg.family.num_steps <= sweep_config.MAX_NUM_STEPS, path


def test_a_unet_diffusers_cannot_build_is_one_line(monkeypatch):
    from mia_ray import models

    def refuse(*a, **k):
        raise ValueError("Must provide the same number of `block_out_channels`\nas `down_block_types`.")

    monkeypatch.setattr(models, "build_unet", refuse)
    with pytest.raises(ConfigError, match=r"^model\.block_out_channels = \[8, 16\] with model\.layers_per_block = 1, "
                       r"model\.attention = False, model\.norm_num_groups = 8: diffusers cannot build this UNet2DModel "
                       r"\(ValueError: Must provide the same number of `block_out_channels` as `down_block_types`\.\)$"):  # noqa: E501
        count_parameters(ModelConfig(block_out_channels=[8, 16]), 3)


@pytest.mark.parametrize("channels, groups", [([4, 4], 4), ([1], 1)])
def test_attention_on_a_level_narrower_than_one_head_is_refused(tmp_path, channels, groups):
    """diffusers built it, and its first forward pass raised ZeroDivisionError (0 heads): training had started."""
    over = [f"model.block_out_channels={channels}".replace(" ", ""), f"model.norm_num_groups={groups}",
            "model.attention=true"]
    with pytest.raises(ConfigError, match=rf"^model\.block_out_channels = {re.escape(str(channels))} with "
                       r"model\.attention = true: the last level has \d channels; allowed: at least 8"):
        load(tmp_path, over)
    load(tmp_path, over[:2])  # without attention it trains


# --- GPUs a local Ray cannot have -------------------------------------------------------------------------


def resources(**kw):
    base = {"scorer_gpus": None, "train_gpus": None}
    return SimpleNamespace(**{**base, **kw})


@pytest.mark.parametrize("kw, count, line", [
    ({"train_gpus": 1.0}, 0, r"^resources\.train_gpus = 1 can never be satisfied: the local Ray has 0 GPU\(s\) "),
    ({"scorer_gpus": 0.5}, 0, r"^resources\.scorer_gpus = 0\.5 can never be satisfied: the local Ray has 0 GPU"),
    ({"scorer_gpus": 3.0}, 2, r"^resources\.scorer_gpus = 3 can never be satisfied: the local Ray has 2 GPU\(s\)"),
])
def test_more_gpus_than_this_machine_has_are_refused(kw, count, line):
    with pytest.raises(ConfigError, match=line) as e:
        check_local_gpus(resources(**kw), count)
    assert "allowed: at most" in str(e.value) and "--address" in str(e.value)


@pytest.mark.parametrize("kw, count", [({}, 0), ({"scorer_gpus": 0.0, "train_gpus": 0.0}, 0),
                                       ({"scorer_gpus": 0.5, "train_gpus": 1.0}, 1)])
def test_gpus_this_machine_has_or_auto_pass(kw, count):
    check_local_gpus(resources(**kw), count)


def test_cli_refuses_local_gpus_before_ray_starts_and_keeps_a_cluster_address(tmp_path, capfd, monkeypatch):
    """Refused only after a local Ray had started; with an address (a cluster may have GPU nodes) it is not
    checked here (the address then fails to answer: a different line, still before Ray)."""
    import torch

    from mia_ray.sweep import main

    monkeypatch.setenv("RAY_ADDRESS", "")
    too_many = torch.cuda.device_count() + 1
    sweep = sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"))
    capfd.readouterr()
    assert main([sweep, "--output", str(tmp_path / "out"), f"resources.train_gpus={too_many}"]) == 2
    lines = capfd.readouterr().err.splitlines()
    assert len(lines) == 1 and re.match(
        rf"^error: resources\.train_gpus = {too_many} can never be satisfied: the local Ray has", lines[0]), lines
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
    assert not (tmp_path / "out").exists()
    args = [sweep, "--output", str(tmp_path / "out"), f"resources.train_gpus={too_many}", "--address", "127.0.0.1:1"]
    assert main(args) == 2
    lines = capfd.readouterr().err.splitlines()
    assert len(lines) == 1 and "no Ray cluster answers there" in lines[0], lines


# --- python -m analysis on folders without metric rows ------------------------------------------------------


def _empty_table(folder: Path, table: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mia_ray.results import SCHEMAS

    folder.joinpath(table).mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([], schema=SCHEMAS[table]), folder / table / "t0.parquet")


def _zero_rows(tmp):
    _empty_table(tmp / "r", "metrics")
    return r"metrics/ holds 1 Parquet file\(s\) but no rows; expected the results of a finished sweep"


def _scores_only(tmp):
    _empty_table(tmp / "r", "scores")
    return r"no metrics/\*\.parquet .*; it has scores/ but no metrics/: no trial finished"


def _no_parquet(tmp):
    (tmp / "r" / "metrics").mkdir(parents=True)
    (tmp / "r" / "metrics" / "notes.txt").write_text("x")
    return r"is not a mia_ray results directory: no metrics/\*\.parquet \(expected metrics/, scores/"


def _missing(tmp):
    return r"^error: results directory not found: "


@pytest.mark.parametrize("case", [_zero_rows, _scores_only, _no_parquet, _missing])
def test_analysis_of_a_folder_without_metric_rows_is_one_line_and_writes_nothing(tmp_path, capsys, case):
    """Zero metric rows wrote an empty report.html and exited 0."""
    pattern = case(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    assert analysis_main([str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and re.search(pattern, err), err
    assert str(tmp_path / "r") in err
    assert sorted(tmp_path.rglob("*")) == before


# --- the adversarial pass: each of these passed the door, or was refused naming the wrong thing -------------


@pytest.mark.parametrize("override, line", [
    ("bootstrap=1000000000000", r"^bootstrap = 1000000000000; allowed: an integer in \[0, 100000\] \(0 = no CIs\)$"),
    ("utility.samples=1000000000000", r"^utility\.samples = 1000000000000; allowed: an integer in \[4, 50000\]$"),
    ("attacks.loss.draws=1000000000", r"^attacks\.loss\.draws = 1000000000; allowed: an integer in \[1, 1000\]$"),
    ("attacks={lira: {draws: 1001}}", r"^attacks\.lira\.draws = 1001; allowed: an integer in \[1, 1000\]$"),
    ("attacks={likelihood: {probes: 1000000000}}",
     r"^attacks\.likelihood\.probes = 1000000000; allowed: an integer in \[1, 64\]$"),
])
def test_late_costs_without_bound_are_capped(tmp_path, override, line):
    """Each ran out of memory (or for days) after training: the write step's CIs, the utility's DDIM samples held
    at once, the loss attack's flat samples x steps x draws work lists, the likelihood's probes of a batch."""
    with pytest.raises(ConfigError, match=line):
        load(tmp_path, [override])


@pytest.mark.parametrize("override, line", [
    # YAML needs a space after ':' in a flow mapping: the message blamed the sweep file ("cannot read the sweep")
    ("attacks={pia:{steps:[1000]}}", r"^override 'attacks=\{pia:\{steps:\[1000\]\}\}': cannot parse its value \("),
    ("train_sizes=[1,2", r"^override 'train_sizes=\[1,2': cannot parse its value \(while parsing a flow sequence"),
    # no '=': a second YAML path or a typo read as key: null ("key 'sweeps/other' not in SweepConfig")
    ("sweeps/other.yaml", r"^override 'sweeps/other\.yaml': allowed: key=value, e\.g\. train\.steps=100"),
    ("=3", r"^override '=3': allowed: key=value"),
    ("a..b=3", r"^override 'a\.\.b=3': allowed: key=value"),
    # an index: omegaconf read seeds[0]=5 as {'0': 5}, model.block_out_channels[1]=32 as "cannot read the sweep"
    ("seeds[0]=5", r"^override 'seeds\[0\]=5': an item of a list cannot be set alone; allowed: the whole list, "
     r"e\.g\. seeds=\[\.\.\.\]$"),
    ("model.block_out_channels[1]=32", r"^override 'model\.block_out_channels\[1\]=32': an item of a list"),
])
def test_a_bad_override_is_named_not_the_sweep_file(tmp_path, override, line):
    with pytest.raises(ConfigError, match=line) as e:
        load(tmp_path, [override])
    assert "s.yaml" not in str(e.value) and "\n" not in str(e.value)
    cfg, _ = load(tmp_path, ["attacks={pia: {steps: [10, 20]}}", "seeds=[5]"])  # with spaces, the whole list: read
    assert cfg.attacks["pia"].params.steps == [10, 20] and cfg.seeds == [5]


def test_a_folder_given_as_the_sweep_file_is_named_a_folder(tmp_path):
    with pytest.raises(ConfigError, match=rf"^sweep file '{re.escape(str(tmp_path))}' is a folder, not a file; "):
        sweep_config.load(str(tmp_path))


@pytest.mark.parametrize("flags", [["--estimate"], ["--estimate-from", "timings.json"]])
def test_estimate_with_dry_run_is_refused_not_silently_dropped(tmp_path, capsys, flags):
    """--dry-run won: the plan was printed without the estimate that was asked for, exit 0."""
    from mia_ray.sweep import main

    sweep = sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"))
    assert main([sweep, "--dry-run", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flags[0]} with --dry-run: allowed: one of them") and err.count("\n") == 1, err


def test_analysis_refuses_empty_paths_and_an_out_inside_a_results_table(tmp_path, capsys):
    """'' read the current folder; --out '' wrote to the default folder; --out inside metrics/ put CSV / PNG /
    HTML files among the Parquet files that readers of the table as a dataset take for Parquet."""
    from test_analysis_fixture import build_results

    root = build_results(str(tmp_path / "fixture"))
    before = sorted(Path(root).rglob("*"))
    for argv, line in [
        ([""], "error: results_dir ''; allowed: a sweep's results directory <output>/<sweep name>/"),
        ([root, "--out", ""], "error: --out ''; allowed: a folder path (default: RESULTS_DIR/report)"),
        ([root, "--out", f"{root}/metrics"], f"error: --out {root}/metrics is inside the results table {root}/metrics"),
        ([root, "--out", f"{root}/scores/x"], f"error: --out {root}/scores/x is inside the results table {root}/"),
    ]:
        assert analysis_main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(line) and err.count("\n") == 1, err
    assert sorted(Path(root).rglob("*")) == before


@pytest.mark.parametrize("name", ["a\x00b", "a\nb", "a\tb", " ", "x" * 256, "é" * 128])
def test_a_name_that_cannot_be_a_folder_is_refused(tmp_path, name):
    """A NUL failed at the first write (after Ray had started), 256 bytes with ENAMETOOLONG; a newline or a tab
    split the one-line messages that name the results folder; a blank name made a folder ' '."""
    with pytest.raises(ConfigError, match=r"^name = .*; allowed: a non-empty folder name \(at most 255 bytes\)"):
        load(tmp_path, name=name)
    load(tmp_path, name="é" * 127)  # 254 bytes: a folder name


@pytest.mark.parametrize("bad, problem", [
    ("a\x00b", r"holds a NUL character; allowed: a folder path$"),
    ("x" * 256 + "/r", r"^x{24}\.\.\. is 256 bytes long; allowed: folder names of at most 255 bytes$"),
])
def test_output_store_and_out_paths_that_cannot_be_folders_are_refused(tmp_path, capsys, bad, problem):
    """Both passed folder_problem (os.path.exists is False for them) and failed at the first write."""
    from mia_ray.results import folder_problem
    from mia_ray.sweep import main

    path = str(tmp_path / bad)
    assert re.search(problem, folder_problem(path)), folder_problem(path)
    for key in ("output", "store"):  # in the YAML (an override with a NUL is refused by YAML itself, named)
        sweep = sweep_files.write_sweep(tmp_path / "s.yaml", path if key == "store" else str(tmp_path / "store"),
                                        **({"output": path} if key == "output" else {}))
        assert main([sweep, "--dry-run"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {key}: ") and err.count("\n") == 1, err
    assert analysis_main([str(tmp_path), "--out", path]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {path}: ") and err.count("\n") == 1, err


@pytest.mark.parametrize("overrides, last_beta", [
    (["family.num_steps=10"], "2"),  # the default beta_max 20 over 10 steps: a NaN ladder, trained on
    (["family.num_steps=20"], "1"),  # alpha_bar ends at 0: -log(alpha_bar) = inf in the likelihood's drift
    (["families=[vpsde,ddpm]", "family.beta_max=1000"], "1"),
])
def test_a_ddpm_ladder_with_a_beta_of_1_or_more_is_refused(tmp_path, overrides, last_beta):
    steps = ["attacks.loss.steps=[0,5]", "utility.sampler_steps=5"]
    with pytest.raises(ConfigError, match=rf"^family\.beta_max = \d+ with family\.num_steps = \d+: ddpm's last beta "
                       rf"beta_max / num_steps = {last_beta}; allowed: beta_max < num_steps$"):
        load(tmp_path, overrides + steps)
    load(tmp_path, ["families=[vpsde]", *overrides[-1:], *steps])  # a continuous VP schedule takes any beta_max
    load(tmp_path, ["family.num_steps=21", *steps])  # 20 / 21 < 1


def test_a_ddpm_ladder_of_two_steps_is_one_line_not_a_traceback(tmp_path):
    """num_steps 2 passes the shared check (>= 2) but DDPM's ladder slope (torch.gradient, edge_order 2) needs 3
    steps: Family.check building it raised RuntimeError, a traceback at the door (the pretrained path too, from a
    DDPMScheduler of num_train_timesteps 2)."""
    steps = ["attacks.loss.steps=[0,1]", "utility.sampler_steps=2", "family.num_steps=2", "family.beta_max=1.5"]
    with pytest.raises(ConfigError, match=r"^family\.num_steps = 2: ddpm's ladder needs at least 3 steps; allowed: "
                       r"an integer >= 3 for ddpm$") as e:
        load(tmp_path, steps)
    assert "\n" not in str(e.value)
    load(tmp_path, ["families=[vpsde,vesde,smld]", *steps])  # the other families take 2 steps
    load(tmp_path, [*steps[:2], "family.num_steps=3", "family.beta_max=1.5"])


@pytest.mark.parametrize("eps, shown", [("1.0e+300", "1e+300"), ("1.0e+14", "100000000000000.0"),
                                        ("1000001.0", "1000001.0")])
def test_a_finite_epsilon_beyond_the_cap_is_refused_not_hung_on(tmp_path, eps, shown):
    """At ε >= 1e14 the door's budget check (Opacus' noise search) never returned."""
    line = rf"^epsilons has {re.escape(shown)}; allowed: numbers in \(0, 1e\+06\], or inf for no DP$"
    with pytest.raises(ConfigError, match=line):
        load(tmp_path, [f"epsilons=[{eps}]"])
    cfg, _ = load(tmp_path, ["epsilons=[1.0e+6,.inf]"])
    assert cfg.epsilons == [1e6, float("inf")]


@pytest.mark.parametrize("tail, said", [
    ("train: {steps: 5}\ntrain: {steps: 6}\n", r"found duplicate key train in \"\S+s\.yaml\", line \d+"),
    ("\ttrain: {steps: 5}\n", r"found a tab character .* line \d+"),
])
def test_a_yaml_syntax_error_names_the_key_and_line(tmp_path, tail, said):
    """Only yaml's first line was shown ("while constructing a mapping"): which key, which line?"""
    path = Path(sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store")))
    path.write_text(path.read_text() + tail)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: cannot read the sweep: .*{said}") as e:
        sweep_config.load(str(path))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("overrides, said", [
    (["families=[vesde]", "family.sigma_max=1e200"], r"the vesde noise std at step \d+ is inf in float32"),
    (["families=[smld]", "family.sigma_max=1e150"], r"the smld noise std at step \d+ is inf in float32"),
    (["families=[vesde]", "family.sigma_min=1e-300"], r"the vesde noise std at step 0 is 0 in float32"),
    (["families=[vpsde]", "family.beta_min=1e-300", "family.beta_max=1e-299"],
     r"the vpsde noise std at step 0 is 0 in float32"),
    (["family.beta_min=1e-5"], r"the ddpm noise std at step 0 is 0 in float32"),  # beta_1 = 1e-8: 1 - beta_1 == 1
])
def test_a_schedule_with_a_zero_or_infinite_noise_level_is_refused(tmp_path, overrides, said):
    """sigma_max 1e200 raised OverflowError in training, 1e150 gave an infinite diffusion, a std of 0 an infinite
    score (the score divides by it): each family builds its schedule at the door (Family.check)."""
    with pytest.raises(ConfigError, match=rf"^family\.\w+ = .* with family\.num_steps = 1000: {said}; allowed: values "
                       r"whose noise levels are positive and finite in float32 \(the defaults: "):
        load(tmp_path, overrides)
    load(tmp_path, ["families=[ddpm,vpsde,smld,vesde]"])  # the defaults of every family pass


def test_plugins_flag_without_list_is_refused_not_ignored(tmp_path, capsys):
    from mia_ray.sweep import main

    sweep = sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"))
    assert main([sweep, "--dry-run", "--plugins", "mia_ray_test_plugins"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: --plugins mia_ray_test_plugins works with --list only; a sweep imports its plugins: key "
                   "(in the YAML, or plugins=[mia_ray_test_plugins] as an override)\n"), err


@pytest.mark.parametrize("name", ["a: b", "null", "[x]", "#x", "*x"])
def test_output_flag_is_a_path_not_yaml(tmp_path, capsys, name):
    """--output went through YAML: 'null' was refused as None, 'a: b' as a mapping, '#x' as a comment."""
    from mia_ray.sweep import main

    sweep = sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"))
    assert main([sweep, "--dry-run", "--output", str(tmp_path / name)]) == 0
    assert f"results: {tmp_path / name}/t " in capsys.readouterr().out
