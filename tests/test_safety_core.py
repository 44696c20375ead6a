"""Safety net, small core pieces (issue 10 item 8): each test kills mutants that survived the fast suite
(docs/mutation.md names them) -- what the network sees, the training-time distribution, the table schema
guard, split edge cases, bootstrap resampling and loss-attack parameter bounds."""

import numpy as np
import pytest
import torch
from scipy import stats

from mia_ray.attacks import ATTACKS
from mia_ray.attacks.loss import LossParams
from mia_ray.config import FamilyConfig
from mia_ray.data import Split, make_split
from mia_ray.errors import ConfigError
from mia_ray.families import make_family
from mia_ray.metrics import bootstrap_ci
from mia_ray.results import to_table

VE = ("smld", "vesde")
DISCRETE = ("ddpm", "smld")


class _SpyNet:
    """A network that records its inputs and predicts zero noise."""

    def __call__(self, x, tau):
        self.x, self.tau = x, tau
        return torch.zeros_like(x)


@pytest.mark.parametrize("name", ["ddpm", "smld", "vpsde", "vesde"])
def test_network_sees_scaled_perturbed_input_and_its_step(name):
    """loss(net, x0, step, z) = mean (z - net(c_in x_t, tau))^2 with x_t = m x0 + s z, c_in = 1 (VP) or
    1 / sqrt(1 + s^2) (VE), and tau = the integer step (discrete) or t (T - 1) (continuous)."""
    fam = make_family(FamilyConfig(name=name))
    gen = torch.Generator().manual_seed(0)
    steps = torch.tensor([0, 10, 500, 999])
    x0 = torch.rand(4, 1, 4, 4, generator=gen, dtype=torch.float64) * 2 - 1
    z = torch.randn(4, 1, 4, 4, generator=gen, dtype=torch.float64)
    m, s = (v.view(-1, 1, 1, 1) for v in fam.step_mean_std(steps))
    xt = m * x0 + s * z
    net = _SpyNet()
    loss = fam.loss(net, x0, steps, z)
    c_in = (1 + s**2).rsqrt() if name in VE else torch.ones_like(s)
    torch.testing.assert_close(net.x, c_in * xt)
    t = steps.double() / 1000 if name not in DISCRETE else None
    tau = steps.double() if name in DISCRETE else t.clamp(min=fam.eps) * 999
    torch.testing.assert_close(net.tau.double(), tau)
    torch.testing.assert_close(loss.double(), z.pow(2).flatten(1).mean(1))
    torch.testing.assert_close(fam.perturb(x0, steps, z), xt)


@pytest.mark.parametrize("name", ["ddpm", "smld", "vpsde", "vesde"])
def test_training_steps_cover_the_whole_noise_range_uniformly(name):
    fam = make_family(FamilyConfig(name=name))
    steps = fam.sample_train(20000, torch.Generator().manual_seed(0))
    if name in DISCRETE:
        assert steps.dtype == torch.int64 and int(steps.min()) == 0 and int(steps.max()) == 999
        u = (steps.double() + 0.5) / 1000
    else:
        t = fam.step_time(steps)
        assert float(t.min()) >= fam.eps and float(t.max()) <= 1.0
        u = (t - fam.eps) / (1 - fam.eps)
    assert stats.kstest(u.numpy(), "uniform").pvalue > 1e-3


def test_results_table_rejects_an_unknown_column():
    row = {"sweep": "s", "trial_id": "t", "target_id": "x", "sample_id": 1, "is_member": True,
           "attack": "loss", "step": 0, "score": 0.0, "statistic": 0.0, "bogus": 1}
    with pytest.raises(ValueError, match="bogus"):
        to_table([row], "scores")
    del row["bogus"]
    assert to_table([row], "scores").num_rows == 1


def test_split_may_use_the_whole_pool_and_saves_into_new_folders(tmp_path):
    split = make_split(10, 5, 5, seed=3)
    assert sorted(np.r_[split.members, split.nonmembers].tolist()) == list(range(10))
    with pytest.raises(ConfigError):
        make_split(10, 6, 5, seed=3)
    ids, is_member = split.eval_ids()
    assert is_member.dtype == bool and is_member.tolist() == [True] * 5 + [False] * 5
    path = split.save(tmp_path / "new" / "deeper" / "split.json")
    assert Split.load(path) == split


