"""`make venv` (under `make test` and `make quickstart`) installs the CPU torch: PyPI's Linux torch wheels are CUDA
builds that pull several GB of CUDA wheels, so the README's "CPU build of torch" needs PyTorch's CPU index."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def planned(*variables: str) -> list[str]:
    """The commands `make venv` would run for a fresh venv (printed by make -n, nothing run)."""
    out = subprocess.run(["make", "-n", "-B", "venv", "VENV=/nonexistent/venv", *variables], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return out.splitlines()


@pytest.mark.parametrize("torch", [None, "torch==2.12.0"])
def test_torch_comes_from_the_cpu_index_before_anything_that_needs_it(torch):
    lines = planned(*([f"TORCH={torch}"] if torch else []))
    at = next(i for i, line in enumerate(lines) if "pip install" in line and "torch==" in line)
    assert CPU_INDEX in lines[at] and (torch or "torch==2.13.0") in lines[at]
    assert not any("torch==" in line for line in lines[at + 1:])
    project = next(i for i, line in enumerate(lines) if "pip install" in line and "-e " in line)
    assert at < project, "torch must be installed before the package (its torch>=2.1 then keeps the CPU build)"


def test_the_cpu_index_can_be_switched_off():
    lines = planned("TORCH_INDEX=")
    torch_line = next(line for line in lines if "torch==" in line)
    assert "--extra-index-url" not in torch_line and "download.pytorch.org" not in torch_line
