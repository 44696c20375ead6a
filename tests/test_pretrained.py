"""A given diffusers pipeline as a target (issue 14 item 3): the scheduler maps to the family with the same
schedule, the UNet loads, and the loss attack on given member / non-member arrays finds the members."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_spec
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, EulerDiscreteScheduler, ScoreSdeVeScheduler

from mia_ray.attacks import ATTACKS, DiffusionAdapter
from mia_ray.attacks.loss import LossParams
from mia_ray.config import DataConfig
from mia_ray.data.given import given_split, open_given
from mia_ray.errors import ConfigError
from mia_ray.families import make_family
from mia_ray.metrics import auc, summarize
from mia_ray.pretrained import family_from_scheduler, load_pipeline_unet, pipeline_family
from mia_ray.training.train import train_target


def config_of(scheduler) -> dict:
    return {"_class_name": type(scheduler).__name__, **scheduler.config}


@pytest.mark.parametrize("cls", [DDPMScheduler, DDIMScheduler])
@pytest.mark.parametrize("t, b0, b1", [(1000, 1e-4, 0.02), (200, 5e-4, 0.05)])
def test_linear_beta_schedulers_map_to_ddpm_with_the_same_alphas(cls, t, b0, b1):
    sched = cls(num_train_timesteps=t, beta_start=b0, beta_end=b1, beta_schedule="linear")
    fam = family_from_scheduler(config_of(sched))
    assert (fam.name, fam.num_steps) == ("ddpm", t)
    assert fam.beta_min == pytest.approx(b0 * t) and fam.beta_max == pytest.approx(b1 * t)
    ours = make_family(fam).alphas_cumprod.numpy()
    np.testing.assert_allclose(ours, sched.alphas_cumprod.double().numpy(), rtol=0, atol=1e-6)


def test_score_sde_ve_maps_to_vesde_or_smld_with_the_same_sigmas():
    sched = ScoreSdeVeScheduler(num_train_timesteps=300, sigma_min=0.02, sigma_max=40.0, sampling_eps=1e-4)
    fam = family_from_scheduler(config_of(sched))
    assert (fam.name, fam.num_steps, fam.sigma_min, fam.sigma_max, fam.eps) == ("vesde", 300, 0.02, 40.0, 1e-4)
    smld = family_from_scheduler(config_of(sched), "smld")
    sched.set_sigmas(300)
    np.testing.assert_allclose(make_family(smld).sigmas.numpy(), sched.discrete_sigmas.double().numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    "config, name, match",
    [
        (config_of(EulerDiscreteScheduler()), None,
         r"^model\.pretrained: scheduler 'EulerDiscreteScheduler' is not supported; allowed: DDIMScheduler, "),
        ({"_class_name": "DDPMScheduler", "beta_schedule": "squaredcos_cap_v2"}, None,
         r"DDPMScheduler with 'squaredcos_cap_v2' betas is not supported; allowed: beta_schedule 'linear'"),
        ({"_class_name": "DDPMScheduler", "prediction_type": "v_prediction"}, None, r"prediction_type 'v_prediction'"),
        ({"_class_name": "DDPMScheduler", "trained_betas": [0.1, 0.2]}, None, r"explicit trained_betas"),
        (config_of(DDPMScheduler()), "vpsde", r"^families = \['vpsde'\] does not match .* allowed: ddpm$"),
        ({}, None, r"scheduler None is not supported"),
        # these raised ValueError / TypeError tracebacks, or read 999.7 steps as 999 and an infinite sigma as one
        ({"_class_name": "DDPMScheduler", "num_train_timesteps": "abc"}, None,
         r"^model\.pretrained: DDPMScheduler num_train_timesteps = 'abc'; allowed: an integer$"),
        ({"_class_name": "DDIMScheduler", "num_train_timesteps": None}, None, r"num_train_timesteps = None; allowed"),
        ({"_class_name": "DDPMScheduler", "num_train_timesteps": 999.7}, None, r"timesteps = 999\.7; allowed"),
        ({"_class_name": "DDPMScheduler", "beta_start": [1]}, None, r"beta_start = \[1\]; allowed: a finite number$"),
        ({"_class_name": "DDPMScheduler", "beta_end": True}, None, r"beta_end = True; allowed: a finite number$"),
        ({"_class_name": "ScoreSdeVeScheduler", "sigma_max": "inf"}, None,
         r"^model\.pretrained: ScoreSdeVeScheduler sigma_max = 'inf'; allowed: a finite number$"),
    ],
)
def test_unknown_or_unreproducible_schedules_are_refused_with_one_line(config, name, match):
    with pytest.raises(ConfigError, match=match) as e:
        family_from_scheduler(config, name)
    assert "\n" not in str(e.value)


def test_missing_scheduler_config_is_refused(tmp_path):
    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"has no scheduler/scheduler_config\.json"):
        pipeline_family(str(tmp_path))


# --- end to end: a small pipeline over-fitted on 64 digits, saved, loaded and attacked -------------------------


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().images / 16 * 2 - 1).astype(np.float32)[:, None]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, digits):
    """A DDPMPipeline directory whose UNet was trained on digits[:64] (the members)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    spec = tiny_spec("ddpm", steps=500)
    unet = train_target(spec, digits[:64], device="cpu", progress=False).unet
    fam = spec.family
    sched = DDPMScheduler(num_train_timesteps=fam.num_steps, beta_start=fam.beta_min / fam.num_steps,
                          beta_end=fam.beta_max / fam.num_steps, beta_schedule="linear")
    path = tmp_path_factory.mktemp("pipe") / "ddpm-digits"
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(path)
    yield str(path), spec, unet
    torch.set_num_threads(threads)


