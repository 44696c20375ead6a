"""The door's fourth adversarial pass (door4): attack parameters and list / mapping keys of the wrong shape, and
ODE tolerances that crash or never finish, each one line naming the key before any compute (no Ray)."""

from __future__ import annotations

import re

import pytest
import sweep_files

from analysis.__main__ import main as analysis_main
from mia_ray.errors import ConfigError

load = sweep_files.load_sweep


@pytest.mark.parametrize("override, line", [
    # a nested list or a mapping inside a list of integers reached a comparison: TypeError traceback
    ("attacks={loss: {steps: [[1]]}}", r"^attacks\.loss\.steps has \[1\]; allowed: a list of integers$"),
    ("attacks={loss: {steps: [{a: 1}]}}", r"^attacks\.loss\.steps has \{'a': 1\}; allowed: a list of integers$"),
    ("attacks={lira: {steps: [[50]]}}", r"^attacks\.lira\.steps has \[50\]; allowed: a list of integers$"),
    ("attacks={secmi: {t_sec: [[100]]}}", r"^attacks\.secmi\.t_sec has \[100\]; allowed: a list of integers$"),
    ("attacks={pia: {steps: [[10]]}}", r"^attacks\.pia\.steps has \[10\]; allowed: a list of integers$"),
    ("model.block_out_channels=[[16]]", r"^model\.block_out_channels has \[16\]; allowed: a list of integers$"),
])
def test_a_list_of_integers_holding_a_list_is_one_line(tmp_path, override, line):
    with pytest.raises(ConfigError, match=line):
        load(tmp_path, [override])


@pytest.mark.parametrize("over, line", [
    # a mapping where a list belongs (and back): "cannot read the sweep: Cannot merge incompatible container
    # types" named the file but not the key; under an attack it was a TypeError traceback
    ({"attacks": {"pia": {"steps": {"a": 1}}}},
     r"s\.yaml: attacks\.pia\.steps = \{'a': 1\}; allowed: a list \(e\.g\. \[10, 20\]\)$"),
    ({"resources": {"node_types": [1]}},
     r"s\.yaml: resources\.node_types = \[1\]; allowed: a mapping \(e\.g\. \{key: value\}\)$"),
    ({"model": {"block_out_channels": {"a": 1}}},
     r"s\.yaml: model\.block_out_channels = \{'a': 1\}; allowed: a list \(e\.g\. \[10, 20\]\)$"),
    ({"plugins": {"a": 1}}, r"s\.yaml: plugins = \{'a': 1\}; allowed: a list \(e\.g\. \[10, 20\]\)$"),
    ({"attacks": {"loss": [1]}}, r"s\.yaml: attacks\.loss = \[1\]; allowed: a mapping of its parameters, or null"),
])
def test_a_mapping_where_a_list_belongs_names_the_key(tmp_path, over, line):
    with pytest.raises(ConfigError, match=line) as e:
        load(tmp_path, **over)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("override, line", [
    # every override error starts "override 'key=value': " (door7: these said "override key = ...")
    ("attacks.pia.steps={a: 1}",
     r"^override 'attacks\.pia\.steps=\{a: 1\}': attacks\.pia\.steps = \{'a': 1\}; allowed: a list \(e\.g\. "
     r"\[10, 20\]\)$"),
    ("resources.node_types=[1]",
     r"^override 'resources\.node_types=\[1\]': resources\.node_types = \[1\]; allowed: a mapping"),
    # a scalar: "sweeps/s.yaml: key 'resources.node_types': Cannot assign int to Dict[Any, Any]"
    ("resources.node_types=5",
     r"^override 'resources\.node_types=5': resources\.node_types = 5; allowed: a mapping \(e\.g\. \{key: value\}\)$"),
    ("plugins=a", r"^override 'plugins=a': plugins = 'a'; allowed: a list \(e\.g\. \[10, 20\]\)$"),
    ("attacks.loss=[1]",
     r"^override 'attacks\.loss=\[1\]': attacks\.loss = \[1\]; allowed: a mapping of its parameters, or null"),
])
def test_an_override_of_the_wrong_container_names_the_override(tmp_path, override, line):
    with pytest.raises(ConfigError, match=line) as e:
        load(tmp_path, [override])
    assert "s.yaml" not in str(e.value)


