"""Rows per network call: the CPU cap (``DiffusionAdapter.max_rows``) is obeyed by every attack engine and
changes no score (forwards are padded, so a row's output does not depend on its batch-mates)."""

import pytest
import torch
from conftest import TINY_MODEL

from mia_ray.attacks import ATTACKS, DiffusionAdapter
from mia_ray.attacks import adapter as adapter_module
from mia_ray.attacks.likelihood import LikelihoodParams, bits_per_dim_probes_nfe
from mia_ray.attacks.loss import MIN_ROWS, LossParams
from mia_ray.config import FamilyConfig
from mia_ray.families import make_family
from mia_ray.models import build_unet

pytestmark = pytest.mark.usefixtures("one_thread")


class CountingNet(torch.nn.Module):
    """The adapter's network, recording the rows of every call."""

    def __init__(self, net):
        super().__init__()
        self.inner, self.calls = net, []

    def forward(self, x, tau):
        self.calls.append(x.shape[0])
        return self.inner(x, tau)


@pytest.fixture(scope="module")
def adapter():
    torch.manual_seed(0)
    unet = build_unet(TINY_MODEL, 8, 1)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ad = DiffusionAdapter(make_family(FamilyConfig(name="ddpm")), unet)
    ad.net = CountingNet(ad.net)
    return ad


def _images(n):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(1)).clamp(-1, 1)


def _run(adapter, name, params, n, monkeypatch, row_floats):
    """(calls' row counts, score) of attack ``name`` with the CPU cap set by ``row_floats``."""
    monkeypatch.setattr(adapter_module, "CPU_ROW_FLOATS", row_floats)
    adapter.net.calls = []
    out = ATTACKS.get(name)().run(adapter, _images(n), torch.arange(n), params)
    return list(adapter.net.calls), out.score


def test_the_cpu_cap_follows_the_first_level_activation_size(adapter):
    c0 = TINY_MODEL.block_out_channels[0]
    cap = adapter_module.CPU_ROW_FLOATS // (c0 * 64)
    assert 1024 > cap > MIN_ROWS  # the rule really binds at the default max_batch
    assert adapter.max_rows(1024, (5, 1, 8, 8)) == cap
    assert adapter.max_rows(100, (5, 1, 8, 8)) == 100  # max_batch stays the upper bound
    assert adapter.max_rows(8, (5, 1, 8, 8)) == 8  # ... also below MIN_ROWS (forwards are padded anyway)
    assert adapter.max_rows(1024, (5, 1, 64, 64)) == max(MIN_ROWS, adapter_module.CPU_ROW_FLOATS // (c0 * 4096))
    assert adapter.max_rows(1024, (5, 3, 512, 512)) == MIN_ROWS  # never below MIN_ROWS
    cuda = DiffusionAdapter.__new__(DiffusionAdapter)
    cuda.device, cuda.first_channels = torch.device("cuda"), c0
    assert cuda.max_rows(1024, (5, 1, 8, 8)) == 1024  # on CUDA the configured batch


def test_loss_attack_calls_are_capped_and_scores_unchanged(adapter, monkeypatch):
    params = LossParams(steps=list(range(0, 1000, 10)), draws=3)  # 2 x 100 x 3 = 600 rows
    calls, capped = _run(adapter, "loss", params, 2, monkeypatch, 64 * 16 * 48)  # cap 48 rows
    assert max(calls) == 48 and sum(calls) == 600
    calls, whole = _run(adapter, "loss", params, 2, monkeypatch, 2**40)  # no cap: max_batch (1024)
    assert calls == [600]
    assert (capped == whole).all()  # bitwise


@pytest.mark.parametrize("name", ["pia", "secmi", "sima"])
def test_step_wise_attacks_calls_are_capped_and_scores_unchanged(adapter, monkeypatch, name):
    params = ATTACKS.get(name).Params()
    calls, capped = _run(adapter, name, params, 40, monkeypatch, 1)  # cap = MIN_ROWS
    assert max(calls) == MIN_ROWS
    calls, whole = _run(adapter, name, params, 40, monkeypatch, 2**40)
    assert max(calls) > MIN_ROWS
    assert (capped == whole).all()


def test_likelihood_is_solved_in_capped_groups_with_unchanged_bits_per_dim(adapter, monkeypatch):
    x, ids = _images(20), torch.arange(20)
    params = LikelihoodParams(rtol=1e-2, atol=1e-2, probes=1)
    monkeypatch.setattr(adapter_module, "CPU_ROW_FLOATS", 1)  # groups of MIN_ROWS = 16 and 4 samples
    adapter.net.calls = []
    grouped, nfe_grouped = bits_per_dim_probes_nfe(adapter, x, ids, params)
    assert max(adapter.net.calls) == MIN_ROWS
    monkeypatch.setattr(adapter_module, "CPU_ROW_FLOATS", 2**40)
    adapter.net.calls = []
    whole, nfe_whole = bits_per_dim_probes_nfe(adapter, x, ids, params)
    assert max(adapter.net.calls) == 20
    assert torch.equal(grouped, whole) and torch.equal(nfe_grouped, nfe_whole)


def test_likelihood_of_no_samples_is_empty(adapter):
    bpd, nfe = bits_per_dim_probes_nfe(adapter, _images(0), torch.arange(0), LikelihoodParams(probes=3))
    assert bpd.shape == (0, 3) and nfe.shape == (0,)