def attack(path: str, members: np.ndarray, nonmembers: np.ndarray, tmp, steps, eval_size):
    """Loss-attack scores of a pipeline directory on given member / non-member arrays (saved as .npy)."""
    np.save(tmp / "members.npy", members)
    np.save(tmp / "nonmembers.npy", nonmembers)
    pool = open_given(DataConfig(source="npz", resolution=8, channels=1), tmp / "members.npy", tmp / "nonmembers.npy")
    split = given_split(pool, eval_size=eval_size, seed=0)
    ids, is_member = split.eval_ids()
    adapter = DiffusionAdapter(make_family(pipeline_family(path)), load_pipeline_unet(path))
    out = ATTACKS.get("loss")().run(adapter, torch.from_numpy(pool.load(ids)), torch.from_numpy(ids),
                                    LossParams(steps=steps))
    return out, is_member


@pytest.mark.slow
def test_saved_pipeline_maps_back_to_its_family_and_weights(pipeline):
    path, spec, unet = pipeline
    fam = pipeline_family(path)
    assert (fam.name, fam.num_steps) == (spec.family.name, spec.family.num_steps)
    assert fam.beta_min == pytest.approx(spec.family.beta_min) and fam.beta_max == pytest.approx(spec.family.beta_max)
    loaded = load_pipeline_unet(path).state_dict()
    for k, v in unet.state_dict().items():
        assert torch.equal(loaded[k], v.cpu()), k


@pytest.mark.slow
def test_loss_attack_on_given_members_beats_chance(pipeline, digits, tmp_path):
    path = pipeline[0]
    steps = [25, 50, 100, 200]
    out, is_member = attack(path, digits[:64], digits[64:128], tmp_path, steps, eval_size=64)
    assert is_member.sum() == 64 and (~is_member).sum() == 64
    aucs = [auc(out.score[i], is_member) for i in range(len(steps))]
    assert max(aucs) > 0.9, aucs


@pytest.mark.slow
def test_loss_attack_is_null_when_given_members_were_never_trained_on(pipeline, digits, tmp_path):
    """Labels carrying no information: 'members' and 'non-members' are both unseen digits."""
    out, is_member = attack(pipeline[0], digits[200:264], digits[300:364], tmp_path, [50], eval_size=64)
    m = summarize(out.score[0], is_member, n_boot=200)
    assert m["auc_ci_low"] <= 0.5 <= m["auc_ci_high"], m


# --- the sweep: a pipeline directory with given member / non-member arrays ----------------------------------


