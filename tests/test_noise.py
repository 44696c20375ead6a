"""Keyed noise: the right distributions, a pure function of the keys, independent of batching."""

import numpy as np
import pytest
import torch
from scipy import stats

from mia_ray import noise as keyed


def _keys(n: int, seed: int = 0) -> torch.Tensor:
    return keyed.combine(seed, torch.arange(n), 7)


def test_normal_is_standard_normal():
    z = keyed.normal(_keys(1000), (100,)).double().numpy().ravel()  # 100k draws
    assert z.shape == (100_000,)
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.01
    assert stats.kstest(z, "norm").pvalue > 1e-3
    # elements of one key are not correlated with each other, nor with the next key's
    a = z.reshape(1000, 100)
    assert abs(np.corrcoef(a[:, 0], a[:, 1])[0, 1]) < 0.15
    assert abs(np.corrcoef(a[:-1, 0], a[1:, 0])[0, 1]) < 0.15


def test_rademacher_is_plus_minus_one_with_mean_zero():
    v = keyed.rademacher(_keys(1000), (100,)).numpy().ravel()
    assert set(np.unique(v).tolist()) == {-1.0, 1.0}
    assert abs(v.mean()) < 0.02  # 5 standard errors of 100k fair signs


@pytest.mark.parametrize("draw", [keyed.normal, keyed.rademacher])
def test_same_keys_same_values_different_keys_different_values(draw):
    a = draw(_keys(64), (1, 8, 8))
    assert a.shape == (64, 1, 8, 8)
    np.testing.assert_array_equal(draw(_keys(64), (1, 8, 8)), a)
    b = draw(_keys(64, seed=1), (1, 8, 8))
    assert (a != b).flatten(1).any(1).all()  # every key's tensor changes with the seed
    assert len({tuple(r.tolist()) for r in a.flatten(1)}) == 64  # and differs between sample ids


@pytest.mark.parametrize("draw", [keyed.normal, keyed.rademacher])
def test_values_do_not_depend_on_how_many_keys_are_drawn_at_once(draw):
    keys = _keys(300)
    whole = draw(keys, (1, 8, 8))
    np.testing.assert_array_equal(draw(keys[:5], (1, 8, 8)), whole[:5])
    np.testing.assert_array_equal(draw(keys[123:124], (1, 8, 8)), whole[123:124])
    np.testing.assert_array_equal(draw(keys.flip(0), (1, 8, 8)), whole.flip(0))
    np.testing.assert_array_equal(draw(keys.view(30, 10), (1, 8, 8)), whole.view(30, 10, 1, 8, 8))


def test_combine_is_a_pure_function_of_its_parts():
    ids = torch.tensor([0, 1, 2, 3])
    np.testing.assert_array_equal(keyed.combine(0, ids, 5), keyed.combine(0, ids, 5))
    k = keyed.combine(0, ids, 5)
    assert len(set(k.tolist())) == 4
    for other in (keyed.combine(1, ids, 5), keyed.combine(0, ids, 6), keyed.combine(0, 5, ids)):
        assert (other != k).all()
    # broadcasting gives the same keys as the element-wise call
    grid = keyed.combine(0, ids[:, None], torch.arange(3)[None])
    assert grid.shape == (4, 3)
    assert grid[2, 1] == keyed.combine(0, torch.tensor(2), torch.tensor(1))


def test_dtype_and_device_follow_the_request():
    z = keyed.normal(_keys(4), (2, 3), dtype=torch.float64)
    assert z.dtype == torch.float64 and z.shape == (4, 2, 3) and z.device == torch.device("cpu")
    assert torch.isfinite(z).all()
