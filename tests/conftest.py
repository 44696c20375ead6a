"""Shared fixtures: small digits data and tiny model configs that train in seconds on 2 CPU cores."""

import copy
import os

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
# Ray workers inherit the environment of the process that starts Ray: let them import test plugins.
_here = os.path.dirname(os.path.abspath(__file__))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_here, os.environ.get("PYTHONPATH")) if p)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from mia_ray.config import DataConfig, FamilyConfig, ModelConfig, TargetSpec, TrainConfig  # noqa: E402

torch.set_num_threads(1)  # tiny models gain little from 2; oversubscribed OpenMP threads were measured far slower

TINY_MODEL = ModelConfig(block_out_channels=[16, 32], layers_per_block=1, norm_num_groups=8)


def tiny_spec(family="ddpm", steps=50, train_size=64, **kw) -> TargetSpec:
    return TargetSpec(
        family=FamilyConfig(name=family),
        model=copy.deepcopy(TINY_MODEL),  # a copy: a test that edits its spec cannot leak into others
        train=TrainConfig(steps=steps, batch_size=64, lr=2e-3),
        data=DataConfig(source="digits"),
        train_size=train_size,
        **kw,
    )


@pytest.fixture(scope="session")
def digits64() -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().images[:64] / 16 * 2 - 1).astype(np.float32)[:, None]


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module, restored after it: the tiny model gains little from two, and on a shared
    2-core box two OpenMP threads were measured 2x slower to train and up to 30x slower to solve the likelihood
    ODE than one. Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    """A target store shared by the tests of one module (targets trained once, reused)."""
    return str(tmp_path_factory.mktemp("store"))


# The slowest files (measured with --durations on 2 cores: Ray end-to-end runs of 40-160 s each) go first, so
# that `make test`'s two pytest-xdist workers (--dist loadfile --no-loadscope-reorder: keep this order) do not
# end with one of them alone on a long file.
SLOW_FIRST = ("test_sweep.py", "test_multinode.py", "test_lira.py", "test_autoscaling.py", "test_issue13_wiring.py",
              "test_pretrained.py", "test_console.py", "test_results_v2.py", "test_cli_claims.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