def given_sweep(tmp, pipe: str, members: np.ndarray, nonmembers: np.ndarray, **over) -> str:
    import yaml

    np.save(tmp / "members.npy", members)
    np.save(tmp / "nonmembers.npy", nonmembers)
    cfg = {
        "name": "given",
        "model": {"pretrained": pipe},
        "data": {"source": "npz", "members": str(tmp / "members.npy"), "nonmembers": str(tmp / "nonmembers.npy"),
                 "resolution": 8, "channels": 1},
        "eval_size": 32,
        "seeds": [0],
        "attacks": {"loss": {"steps": [25, 50, 100, 200]}, "pia": {}},
        "bootstrap": 20,
        "resources": {"num_cpus": 2, "scorer_actors": 1, "batch_size": 64},
        **over,
    }
    (tmp / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    return str(tmp / "sweep.yaml")


def save_pipeline(path, num_steps=100, beta_start=1e-3, beta_end=0.1):
    from mia_ray.config import ModelConfig
    from mia_ray.models import build_unet

    sched = DDPMScheduler(num_train_timesteps=num_steps, beta_start=beta_start, beta_end=beta_end)
    unet = build_unet(ModelConfig(block_out_channels=[8, 16], norm_num_groups=8), 8, 1)
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(path)
    return str(path)


def test_given_sweep_expands_to_one_trial_per_seed_with_the_schedulers_family(tmp_path):
    from mia_ray import sweep_config

    pipe = save_pipeline(tmp_path / "pipe", num_steps=300)
    rng = np.random.default_rng(0)
    path = given_sweep(tmp_path, pipe, rng.uniform(-1, 1, (40, 1, 8, 8)), rng.uniform(-1, 1, (30, 1, 8, 8)),
                       seeds=[0, 1], train_sizes=[999], eval_size=8, attacks={"loss": {"steps": [250]}})
    cfg, _ = sweep_config.load(path)
    trials = sweep_config.expand(cfg)
    assert [t.spec.seed for t in trials] == [0, 1]
    for t in trials:
        assert (t.spec.family.name, t.spec.family.num_steps, t.spec.train_size) == ("ddpm", 300, 40)
        assert t.spec.family.beta_max == pytest.approx(0.1 * 300) and t.spec.data.members.endswith("members.npy")
    assert trials[0].spec.target_id != trials[1].spec.target_id
    # attack steps are checked against the scheduler's T, not the default 1000
    with pytest.raises(ConfigError, match=r"attacks\.loss\.steps.*500.* 0\.\.299"):
        sweep_config.load(path, ["attacks.loss.steps=[500]"])


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["model.pretrained=null"], r"^data\.members / data\.nonmembers need model\.pretrained"),
        (["data.nonmembers=null"], r"^data\.nonmembers is required with given membership"),
        (["data.path=/x.npy"], r"^data\.path = '/x\.npy' cannot be combined with data\.members"),
        (["eval_size=31"], r"^eval_size = 31; allowed: 1\.\.30 \(the given 40 members and 30 non-members\)"),
        (["epsilons=[8]"], r"^epsilons = \[8\.0\] with model\.pretrained"),
        (["families=[vpsde]"], r"^families = \['vpsde'\] does not match"),
    ],
)
def test_given_sweep_refusals_are_one_line(tmp_path, overrides, match):
    from mia_ray import sweep_config

    pipe = save_pipeline(tmp_path / "pipe")
    rng = np.random.default_rng(0)
    path = given_sweep(tmp_path, pipe, rng.uniform(-1, 1, (40, 1, 8, 8)), rng.uniform(-1, 1, (30, 1, 8, 8)),
                       attacks={"loss": {"steps": [50]}}, eval_size=8)
    with pytest.raises(ConfigError, match=match) as e:
        cfg, _ = sweep_config.load(path, overrides)
        sweep_config.expand(cfg)
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_cli_sweep_audits_a_saved_pipeline_on_given_members(pipeline, digits, tmp_path):
    """Through the CLI and Ray: split tables hold the given membership, each attack has metrics rows, and the
    over-fitted pipeline's members are found."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pandas as pd

    root = Path(__file__).resolve().parents[1]
    path = given_sweep(tmp_path, pipeline[0], digits[:64], digits[64:128])
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "MIA_RAY_CACHE": str(tmp_path / "c")}
    env.pop("RAY_ADDRESS", None)
    p = subprocess.run([sys.executable, "-m", "mia_ray.sweep", path, "--output", str(tmp_path / "out"),
                        "--no-report"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = tmp_path / "out" / "given"
    splits = pd.read_parquet(res / "splits")
    assert len(splits) == 64 + 32 and splits["is_member"].sum() == 64  # every member, the scored non-members
    assert (splits["is_member"] == (splits["sample_id"] < 64)).all()  # ids 0..63: the given members
    assert splits["in_eval"].sum() == 64 and splits["dataset"].str.contains("members=").all()
    metrics = pd.read_parquet(res / "metrics")
    assert set(metrics["attack"]) == {"loss", "pia"}
    assert (metrics["train_size"] == 64).all() and (metrics["n_members"] == 32).all()
    assert metrics.loc[metrics["attack"] == "loss", "auc"].max() > 0.8, metrics[["attack", "step", "auc"]]
    targets = pd.read_parquet(res / "targets")
    assert targets["checkpoint"].iloc[0].endswith("unet") and targets["train_steps"].iloc[0] == 0


def test_dry_run_checks_the_given_model(tmp_path, capsys, monkeypatch):
    """--dry-run passed a model.pretrained that does not exist (or does not fit the data) and planned it with the
    default T = 1000; it now checks the model as the run does, with one line."""
    from mia_ray import sweep

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    rng = np.random.default_rng(0)
    members, nonmembers = rng.uniform(-1, 1, (40, 1, 8, 8)), rng.uniform(-1, 1, (30, 1, 8, 8))
    path = given_sweep(tmp_path, str(tmp_path / "no-such-model"), members, nonmembers,
                       attacks={"loss": {"steps": [50]}}, eval_size=8)
    assert sweep.main([path, "--dry-run", f"output={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model.pretrained") and "no-such-model" in err and err.count("\n") == 1, err
    pipe = save_pipeline(tmp_path / "pipe", num_steps=300)
    path = given_sweep(tmp_path, pipe, members, nonmembers, attacks={"loss": {"steps": [50]}}, eval_size=8)
    assert sweep.main([path, "--dry-run", f"output={tmp_path / 'out'}"]) == 0
    assert "T = 300" in capsys.readouterr().out
    assert sweep.main([path, "--dry-run", "data.resolution=16", f"output={tmp_path / 'out'}"]) == 2  # does not fit
    assert capsys.readouterr().err.startswith("error: model.pretrained")
