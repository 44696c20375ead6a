"""LiRA: reference halves (balanced, inside the universe), reference specs in the store, the calibration math
against analytic Gaussians, null labels, the noise shared by target and references, and an in-process trial
over real reference models (beats chance; an interrupted reference training is resumed without duplicates)."""

import dataclasses
import os

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_spec
from scipy import stats
from sweep_files import read

from mia_ray.attacks import ATTACKS
from mia_ray.attacks.lira import LiraParams, calibrate
from mia_ray.attacks.loss import LossParams
from mia_ray.config import AttackSpec, TargetSpec, Trial, spec_from_json, spec_json
from mia_ray.data import make_split, open_source
from mia_ray.errors import ConfigError
from mia_ray.metrics import summarize
from mia_ray.references import half_mask, inclusion, reference_ids, reference_specs, universe
from mia_ray.training import TargetStore, get_or_train, member_images
from mia_ray.trial import run_trial

POOL = 1797  # digits


@pytest.mark.parametrize("n,seed", [(64, 0), (100, 3), (800, 1)])
def test_universe_holds_the_split_and_halves_are_balanced(n, seed):
    split = make_split(POOL, n, min(n, 64), seed)
    u = universe(POOL, n, seed)
    assert len(u) == 2 * n == len(np.unique(u))
    assert np.isin(split.members, u).all() and np.isin(split.nonmembers, u).all()
    r_count = 8
    for r in range(r_count):
        ids = reference_ids(POOL, n, seed, r)
        assert len(ids) == n == len(np.unique(ids)) and np.isin(ids, u).all()
    # every sample of the universe (so every evaluation sample) is IN for exactly half of the references
    inc = inclusion(POOL, n, seed, u, r_count)
    assert (inc.sum(0) == r_count // 2).all()
    # halves differ between pairs (not one split reused) and pairs are complementary
    assert (half_mask(n, seed, 0) ^ half_mask(n, seed, 1)).all()
    assert not np.array_equal(half_mask(n, seed, 0), half_mask(n, seed, 2))


def test_inclusion_refuses_a_sample_outside_the_universe_and_a_small_pool():
    u = universe(POOL, 64, 0)
    outside = np.setdiff1d(np.arange(POOL), u)[0]
    with pytest.raises(ValueError, match="outside the reference universe"):
        inclusion(POOL, 64, 0, [outside], 4)
    with pytest.raises(ConfigError, match=r"^attacks\.lira\.references: .*train_sizes"):
        universe(POOL, 900, 0)


def test_reference_specs_keep_target_ids_and_get_their_own():
    spec = tiny_spec()
    refs = reference_specs(spec, 4)
    assert "reference" not in spec.to_dict()  # None is left out of the hash: existing ids unchanged
    assert TargetSpec().target_id == dataclasses.replace(TargetSpec(), reference=None).target_id
    ids = {spec.target_id} | {r.target_id for r in refs}
    assert len(ids) == 5
    assert [spec_from_json(spec_json(r)).reference for r in refs] == [0, 1, 2, 3]
    src = open_source(spec.data)
    np.testing.assert_array_equal(member_images(refs[1]), src.load(reference_ids(POOL, spec.train_size, 0, 1)))


def test_lira_parameters_are_checked_at_the_door():
    attack = ATTACKS.get("lira")()
    with pytest.raises(ConfigError, match=r"^attacks\.lira\.references = 3; allowed: an even"):
        attack.validate(LiraParams(references=3), 1000, "attacks.lira")
    with pytest.raises(ConfigError, match=r"^attacks\.lira\.references = 2: .*global_variance"):
        attack.validate(LiraParams(references=2), 1000, "attacks.lira")
    attack.validate(LiraParams(references=2, global_variance=True), 1000, "attacks.lira")


# ---- calibration math on synthetic statistics (the statistic is log(loss): draw log-losses as Gaussians) ----


def _synthetic(rng, n, r_count, mu_in, mu_out, sd_in, sd_out):
    """(ref_stat [R, 1, N], inclusion [R, N]) with log-statistics N(mu_in/out[n], sd^2) by membership."""
    inc = np.array([half_mask(n // 2, 7, r) for r in range(r_count)])
    z_in, z_out = rng.standard_normal((2, r_count, n))
    log = np.where(inc, mu_in + sd_in * z_in, mu_out + sd_out * z_out)
    return np.exp(log)[:, None, :], inc


def test_online_and_offline_scores_are_the_analytic_log_likelihood_ratio():
    rng = np.random.default_rng(0)
    n, r_count = 20, 4000
    mu_out = rng.normal(0, 1, n)
    mu_in, sd_in, sd_out = mu_out - 0.5, 0.2 + rng.random(n) * 0.2, 0.3 + rng.random(n) * 0.2
    ref, inc = _synthetic(rng, n, r_count, mu_in, mu_out, sd_in, sd_out)
    phi = mu_out + rng.normal(0, 0.5, n)
    got = calibrate(np.exp(phi)[None], ref, inc, LiraParams(references=r_count))[0]
    want = stats.norm.logpdf(phi, mu_in, sd_in) - stats.norm.logpdf(phi, mu_out, sd_out)
    np.testing.assert_allclose(got, want, rtol=0.05, atol=0.1)  # fits of 2000 draws per side vs the truth
    log = np.log(ref[:, 0])  # exactly: the Gaussians fitted (mean, sd with ddof 0) to the references
    fit = [(log[m[:, j], j].mean(), log[m[:, j], j].std()) for m in (inc, ~inc) for j in range(n)]
    (mi, si), (mo, so) = (np.array(fit[:n]).T, np.array(fit[n:]).T)
    np.testing.assert_allclose(got, stats.norm.logpdf(phi, mi, si) - stats.norm.logpdf(phi, mo, so), rtol=1e-9)
    off = calibrate(np.exp(phi)[None], ref, inc, LiraParams(references=r_count, online=False))[0]
    np.testing.assert_allclose(off, -stats.norm.logcdf(phi, mo, so), rtol=1e-9)
    np.testing.assert_allclose(off, -stats.norm.logcdf(phi, mu_out, sd_out), rtol=0.05, atol=0.05)
    # sign: a lower loss than OUT's typical one is more member-like
    assert off[np.argmin(phi - mu_out)] == off.max()


def test_global_variance_pools_one_sd_per_step():
    rng = np.random.default_rng(1)
    n, r_count, sd = 50, 4, 0.3
    mu = rng.normal(0, 2, n)  # samples differ a lot in mean: the pooled sd must not include that spread
    ref, inc = _synthetic(rng, n, r_count, mu - 0.4, mu, sd, sd)
    log = np.log(ref[:, 0])
    params = LiraParams(references=r_count, global_variance=True)
    phi = mu
    got = calibrate(np.exp(phi)[None], ref, inc, params)[0]
    mean_in = np.array([log[inc[:, j], j].mean() for j in range(n)])
    mean_out = np.array([log[~inc[:, j], j].mean() for j in range(n)])
    res_in = np.concatenate([log[inc[:, j], j] - mean_in[j] for j in range(n)])
    res_out = np.concatenate([log[~inc[:, j], j] - mean_out[j] for j in range(n)])
    s_in = np.sqrt((res_in**2).sum() / (len(res_in) - n))
    s_out = np.sqrt((res_out**2).sum() / (len(res_out) - n))
    want = stats.norm.logpdf(phi, mean_in, s_in) - stats.norm.logpdf(phi, mean_out, s_out)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    assert 0.15 < s_in < 0.5 and 0.15 < s_out < 0.5  # the within-sample sd, not the spread of the means


@pytest.mark.parametrize("online,global_variance", [(True, False), (False, False), (True, True)])
def test_beats_chance_with_signal_and_stays_null_without(online, global_variance):
    rng = np.random.default_rng(2)
    n, r_count = 400, 16
    mu = rng.normal(0, 1, n)
    ref, inc = _synthetic(rng, n, r_count, mu - 0.3, mu, 0.2, 0.2)
    params = LiraParams(references=r_count, online=online, global_variance=global_variance)
    member = rng.random(n) < 0.5
    signal = np.where(member, mu - 0.3, mu) + 0.2 * rng.standard_normal(n)
    m = summarize(calibrate(np.exp(signal)[None], ref, inc, params)[0], member, n_boot=200)
    assert m["auc"] > 0.75 and m["auc_ci_low"] > 0.5, m
    # null: the target's statistic does not depend on the label (drawn from the same mixture for everyone);
    # 20 nulls: their mean AUC has sd ~0.0065, so 0.5 +- 0.025 fails only for a real bias
    aucs = []
    for _ in range(20):
        null = np.where(rng.random(n) < 0.5, mu - 0.3, mu) + 0.2 * rng.standard_normal(n)
        aucs.append(summarize(calibrate(np.exp(null)[None], ref, inc, params)[0], member, n_boot=0)["auc"])
    assert abs(np.mean(aucs) - 0.5) < 0.025, aucs


class NoiseRecorder:
    """A ModelAdapter whose loss is |noise|^2 scaled per model: records the noise it is given."""

    num_steps, device, t_range = 1000, torch.device("cpu"), (1e-5, 1.0)

    def __init__(self, scale):
        self.scale, self.noise = scale, []

    def loss(self, x0, steps, noise):
        self.noise.append(noise.clone())
        return self.scale * (noise - 0.1 * x0).pow(2).flatten(1).mean(1)


def test_noise_of_sample_step_draw_is_shared_by_target_and_references(digits64):
    x, ids = torch.from_numpy(digits64[:5]), torch.tensor([3, 17, 5, 1000, 42])
    params = LiraParams(steps=[50, 300], draws=3, seed=4)
    target, ref = NoiseRecorder(1.0), NoiseRecorder(2.5)
    lira = ATTACKS.get("lira")()
    out_t, out_r = lira.run(target, x, ids, params), lira.run(ref, x, ids, params)
    for a, b in zip(target.noise, ref.noise, strict=True):
        assert torch.equal(a, b)
    np.testing.assert_allclose(out_r.statistic, 2.5 * out_t.statistic, rtol=1e-6)
    # the same keys as the loss attack: its statistic at the same seed and draws is LiRA's
    loss = ATTACKS.get("loss")().run(NoiseRecorder(1.0), x, ids, LossParams(steps=[50, 300], draws=3, seed=4))
    np.testing.assert_array_equal(loss.statistic, out_t.statistic)
    # a reordered batch gives every sample the same noise (keyed by id, not position)
    perm = torch.tensor([4, 2, 0, 1, 3])
    np.testing.assert_array_equal(lira.run(NoiseRecorder(1.0), x[perm], ids[perm], params).statistic,
                                  out_t.statistic[:, perm.numpy()])


# ---- real reference models, in process --------------------------------------------------------------------

R = 4
MEMBERS = 32


@pytest.fixture(scope="module")
def lira_trial():
    params = LiraParams(references=R, steps=[50, 100], draws=2, global_variance=True)
    spec = tiny_spec("ddpm", steps=600, train_size=MEMBERS)
    attacks = [AttackSpec("loss", LossParams(steps=[50, 100], draws=2)), AttackSpec("lira", params)]
    return Trial("t-lira", spec, MEMBERS, attacks)


def test_trial_with_references_beats_chance_and_records_the_halves(lira_trial, store_dir, tmp_path):
    root = str(tmp_path / "out")
    rows = pd.DataFrame(run_trial(lira_trial, "s", root, TargetStore(store_dir), n_boot=50, progress=False))
    lira = rows[rows.attack == "lira"]
    assert list(lira.step) == [50, 100]
    assert lira.auc.max() > 0.8, rows[["attack", "step", "auc", "tpr_at_10pct_fpr"]]
    refs = read(root, "references")
    assert len(refs) == R * 2 * MEMBERS and refs.reference_index.nunique() == R
    assert (refs.groupby("reference_index").included.sum() == MEMBERS).all()
    assert (refs.groupby("sample_id").included.sum() == R // 2).all()
    store = TargetStore(store_dir)
    for spec in reference_specs(lira_trial.spec, R):
        assert store.get(spec).target_id in set(refs.reference_id)
    scores = read(root, "scores")
    assert set(scores.sample_id) <= set(refs.sample_id)
    # LiRA's calibrated scores differ from the plain loss scores of the same statistic
    s = scores.set_index(["attack", "step", "sample_id"]).sort_index()
    np.testing.assert_array_equal(s.loc["lira"].statistic.to_numpy(), s.loc["loss"].statistic.to_numpy())
    assert not np.allclose(s.loc["lira"].score.to_numpy(), s.loc["loss"].score.to_numpy())
    # every LiRA score is recomputed from the Parquet files alone (no model), by the README's formula: online,
    # global variance, on phi = log(loss); IN / OUT from references/, the references' losses from reference_scores/
    ref = read(root, "reference_scores").merge(refs[["reference_index", "sample_id", "included"]],
                                               on=["reference_index", "sample_id"], validate="many_to_one")
    assert len(ref) == R * 2 * MEMBERS * 2 and set(ref.attack) == {"lira"}  # R refs x scored samples x 2 steps
    assert set(ref.reference_id) == set(refs.reference_id)
    ref["phi"] = np.log(ref.statistic)
    for step, g in ref.groupby("step"):
        fits = {}
        for inc, h in g.groupby("included"):
            by = h.groupby("sample_id").phi
            dev = h.phi - by.transform("mean")
            sd = np.sqrt((dev**2).sum() / (by.count() - 1).sum())  # pooled over samples (global_variance)
            fits[inc] = (by.mean(), sd)
        lira = s.loc[("lira", step)]
        phi = np.log(lira.statistic)
        want = (stats.norm.logpdf(phi, fits[True][0].loc[phi.index], fits[True][1])
                - stats.norm.logpdf(phi, fits[False][0].loc[phi.index], fits[False][1]))
        np.testing.assert_allclose(lira.score.to_numpy(), np.asarray(want), rtol=1e-9, atol=1e-9)


def test_interrupted_reference_training_resumes_without_duplicates(lira_trial, store_dir, tmp_path):
    """A crash while references train leaves hidden temp dirs and misses some references: a rerun trains
    exactly the missing ones and every stored one stays as it was (the store writes atomically)."""
    store = TargetStore(store_dir)
    specs = reference_specs(lira_trial.spec, R)
    for s in specs:
        get_or_train(store, s, progress=False)
    lost = specs[1].target_id
    kept = {s.target_id: os.stat(os.path.join(store_dir, s.target_id, "target.json")).st_mtime_ns
            for s in specs if s.target_id != lost}
    # what a kill -9 mid-training leaves: the reference's half-written temp dir, and no complete dir
    os.rename(os.path.join(store_dir, lost), os.path.join(store_dir, f".tmp-{lost}-killed"))
    os.remove(os.path.join(store_dir, f".tmp-{lost}-killed", "target.json"))
    again = [get_or_train(store, s, progress=False) for s in specs]
    assert [t.trained_now for t in again] == [s.target_id == lost for s in specs]
    for tid, mtime in kept.items():
        assert os.stat(os.path.join(store_dir, tid, "target.json")).st_mtime_ns == mtime
    complete = [d for d in os.listdir(store_dir) if os.path.isfile(os.path.join(store_dir, d, "target.json"))]
    assert len(complete) == len(set(complete)) and {s.target_id for s in specs} <= set(complete)
    assert not any(d.startswith(lost) and d != lost for d in os.listdir(store_dir))


def test_a_pool_too_small_for_the_universe_is_refused_before_training(tmp_path):
    import sweep_files

    from mia_ray import sweep_config
    from mia_ray.preflight import check_data

    path = sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"), train_sizes=[900],
                                   attacks={"lira": {"references": 4}})
    cfg, _ = sweep_config.load(path)
    with pytest.raises(ConfigError, match=r"^attacks\.lira\.references: .* 1800 pool images, .* lower train_sizes$"):
        check_data(cfg)


def test_lira_on_a_pretrained_target_is_refused(tmp_path):
    import sweep_files

    from mia_ray import sweep_config
    from mia_ray.preflight import check_data

    path = sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"), attacks={"lira": {"references": 4}},
                                   model={**sweep_files.TINY["model"], "pretrained": str(tmp_path / "unet")})
    cfg, _ = sweep_config.load(path)
    with pytest.raises(ConfigError, match=r"^attacks\.lira: reference models .* \(model\.pretrained\)"):
        check_data(cfg)


def test_lira_with_canaries_is_refused_before_training(tmp_path):
    """Reference models train on halves of the universe, never on the canaries (outside it): with a canary audit
    the write step's calibration met a canary id and raised after every training (found by the recheck)."""
    import sweep_files

    from mia_ray import sweep_config
    from mia_ray.preflight import check_data

    path = sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"), attacks={"lira": {"references": 4}},
                                   audit={"canaries": 16}, utility={"enabled": False})
    cfg, _ = sweep_config.load(path)
    with pytest.raises(ConfigError, match=r"^attacks\.lira: reference models never train on the canaries .* "
                                          r"allowed: audit\.canaries: 0") as e:
        check_data(cfg)
    assert "\n" not in str(e.value)


def test_lira_on_given_members_is_refused_before_scoring(tmp_path):
    """Given membership needs model.pretrained, whose 'references' would be the given model itself: the
    pretrained refusal must hold on that path too (it was skipped there, found by the recheck)."""
    from test_pretrained import given_sweep, save_pipeline

    from mia_ray import sweep_config
    from mia_ray.preflight import check_data

    rng = np.random.default_rng(0)
    path = given_sweep(tmp_path, save_pipeline(tmp_path / "pipe"), rng.uniform(-1, 1, (40, 1, 8, 8)),
                       rng.uniform(-1, 1, (30, 1, 8, 8)), eval_size=8,
                       attacks={"loss": {"steps": [50]}, "lira": {"references": 4, "steps": [50]}})
    cfg, _ = sweep_config.load(path)
    with pytest.raises(ConfigError, match=r"^attacks\.lira: reference models are trained with the target's recipe"):
        check_data(cfg)
