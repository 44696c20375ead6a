"""benchmarks/gpu_check.py runs end to end (--quick, CPU) and its JSON feeds --estimate-from."""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

import gpu_check  # noqa: E402

from mia_ray.estimate import Timing  # noqa: E402


def test_gpu_check_quick_writes_a_timing_the_estimate_reads(tmp_path):
    out = gpu_check.main(["--quick", "--out", str(tmp_path / "g.json")])
    for k in ("forward_per_s_fp32", "loss_samples_steps_per_s", "loss_speedup_vs_reference",
              "likelihood_s_per_sample", "train_plain_steps_per_s", "train_dp_steps_per_s"):
        assert out[k] > 0, k
    assert json.loads((tmp_path / "g.json").read_text())["params"] == out["params"]
    assert Timing.from_json(str(tmp_path / "g.json")).device == out["device"]