@pytest.mark.parametrize("override, shown", [
    # 1e300 / 1e39 overflowed float32 (IndexError in the solver at scoring time); 1e-300 underflowed to 0 (the
    # same IndexError); 1e-10 ran over a minute for 2 samples of the tiny test UNet without finishing
    ("attacks.likelihood.rtol=1e300", "rtol = 1e+300"),
    ("attacks.likelihood.rtol=1e39", "rtol = 1e+39"),
    ("attacks.likelihood.atol=1.0", "atol = 1.0"),
    ("attacks.likelihood.atol=1e-300", "atol = 1e-300"),
    ("attacks.likelihood.rtol=1e-10", "rtol = 1e-10"),
    ("attacks.likelihood.rtol=0", "rtol = 0.0"),
    ("attacks.likelihood.atol=-1e-3", "atol = -0.001"),
])
def test_ode_tolerances_that_crash_or_never_finish_are_refused(tmp_path, override, shown):
    with pytest.raises(ConfigError, match=rf"^attacks\.likelihood\.{re.escape(shown)}; allowed: a number in "
                                          r"\[1e-08, 1\) "):
        load(tmp_path, [override], attacks={"likelihood": {}})


@pytest.mark.parametrize("tol", ["1e-8", "0.5", "1e-3"])
def test_ode_tolerances_in_range_pass(tmp_path, tol):
    cfg, _ = load(tmp_path, [f"attacks.likelihood.rtol={tol}", f"attacks.likelihood.atol={tol}"],
                  attacks={"likelihood": {}})
    assert cfg.attacks["likelihood"].params.rtol == float(tol)


