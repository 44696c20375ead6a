"""Attacks: exact answers on Gaussian data, membership signal on an over-fitted model, a null that stays
null, scores independent of batching, and one conformance test over every registered attack."""

import math

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, tiny_spec

from mia_ray import noise as keyed
from mia_ray.attacks import ATTACKS, AttackSpec, DiffusionAdapter, ModelAdapter, StepMixin, score_batch
from mia_ray.attacks.likelihood import BITS_OFFSET, LikelihoodParams, bits_per_dim
from mia_ray.attacks.loss import LossParams
from mia_ray.attacks.pia import PIAParams
from mia_ray.attacks.secmi import SecMIParams
from mia_ray.attacks.sima import SimAParams
from mia_ray.config import FamilyConfig
from mia_ray.data import make_split, open_source
from mia_ray.errors import ConfigError
from mia_ray.families import VEFamily, make_family
from mia_ray.metrics import auc, summarize
from mia_ray.models import build_unet
from mia_ray.training import TargetStore, get_or_train

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for this module

FAMILY_NAMES = ["ddpm", "smld", "vpsde", "vesde"]


# --- exact answer: Gaussian data, closed-form score --------------------------------------------------


class GaussianAdapter(StepMixin):
    """The exact ModelAdapter of data ~ N(mu, s^2 I) under ``family``'s forward SDE.

    The marginal at time t is N(m(t) mu, v(t) I) with, for VP, m = the family's mean coefficient and
    v = m^2 s^2 + 1 - m^2; for VE, m = 1 and v = s^2 + sigma(t)^2 - sigma_min^2 (the noise accumulated
    from t = 0, where sigma(0) = sigma_min). Its score -(x - m mu) / v is exact, so the PF-ODE
    log-likelihood must equal the marginal's log-density at t0.

    On the integer step axis (x_u = a_u x0 + s_u eps, x0 ~ N(mu, s^2 I)), x_u and eps are jointly Gaussian
    with Cov(eps, x_u) = s_u I and Var(x_u) = (a_u^2 s^2 + s_u^2) I, so the exact (minimum mean squared
    error) noise prediction is E[eps | x_u] = s_u (x_u - a_u mu) / (a_u^2 s^2 + s_u^2).
    """

    def __init__(self, family, mu: torch.Tensor, s: float):
        self.family, self.mu, self.s2 = family, mu, s * s
        self.num_steps = family.T
        self.device = torch.device("cpu")
        self.t_range = family.t_range

    def marginal(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean [n, C, H, W] and variance [n, 1, 1, 1] at times t (0-d or [n])."""
        m, std = self.family.mean_std(t.double().reshape(-1, 1, 1, 1))
        if isinstance(self.family, VEFamily):
            return self.mu.expand_as(m * self.mu), self.s2 + std**2 - self.family.cfg.sigma_min**2
        return m * self.mu, m**2 * self.s2 + 1 - m**2

    def ode_drift(self, x, t):
        mean, var = self.marginal(t)
        f, g2 = self.family.drift_diffusion2(x, t)
        return f - 0.5 * g2 * (-(x - mean) / var)

    def prior_logp(self, z):
        return self.family.prior_logp(z)

    def step_coefs(self, steps):
        return self.family.step_mean_std(torch.as_tensor(steps, dtype=torch.int64).reshape(-1))

    def eps_hat(self, x, steps):
        a, s = (c.view(-1, 1, 1, 1) for c in self.step_coefs(steps))
        return (s * (x - a * self.mu) / (a**2 * self.s2 + s**2)).float()

    def loss(self, x0, steps, noise):
        a, s = (c.view(-1, 1, 1, 1) for c in self.step_coefs(steps))
        return (self.eps_hat(a * x0 + s * noise, steps) - noise).pow(2).flatten(1).mean(1)

    def exact_bpd(self, x: torch.Tensor) -> torch.Tensor:
        mean, var = self.marginal(torch.tensor(self.t_range[0], dtype=torch.float64))
        d = x[0].numel()
        var = var.reshape(())
        nll = 0.5 * d * torch.log(2 * math.pi * var) + 0.5 * (x - mean).flatten(1).pow(2).sum(1) / var
        return nll / (d * math.log(2)) + BITS_OFFSET


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_likelihood_matches_exact_gaussian_nll(name):
    gen = torch.Generator().manual_seed(0)
    mu = torch.linspace(-0.5, 0.5, 16, dtype=torch.float64).reshape(1, 4, 4)
    s = 0.3
    x = mu + s * torch.randn(3, 1, 4, 4, generator=gen, dtype=torch.float64)
    adapter = GaussianAdapter(make_family(FamilyConfig(name=name)), mu, s)
    assert isinstance(adapter, ModelAdapter)
    bpd = bits_per_dim(adapter, x, torch.arange(3), LikelihoodParams(rtol=1e-5, atol=1e-5))
    exact = adapter.exact_bpd(x)
    assert bpd.dtype == torch.float64
    np.testing.assert_allclose(bpd.numpy(), exact.numpy(), atol=0.01)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_gaussian_eps_hat_is_the_conditional_mean_of_the_noise(name):
    """E[(eps - eps_hat(x_u, u)) f(x_u)] = 0 for f = 1 and f = x_u - a_u mu (Monte Carlo, 200k draws): the
    residual is orthogonal to every affine function of x_u, so (jointly Gaussian) eps_hat is E[eps | x_u];
    a wrong coefficient (e.g. 1 / s_u instead of s_u / var) fails by far more than the tolerance."""
    gen = torch.Generator().manual_seed(1)
    mu = torch.linspace(-0.5, 0.5, 4, dtype=torch.float64).reshape(1, 2, 2)
    adapter = GaussianAdapter(make_family(FamilyConfig(name=name)), mu, 0.3)
    n = 200_000
    for step in (0, 100, 700):
        x0 = mu + 0.3 * torch.randn(n, 1, 2, 2, generator=gen, dtype=torch.float64)
        eps = torch.randn(n, 1, 2, 2, generator=gen, dtype=torch.float64)
        a, s = (c.item() for c in adapter.step_coefs(step))
        xu = a * x0 + s * eps
        r = eps - adapter.eps_hat(xu, step).double()
        assert abs(r.mean()) < 0.01 and abs((r * (xu - a * mu)).mean()) < 0.01 * (a * a * 0.09 + s * s) ** 0.5


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_ddim_step_is_exact_when_the_data_is_one_point(name):
    """With s = 0 (all data = mu) eps_hat recovers the noise exactly, so the DDIM step must carry
    a_u mu + s_u eps to a_v mu + s_v eps, in either direction; and a step from u to u is the identity."""
    mu = torch.linspace(-0.5, 0.5, 16, dtype=torch.float64).reshape(1, 4, 4)
    adapter = GaussianAdapter(make_family(FamilyConfig(name=name)), mu, 0.0)
    eps = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for u, v in ((10, 90), (90, 100), (100, 90), (0, 500)):
        (au, su), (av, sv) = ((c.item() for c in adapter.step_coefs(w)) for w in (u, v))
        got = adapter.ddim_step(au * mu + su * eps, u, v)
        np.testing.assert_allclose(got.numpy(), (av * mu + sv * eps).numpy(), rtol=1e-5, atol=1e-5)
    x = mu + 0.1 * eps
    np.testing.assert_allclose(adapter.ddim_step(x, 40, 40).numpy(), x.numpy(), atol=1e-12)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_diffusion_adapter_eps_hat_is_what_the_training_loss_sees(name, digits64):
    """loss(x0, u, z) == mean (z - eps_hat(x_u, u))^2 with x_u = a_u x0 + s_u z from step_coefs: the noise
    prediction the attacks query is fed exactly as in training, on every family."""
    torch.manual_seed(0)
    adapter = DiffusionAdapter(make_family(FamilyConfig(name=name)), build_unet(TINY_MODEL, 8, 1))
    x0 = torch.from_numpy(digits64[:4])
    z = torch.randn_like(x0)
    steps = torch.tensor([0, 7, 300, 999])
    a, s = (c.float().view(-1, 1, 1, 1) for c in adapter.step_coefs(steps))
    want = (z - adapter.eps_hat(a * x0 + s * z, steps)).pow(2).flatten(1).mean(1)
    with torch.no_grad():
        np.testing.assert_allclose(adapter.loss(x0, steps, z).numpy(), want.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(adapter.eps_hat(x0, 5).numpy(), adapter.eps_hat(x0, torch.full((4,), 5)).numpy())


# --- a tiny DDPM over-fitted on 64 digits ------------------------------------------------------------



@pytest.fixture(scope="module")
def overfit(tmp_path_factory):
    """(adapter, images, sample ids, is_member, source, split) of the evaluation set: 64 + 64."""
    spec = tiny_spec("ddpm", steps=500)
    target = get_or_train(TargetStore(str(tmp_path_factory.mktemp("store"))), spec, progress=False)
    adapter = DiffusionAdapter(make_family(spec.family), target.load())
    src = open_source(spec.data)
    split = make_split(len(src), 64, 64, 0)
    ids, member = split.eval_ids()
    return adapter, torch.from_numpy(src.load(ids)), torch.from_numpy(ids), member, src, split


LOSS_STEPS = [25, 50, 100, 200, 300, 999]


@pytest.fixture(scope="module")
def loss_aucs(overfit):
    adapter, x, ids, member, _, _ = overfit
    out = ATTACKS.get("loss")().run(adapter, x, ids, LossParams(steps=LOSS_STEPS))
    return {step: auc(out.score[i], member) for i, step in enumerate(LOSS_STEPS)}


def test_loss_attack_beats_chance_at_intermediate_steps(loss_aucs):
    best = max(loss_aucs[s] for s in LOSS_STEPS if 25 <= s <= 300)
    assert best > 0.9, loss_aucs


def test_loss_attack_is_near_chance_at_the_noisiest_step(overfit, loss_aucs):
    """Hu & Pang: at high-noise steps x_t hardly depends on x0, so the loss does not leak membership."""
    adapter, x, ids, member, _, _ = overfit
    assert abs(loss_aucs[999] - 0.5) < 0.15, loss_aucs
    out = ATTACKS.get("loss")().run(adapter, x, ids, LossParams(steps=[999]))
    m = summarize(out.score[0], member, n_boot=200)
    assert m["auc_ci_low"] <= 0.5 <= m["auc_ci_high"], m


@pytest.fixture(scope="module")
def likelihood128(overfit):
    """The likelihood attack at its defaults on all 128 evaluation samples in one batch."""
    adapter, x, ids, _, _, _ = overfit
    return ATTACKS.get("likelihood")().run(adapter, x, ids, LikelihoodParams())


def test_likelihood_attack_beats_chance(overfit, likelihood128):
    member = overfit[3]
    assert np.isfinite(likelihood128.score).all()
    assert auc(likelihood128.score[0], member) > 0.75


def test_null_auc_ci_covers_one_half(overfit, loss_aucs):
    """Two groups of non-members: labels carry no information, so the CI of the AUC must cover 0.5
    (while the real members vs non-members CI at the same step must not)."""
    adapter, x, ids, member, src, split = overfit
    step = max((s for s in LOSS_STEPS if s <= 300), key=loss_aucs.get)
    params = LossParams(steps=[step])
    real = ATTACKS.get("loss")().run(adapter, x, ids, params)
    m_real = summarize(real.score[0], member, n_boot=200)
    assert m_real["auc_ci_low"] > 0.5, m_real

    rng = np.random.default_rng(1)
    outside = np.setdiff1d(np.arange(len(src)), np.concatenate([split.members, split.nonmembers]))
    null_ids = rng.choice(outside, 128, replace=False)
    labels = rng.permutation(np.repeat([True, False], 64))
    out = ATTACKS.get("loss")().run(adapter, torch.from_numpy(src.load(null_ids)), torch.from_numpy(null_ids),
                                    params)
    m = summarize(out.score[0], labels, n_boot=200)
    assert m["auc_ci_low"] <= 0.5 <= m["auc_ci_high"], m


# --- scores do not depend on batching; seeds do what they say ----------------------------------------


@pytest.mark.parametrize("steps", [[7], [0, 50, 999]])
def test_loss_scores_are_bitwise_independent_of_batching(overfit, steps):
    adapter, x, ids, _, _, _ = overfit
    x, ids = x[:20], ids[:20]
    attack = ATTACKS.get("loss")()
    params = LossParams(steps=steps)
    whole = attack.run(adapter, x, ids, params).statistic
    chunks = np.concatenate(
        [attack.run(adapter, x[i : i + 7], ids[i : i + 7], params).statistic for i in range(0, 20, 7)], 1
    )
    np.testing.assert_array_equal(chunks, whole)
    for max_batch in (5, 13, 4096):
        other = attack.run(adapter, x, ids, LossParams(steps=steps, max_batch=max_batch)).statistic
        np.testing.assert_array_equal(other, whole)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    shuffled = attack.run(adapter, x[perm], ids[perm], params).statistic
    np.testing.assert_array_equal(shuffled, whole[:, perm.numpy()])


def test_loss_scores_follow_the_seed(overfit):
    adapter, x, ids, _, _, _ = overfit
    x, ids = x[:8], ids[:8]
    attack = ATTACKS.get("loss")()
    a = attack.run(adapter, x, ids, LossParams(steps=[50, 100], seed=3)).score
    b = attack.run(adapter, x, ids, LossParams(steps=[50, 100], seed=3)).score
    c = attack.run(adapter, x, ids, LossParams(steps=[50, 100], seed=4)).score
    np.testing.assert_array_equal(a, b)
    assert (a != c).all()


def test_loss_statistic_is_the_family_loss_under_keyed_noise(overfit):
    """The statistic at step s is the training loss of x0 perturbed at exactly step s by the noise keyed by
    (seed, sample id, step, draw 0); with K draws it is the mean over draws 0..K-1."""
    adapter, x, ids, _, _, _ = overfit
    x, ids = x[:4], ids[:4]
    attack = ATTACKS.get("loss")()
    for step in (3, 640):
        steps = torch.full((4,), step)
        losses = []
        for draw in range(3):
            z = keyed.normal(keyed.combine(5, ids, steps, draw), (1, 8, 8))
            with torch.no_grad():
                losses.append(adapter.loss(x, steps, z).double().numpy())
        k1 = attack.run(adapter, x, ids, LossParams(steps=[step], seed=5)).statistic[0]
        k3 = attack.run(adapter, x, ids, LossParams(steps=[step], seed=5, draws=3)).statistic[0]
        np.testing.assert_allclose(k1, losses[0], rtol=1e-6)
        np.testing.assert_allclose(k3, np.mean(losses, 0), rtol=1e-6)


def test_likelihood_is_independent_of_batch_composition(overfit, likelihood128):
    """A sample's bits/dim must not depend on its batch-mates (within 2e-3 bpd).

    Bitwise equality cannot be the contract: samples share each network call, and GPU kernels (and CPU
    BLAS for small batches) change their last bits with the batch size; the adaptive solver amplifies
    such ulps through its accept / reject decisions up to its actual error (~0.01 bpd at the default
    tolerance on this model, whose sinusoidal time embedding makes the drift oscillate in t with period
    ~2 pi / 999, shorter than the solver's steps). On CPU the solver avoids every such source (per-sample
    steps, forwards padded to >= 16 rows, step factors rounded from float64) and is bitwise independent
    of the batch; this checks 128 samples in one batch against chunks of 5, 5, 5 and 1.
    Probes are keyed by (seed, sample id): another seed gives other scores (repeated runs being bitwise
    equal is checked by the conformance test)."""
    adapter, x, ids, _, _, _ = overfit
    whole = likelihood128.statistic  # one batch of 128
    sel = torch.arange(0, 128, 8)  # 16 of them (8 members, 8 non-members)
    attack = ATTACKS.get("likelihood")()
    params = LikelihoodParams()
    chunks = np.concatenate(
        [attack.run(adapter, x[sel[i : i + 5]], ids[sel[i : i + 5]], params).statistic for i in range(0, 16, 5)],
        1,
    )
    np.testing.assert_allclose(chunks, whole[:, sel.numpy()], rtol=0, atol=2e-3)
    other_seed = attack.run(adapter, x[sel[:8]], ids[sel[:8]], LikelihoodParams(seed=1)).statistic
    assert np.abs(other_seed - chunks[:, :8]).mean() > 0.05


# --- conformance: every registered attack ------------------------------------------------------------

# Cheaper parameters for the attacks whose defaults are slow; any other registered attack runs at its defaults.
CHEAP = {
    "loss": LossParams(steps=[0, 10, 500, 999]),
    "likelihood": LikelihoodParams(rtol=1e-2, atol=1e-2),
}


@pytest.fixture(scope="module")
def untrained():
    torch.manual_seed(0)
    unet = build_unet(TINY_MODEL, 8, 1)
    return DiffusionAdapter(make_family(FamilyConfig(name="ddpm")), unet)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_conformance(name, untrained, digits64):
    params = CHEAP.get(name) or ATTACKS.get(name).Params()
    attack = ATTACKS.get(name)()
    attack.validate(params, untrained.num_steps, f"attacks.{name}")
    images = torch.from_numpy(digits64[:5])
    ids = torch.tensor([3, 17, 5, 1000, 42])
    out = attack.run(untrained, images, ids, params)
    steps = attack.steps(params, untrained.num_steps)
    assert out.steps == steps
    assert out.score.shape == out.statistic.shape == (len(steps), 5)
    assert np.isfinite(out.score).all() and np.isfinite(out.statistic).all()
    again = attack.run(untrained, images, ids, params)
    np.testing.assert_array_equal(again.score, out.score)
    np.testing.assert_array_equal(again.statistic, out.statistic)
    sign = 1 if (out.score == out.statistic).all() else -1  # score = +-statistic, one orientation per attack
    np.testing.assert_array_equal(out.score, sign * out.statistic)

    member = np.array([True, False, True, False, True])
    batch = {"image": digits64[:5], "sample_id": ids.numpy(), "is_member": member}
    cols = score_batch(untrained, batch, [AttackSpec(name, params)])
    n = len(steps) * 5
    assert set(cols) == {"sample_id", "is_member", "attack", "step", "score", "statistic", "probe_se"}
    assert all(len(v) == n for v in cols.values())
    se = out.extra.get("probe_se")  # a Monte-Carlo statistic's standard error over its probes, else NaN
    np.testing.assert_array_equal(cols["probe_se"], np.full(n, np.nan) if se is None else np.ravel(se))
    assert list(cols["step"]) == [s for s in steps for _ in range(5)]  # None for a step-free attack
    np.testing.assert_array_equal(cols["sample_id"], np.tile(ids.numpy(), len(steps)))
    np.testing.assert_array_equal(cols["is_member"], np.tile(member, len(steps)))
    assert (cols["attack"] == name).all()
    np.testing.assert_array_equal(cols["score"], out.score.ravel())
    np.testing.assert_array_equal(cols["statistic"], out.statistic.ravel())

    # max_samples: only rows with rank < max_samples are scored by this attack
    ranked = dict(batch, rank=np.array([0, 0, 1, 1, 2]))
    cols = score_batch(untrained, ranked, [AttackSpec(name, params, max_samples=1)])
    np.testing.assert_array_equal(cols["sample_id"], np.tile([3, 17], len(steps)))


def test_score_batch_runs_several_attacks_in_one_pass(untrained, digits64):
    batch = {"image": digits64[:3], "sample_id": np.array([1, 2, 3]), "is_member": np.array([1, 0, 1])}
    specs = [AttackSpec("loss", LossParams(steps=[5, 9])), AttackSpec("likelihood", CHEAP["likelihood"])]
    cols = score_batch(untrained, batch, specs)
    assert list(cols["attack"]) == ["loss"] * 6 + ["likelihood"] * 3
    assert list(cols["step"]) == [5, 5, 5, 9, 9, 9] + [None] * 3
    assert cols["step"].dtype == object and cols["is_member"].dtype == bool
    empty = score_batch(untrained, dict(batch, rank=np.array([3, 4, 5])), [AttackSpec("loss", LossParams(),
                                                                                      max_samples=2)])
    assert all(len(v) == 0 for v in empty.values()) and empty["step"].dtype == object


def test_loss_all_steps_scores_the_full_curve(untrained, digits64):
    attack = ATTACKS.get("loss")()
    images, ids = torch.from_numpy(digits64[:2]), torch.tensor([4, 9])
    full = attack.run(untrained, images, ids, LossParams(all_steps=True, steps=[]))
    assert full.steps == list(range(1000)) and full.statistic.shape == (1000, 2)
    some = attack.run(untrained, images, ids, LossParams(steps=[0, 500, 999]))
    np.testing.assert_array_equal(full.statistic[[0, 500, 999]], some.statistic)
    attack.validate(LossParams(all_steps=True, steps=[]), 1000, "attacks.x")


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("loss", LossParams(steps=[-1, 5]), r"attacks\.x\.steps .*-1.*0\.\.999"),
        ("loss", LossParams(steps=[1000]), r"attacks\.x\.steps .*1000.*0\.\.999"),
        ("loss", LossParams(steps=[]), r"attacks\.x\.steps is empty"),
        ("loss", LossParams(draws=0), r"attacks\.x\.draws = 0; allowed: an integer >= 1$"),
        ("loss", LossParams(max_batch=0), r"attacks\.x\.max_batch = 0; allowed: an integer >= 1$"),
        ("likelihood", LikelihoodParams(rtol=0.0), r"attacks\.x\.rtol"),
        ("likelihood", LikelihoodParams(atol=-1e-5), r"attacks\.x\.atol"),
        ("likelihood", LikelihoodParams(probes=0), r"attacks\.x\.probes"),
        ("pia", PIAParams(steps=[]), r"attacks\.x\.steps is empty"),
        ("pia", PIAParams(steps=[10, 1000]), r"attacks\.x\.steps: step 1000 is outside the allowed range 0\.\.999"),
        ("pian", PIAParams(p=0), r"attacks\.x\.p = 0"),
        ("sima", SimAParams(steps=[-5]), r"attacks\.x\.steps: step -5 is outside"),
        ("sima", SimAParams(max_batch=0), r"attacks\.x\.max_batch"),
        ("secmi", SecMIParams(t_sec=[1000]), r"attacks\.x\.t_sec: step 1000 is outside"),
        ("secmi", SecMIParams(t_sec=[100, 95]), r"attacks\.x\.t_sec has 95 with attacks\.x\.k = 10; allowed: mult"),
        ("secmi", SecMIParams(t_sec=[10]), r"attacks\.x\.t_sec has 10 .*at least 2k"),
        ("secmi", SecMIParams(t_sec=[]), r"attacks\.x\.t_sec is empty"),
        ("secmi", SecMIParams(t_sec=[100, 100]), r"attacks\.x\.t_sec.*100.*twice"),
        ("secmi", SecMIParams(k=0), r"attacks\.x\.k = 0"),
    ],
)
def test_validate_rejects_unusable_parameters(name, params, match):
    attack = ATTACKS.get(name)()
    with pytest.raises(ConfigError, match=match):
        attack.validate(params, 1000, "attacks.x")


@pytest.mark.parametrize("name", ATTACKS.names())
def test_validate_accepts_defaults(name):
    attack = ATTACKS.get(name)()
    attack.validate(attack.Params(), 1000, "attacks.x")
    if name == "loss":
        attack.validate(LossParams(steps=[0, 999]), 1000, "attacks.x")


def test_unknown_attack_lists_the_registered_ones():
    with pytest.raises(ConfigError, match="unknown attack 'nope'; allowed: " + ", ".join(ATTACKS.names())):
        ATTACKS.get("nope")
    assert {"likelihood", "loss", "pia", "pian", "secmi", "sima"} <= set(ATTACKS.names())
