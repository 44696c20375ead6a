"""The door against inputs a real user brings (door5): damaged or degenerate data files, checkpoints that load but
cannot be scored, CLI flags and overrides, results folders. Each is refused with one line naming the key or file,
before any compute, or was read with the wrong science before."""

from __future__ import annotations

import sys

import pytest
import sweep_files


@pytest.mark.parametrize("blank", ["", " "])
def test_a_blank_estimate_from_is_refused_not_a_real_sweep(tmp_path, capsys, monkeypatch, blank):
    """'' was falsy: neither an estimate nor a refusal, the whole sweep was trained."""
    from mia_ray import sweep

    monkeypatch.setattr(sweep, "_run", lambda args: pytest.fail("the sweep ran"))
    path = sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"))
    assert sweep.main([path, "--estimate-from", blank]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --estimate-from {blank!r}; allowed: the path of a timings JSON file (benchmarks/" \
                  "gpu_check.py writes one), or --estimate to time this machine\n"
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