def test_bootstrap_draws_every_sample_with_boolean_labels():
    """The resampling reaches every member and non-member (index 0 included); a callable statistic gets
    boolean labels, members first."""
    scores = np.arange(10.0)
    member = np.r_[np.ones(5, bool), np.zeros(5, bool)]
    seen_scores, label_dtypes = set(), set()

    def stat(s, m):
        seen_scores.update(s.tolist())
        label_dtypes.add(m.dtype)
        assert m[:5].all() and not m[5:].any()
        return float(s[m].mean() - s[~m].mean())

    bootstrap_ci(scores, member, stat, n_boot=200, seed=0)
    assert seen_scores == set(scores.tolist())
    assert label_dtypes == {np.dtype(bool)}


def test_loss_attack_accepts_its_smallest_parameters():
    attack = ATTACKS.get("loss")()
    attack.validate(LossParams(steps=[0, 999], draws=1, max_batch=1), 1000, "attacks.loss")
    for bad in (LossParams(max_batch=0), LossParams(draws=0), LossParams(steps=[1000]), LossParams(steps=[])):
        with pytest.raises(ConfigError, match="attacks.loss"):
            attack.validate(bad, 1000, "attacks.loss")


@pytest.mark.parametrize("name", ["ddpm", "smld", "vpsde", "vesde"])
def test_training_steps_follow_the_given_generator_not_the_global_rng(name):
    """Mutation testing found ``sample_train`` could ignore its generator unnoticed (the global seed hid it)."""
    from mia_ray.config import FamilyConfig
    from mia_ray.families import make_family

    fam = make_family(FamilyConfig(name=name))
    torch.manual_seed(1)
    a = fam.sample_train(64, torch.Generator().manual_seed(5))
    torch.manual_seed(2)
    b = fam.sample_train(64, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    c = fam.sample_train(64, torch.Generator().manual_seed(6))
    assert not torch.equal(a, c)


def test_split_checks_the_pool_edges_and_compares_ids():
    """Mutation testing found these split rules untested: an id equal to the pool size or negative is outside
    the pool, equal seeds and pool sizes do not make two splits equal, booleans are not sizes."""
    from mia_ray.data.split import Split, make_split
    from mia_ray.errors import ConfigError, DataError

    ok = dict(members=np.array([0, 1, 2]), eval_members=np.array([1]), nonmembers=np.array([3]), seed=0)
    for bad in ([0, 1, 4], [-1, 1, 2]):
        with pytest.raises(DataError, match=r"^split: members holds sample ids outside the pool \[0, 4\)$"):
            Split(**{**ok, "members": np.array(bad)}, pool_size=4).check()
    Split(**ok, pool_size=4).check()
    a = Split(**ok, pool_size=4)
    assert a == Split(**ok, pool_size=4)
    assert a != Split(**{**ok, "nonmembers": np.array([5])}, pool_size=4)
    with pytest.raises(ConfigError, match=r"^split\.train_size = True; allowed: an integer >= 1$"):
        make_split(10, True, 1, 0)
    assert len(make_split(10, 1, 1, 0).members) == 1


@pytest.mark.parametrize("name", ["vpsde", "vesde"])
def test_continuous_training_times_are_uniform_on_eps_to_one(name):
    """t ~ U[eps, 1], recomputed from the same generator (mutants scaling or shifting t by eps survived a range
    test); the step returned is t T."""
    from mia_ray.config import FamilyConfig
    from mia_ray.families import make_family

    fam = make_family(FamilyConfig(name=name))
    steps = fam.sample_train(1000, torch.Generator().manual_seed(5))
    u = torch.rand(1000, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    torch.testing.assert_close(steps, (u * (1 - fam.eps) + fam.eps) * fam.T, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["ddpm", "vesde"])
def test_prior_log_density_of_a_single_sample(name):
    from mia_ray.config import FamilyConfig
    from mia_ray.families import make_family

    fam = make_family(FamilyConfig(name=name))
    z = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    both = fam.prior_logp(torch.cat([z, 2 * z]))
    torch.testing.assert_close(fam.prior_logp(z), both[:1])
