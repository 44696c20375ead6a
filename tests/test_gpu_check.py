"""benchmarks/gpu_check.py runs end to end (--quick, CPU) and its JSON feeds --estimate-from."""

import json
import os
import sys
import types

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

import gpu_check  # noqa: E402
import torch  # noqa: E402

from mia_ray.estimate import Timing  # noqa: E402


def test_gpu_check_quick_writes_a_timing_the_estimate_reads(tmp_path):
    out = gpu_check.main(["--quick", "--out", str(tmp_path / "g.json")])
    for k in ("forward_per_s_fp32", "loss_samples_steps_per_s", "loss_speedup_vs_reference",
              "likelihood_s_per_sample", "train_plain_steps_per_s", "train_dp_steps_per_s"):
        assert out[k] > 0, k
    assert json.loads((tmp_path / "g.json").read_text())["params"] == out["params"]
    assert Timing.from_json(str(tmp_path / "g.json")).device == out["device"]


class _TinyNet(torch.nn.Module):
    """A one-conv stand-in with UNet2DModel's call signature (compiles in seconds on CPU)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x, tau):
        return types.SimpleNamespace(sample=torch.tanh(self.conv(x)) * tau[:, None, None, None])


def test_compiled_forwards_reports_eager_and_compiled_side_by_side():
    torch.manual_seed(0)
    x, tau = torch.randn(4, 1, 8, 8), torch.rand(4)
    out = gpu_check.compiled_forwards(_TinyNet().eval(), x, tau, torch.device("cpu"), amp=False)
    assert out["eager_batches_per_s"] > 0
    assert set(out) == {"eager_batches_per_s", "default"}  # CUDA graphs are measured on CUDA only
    d = out["default"]
    assert d["batches_per_s"] > 0 and d["max_abs_diff"] < 1e-5  # the same network, compiled
    assert d["break_even_batches"] is None or d["break_even_batches"] > 0