@pytest.mark.parametrize("table", ["metrics", "scores"])
def test_analysis_of_a_table_that_is_a_file_is_one_line(tmp_path, capsys, table):
    """metrics/ (or another table) as a plain file: NotADirectoryError traceback from pyarrow's listing."""
    root = tmp_path / "r"
    root.mkdir()
    (root / table).write_text("x")
    before = sorted(tmp_path.rglob("*"))
    assert analysis_main([str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert f"{root / table} is not a folder" in err
    assert sorted(tmp_path.rglob("*")) == before


def test_all_steps_ignores_the_default_steps_it_overrides(tmp_path):
    """``all_steps: true`` scores 0..T-1 and ignores ``steps``, yet T = 100 was refused for the default steps
    (``attacks.loss.steps has [100, 200, ...] outside the allowed range 0..99``), a key the user never set."""
    cfg, _ = load(tmp_path, ["family.num_steps=100", "utility.sampler_steps=50"], attacks={"loss": {"all_steps": True}})
    assert cfg.attacks["loss"].params.all_steps
    with pytest.raises(ConfigError, match=r"^attacks\.loss\.steps has \[100\] outside the allowed range 0\.\.99$"):
        load(tmp_path, ["family.num_steps=100", "utility.sampler_steps=50"], attacks={"loss": {"steps": [0, 100]}})


@pytest.mark.parametrize("key", ["output", "store"])
@pytest.mark.parametrize("uri", ["s3://", "gs:///", "file:///"])
def test_a_uri_without_a_bucket_or_folder_is_refused(tmp_path, key, uri):
    """``output=s3://`` lost its '//' when the sweep name was joined (``s3:/<name>``, no longer a URI): the results
    went to a local folder named 's3:' under the current one, past every check of remote outputs."""
    with pytest.raises(ConfigError, match=rf"^{key} = '{re.escape(uri)}'; allowed: a folder path or a URI that names "
                                          r"a bucket or folder, such as s3://bucket/prefix$"):
        load(tmp_path, [f"{key}={uri}"])
    cfg, _ = load(tmp_path, [f"{key}=s3://bucket/prefix"])
    assert getattr(cfg, key) == "s3://bucket/prefix"


@pytest.mark.parametrize("override, line", [
    # all_steps at T = 100000 with 1000 draws: 1e8 rows per sample; the work lists of 8 samples asked the allocator
    # for 6.4 GB each at scoring time (64 samples: 51 GB), after training
    ("attacks={loss: {all_steps: true, draws: 1000}}",
     r"^attacks\.loss: 100000 steps \(all_steps\) x draws = 1000 is 1e\+08 noise draws per sample; allowed: at most "
     r"1e\+06 \(fewer steps or draws\)$"),
    ("attacks={lira: {steps: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], draws: 100000}}",
     r"^attacks\.lira\.draws = 100000; allowed: an integer in \[1, 1000\]$"),
])
def test_the_loss_work_list_of_steps_times_draws_is_capped(tmp_path, override, line):
    with pytest.raises(ConfigError, match=line):
        load(tmp_path, ["family.num_steps=100000", override])
    cfg, _ = load(tmp_path, ["family.num_steps=1000", "attacks={loss: {all_steps: true, draws: 1000}}"])
    assert cfg.attacks["loss"].params.draws == 1000  # the point MAX_DRAWS was measured at still passes


@pytest.mark.parametrize("entry, make", [("metrics", "file"), ("scores", "file"), ("sweep.yaml", "folder"),
                                         ("report", "file")])
def test_a_results_folder_whose_tables_cannot_be_written_is_refused_before_ray(tmp_path, entry, make):
    """metrics/ as a file passed the door (the results folder itself was writable): the trial trained and scored,
    then failed writing its rows; sweep.yaml as a folder failed once Ray had started."""
    from mia_ray.preflight import check_writable

    root = tmp_path / "out" / "t"
    root.mkdir(parents=True)
    (root / entry).mkdir() if make == "folder" else (root / entry).write_text("x")
    cfg, _ = load(tmp_path, [f"output={tmp_path / 'out'}"])
    what = "is a folder, not a file" if make == "folder" else "is a file, not a folder"
    with pytest.raises(ConfigError, match=rf"^output: {re.escape(str(root / entry))} {what}; allowed: "):
        check_writable(cfg)
    (root / entry).rmdir() if make == "folder" else (root / entry).unlink()
    check_writable(cfg)


def test_a_continuous_schedule_broken_by_eps_names_family_eps(tmp_path):
    """vpsde at family.eps = 1e-300 has a std of 0 at step 0 (its time is clamped at eps): the line named only
    beta_min and beta_max, whose defaults it then listed as the way out."""
    with pytest.raises(ConfigError, match=r"^family\.beta_min = 0\.1, family\.beta_max = 20, family\.eps = 1e-300 with "
                                          r"family\.num_steps = 1000: the vpsde noise std at step 0 is 0 in float32; "
                                          r"allowed: .*\(the defaults: beta_min = 0\.1, beta_max = 20, eps = 1e-05\)$"):
        load(tmp_path, ["families=[vpsde]", "family.eps=1e-300"])


@pytest.mark.parametrize("refs", [1026, 100000])
def test_lira_references_are_capped(tmp_path, refs):
    """Each reference is a model trained with the target's recipe: 100000 passed and would have trained them all."""
    with pytest.raises(ConfigError, match=rf"^attacks\.lira\.references = {refs}; allowed: an even integer in "
                                          r"\[2, 1024\]$"):
        load(tmp_path, [f"attacks={{lira: {{references: {refs}}}}}"])
    assert load(tmp_path, ["attacks={lira: {references: 1024}}"])[0].attacks["lira"].params.references == 1024


@pytest.mark.parametrize("attack", ["pia", "pian", "sima"])
@pytest.mark.parametrize("p", [1e300, 1e-300, 0, -1])
def test_the_p_norm_exponent_is_bounded(tmp_path, attack, p):
    """|d|^p summed in float64: p = 1e300 overflowed and p = 1e-300 made every |d|^p exactly 1, and both finished
    at AUC 0.5 instead of refusing."""
    with pytest.raises(ConfigError, match=rf"^attacks\.{attack}\.p = {re.escape(str(float(p)))}; allowed: a number "
                                          r"in \[0\.01, 64\]$"):
        load(tmp_path, [f"attacks={{{attack}: {{p: {p}}}}}"])
