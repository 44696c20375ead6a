"""Each new attack's statistic recomputed from its paper's formula in a few lines, on a small UNet, from the
raw network call and the families' schedules written out here (not the attacks' or adapters' code)."""

import math

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL

from mia_ray.attacks import ATTACKS, DiffusionAdapter
from mia_ray.attacks.pia import PIAParams
from mia_ray.attacks.secmi import SecMIParams
from mia_ray.attacks.sima import SimAParams
from mia_ray.config import FamilyConfig
from mia_ray.families import make_family
from mia_ray.models import build_unet

T = 1000
# diffusers builds DDPM's betas in float32, so 1 - alpha_bar at small steps (1e-4 at step 0) carries a
# relative error of ~1e-3 against the float64 ladder below; statistics agree to that precision.
RTOL = 2e-3


def coefs(family: str, step: int) -> tuple[float, float, float]:
    """(a, s, tau) of integer ``step``: x_step = a x0 + s eps, network time input tau (README "Families")."""
    if family == "ddpm":  # betas linear 1e-4 -> 0.02, alpha_bar_u = prod_{i <= u} (1 - beta_i)
        abar = np.cumprod(1 - np.linspace(1e-4, 0.02, T))[step]
        return math.sqrt(abar), math.sqrt(1 - abar), float(step)
    if family == "smld":  # geometric sigma ladder 0.01 -> 50 over T steps
        return 1.0, 0.01 * (50 / 0.01) ** (step / (T - 1)), float(step)
    t = max(step / T, 1e-5)
    if family == "vpsde":  # beta(t) = 0.1 + 19.9 t
        log_mean = -0.25 * t * t * 19.9 - 0.5 * t * 0.1
        return math.exp(log_mean), math.sqrt(1 - math.exp(2 * log_mean)), t * (T - 1)
    return 1.0, 0.01 * (50 / 0.01) ** t, t * (T - 1)  # vesde


def eps(unet, family, x, step):
    """The network's noise prediction: VE families scale the input by 1 / sqrt(1 + s^2)."""
    a, s, tau = coefs(family, step)
    c_in = 1.0 if family in ("ddpm", "vpsde") else 1 / math.sqrt(1 + s * s)
    with torch.no_grad():
        return unet(c_in * x, torch.full((len(x),), tau)).sample.double()


def xt(family, x0, step, e):
    a, s, _ = coefs(family, step)
    return (a * x0.double() + s * e).float()


def ddim(unet, family, x, u, v):
    (au, su, _), (av, sv, _) = coefs(family, u), coefs(family, v)
    e = eps(unet, family, x, u)
    return (av * (x.double() - su * e) / au + sv * e).float()


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    net = build_unet(TINY_MODEL, 8, 1).eval()
    with torch.no_grad():  # an untrained UNet predicts ~0; scale its output layer so statistics are O(1)
        net.conv_out.weight.mul_(30)
    return net


@pytest.fixture
def x0():
    return torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1


FAMILIES = ["ddpm", "smld", "vpsde", "vesde"]


def run(name, family, unet, x0, params):
    adapter = DiffusionAdapter(make_family(FamilyConfig(name=family)), unet)
    out = ATTACKS.get(name)().run(adapter, x0, torch.arange(len(x0)), params)
    np.testing.assert_array_equal(out.score, -out.statistic)
    return out


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", ["pia", "pian"])
def test_pia(name, family, unet, x0):
    steps = [0, 10, 200]
    out = run(name, family, unet, x0, PIAParams(steps=steps, p=4))
    e0 = eps(unet, family, x0, 0)
    if name == "pian":
        e0 = e0 / e0.abs().mean((1, 2, 3), keepdim=True) * (2 / math.pi) ** 0.5
    want = [((eps(unet, family, xt(family, x0, t, e0), t) - e0).abs() ** 4).sum((1, 2, 3)) for t in steps]
    assert out.steps == steps
    np.testing.assert_allclose(out.statistic, torch.stack(want).numpy(), rtol=RTOL)


@pytest.mark.parametrize("family", FAMILIES)
def test_pia_p_norm(family, unet, x0):
    out = run("pia", family, unet, x0, PIAParams(steps=[50], p=2))
    e0 = eps(unet, family, x0, 0)
    want = ((eps(unet, family, xt(family, x0, 50, e0), 50) - e0) ** 2).sum((1, 2, 3))
    np.testing.assert_allclose(out.statistic[0], want.numpy(), rtol=RTOL)


@pytest.mark.parametrize("family", FAMILIES)
def test_sima(family, unet, x0):
    steps = [0, 20, 600]
    out = run("sima", family, unet, x0, SimAParams(steps=steps))
    want = [(eps(unet, family, x0, t).abs() ** 4).sum((1, 2, 3)) for t in steps]
    np.testing.assert_allclose(out.statistic, torch.stack(want).numpy(), rtol=RTOL)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("t_sec, k", [(100, 10), (40, 20)])
def test_secmi(family, t_sec, k, unet, x0):
    """secmia.py: target_steps = range(0, t_sec, k)[1:]; x~ = ddim_multistep(x0, t_c=0, target_steps);
    x~' = singlestep(singlestep(x~, t_sec - k -> t_sec), t_sec -> t_sec - k); score = ||x~ - x~'||^2."""
    out = run("secmi", family, unet, x0, SecMIParams(t_sec=[t_sec], k=k))
    x, t_c = x0, 0
    for target in list(range(0, t_sec, k))[1:]:
        x, t_c = ddim(unet, family, x, t_c, target), target
    back = ddim(unet, family, ddim(unet, family, x, t_c, t_c + k), t_c + k, t_c)
    want = ((x.double() - back.double()) ** 2).sum((1, 2, 3))
    assert out.steps == [t_sec]
    np.testing.assert_allclose(out.statistic[0], want.numpy(), rtol=RTOL)


@pytest.mark.parametrize("family", FAMILIES)
def test_secmi_t_secs_share_one_chain_bit_for_bit(family, unet, x0):
    """Several t_sec in one run (one shared inversion chain): each row is the single-t_sec run's, bit for bit,
    in the order given."""
    t_secs = [60, 20, 40]
    out = run("secmi", family, unet, x0, SecMIParams(t_sec=t_secs, k=10))
    assert out.steps == t_secs
    for row, t in enumerate(t_secs):
        alone = run("secmi", family, unet, x0, SecMIParams(t_sec=[t], k=10))
        np.testing.assert_array_equal(out.statistic[row], alone.statistic[0])
        np.testing.assert_array_equal(out.score[row], alone.score[0])
