"""The sweep's console (issue 14 item 4) and failed trials (item 2): a tiny sweep prints the plan, one line per
target and the summary (no Ray/Tune chatter, no traceback); a user error inside a trial fails that trial once,
with one line, the report is still written from what finished, and the exit status is 1."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sweep_files import read, write_sweep

from mia_ray.errors import DataError
from mia_ray.progress import SweepProgress

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "mia_ray_console_plugins"  # tests/mia_ray_console_plugins.py: fussy_digits fails for > 40 members


def run_cli(tmp: Path, sweep: str, *flags) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "OMP_NUM_THREADS": "1",
           "MIA_RAY_CACHE": str(tmp / "cache"), "MIA_RAY_TEST_FAILS": str(tmp / "fails.log")}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "mia_ray.sweep", sweep, "--output", str(tmp / "out"), *flags],
                          env=env, cwd=tmp, capture_output=True, text=True, timeout=900)


def fussy_sweep(tmp: Path, train_sizes: list[int]) -> str:
    return write_sweep(tmp / "sweep.yaml", str(tmp / "store"), name="console", train_sizes=train_sizes,
                       eval_size=8, data={"source": "fussy_digits"}, plugins=[PLUGIN],
                       attacks={"loss": {"steps": [0, 50]}},
                       # no utility: its feature net reads the pool in chunks this source refuses by design
                       utility={"enabled": False},
                       resources={"num_cpus": 2, "max_concurrent_trials": 1})


@pytest.mark.slow
def test_two_target_sweep_one_failing_in_its_trial(tmp_path):
    p = run_cli(tmp_path, fussy_sweep(tmp_path, [16, 48]))
    out = p.stdout + p.stderr
    lines = out.splitlines()
    assert p.returncode == 1, out
    for chatter in ("Traceback", "(raylet)", "Trial status", "Configuration for experiment", "INFO"):
        assert chatter not in out, out
    # plan (9 lines), 3 target lines, the summary table (2 + 1 rows) and the findings (7), paths, 2 errors
    assert len(lines) <= 40, f"{len(lines)} lines:\n{out}"
    failed = [ln for ln in p.stderr.splitlines() if ln.startswith("error: trial ddpm-n48")]
    assert len(failed) == 1 and "fussy_digits: cannot read 48 images at once" in failed[0], p.stderr
    assert (tmp_path / "fails.log").read_text().count("\n") == 1  # a user error is not retried
    assert "done 1/2: ddpm-n16" in p.stdout and "FAILED ddpm-n48" in p.stdout, p.stdout
    root = tmp_path / "out" / "console"
    assert set(read(str(root), "metrics")["train_size"]) == {16}  # what finished is kept and summarised
    assert (root / "report.html").exists() or "report:" in p.stdout, p.stdout
    assert len(list((tmp_path / "out" / "_tune").iterdir())) == 1  # Tune's logs of a run with a failure: kept


@pytest.mark.slow
def test_a_sweep_where_nothing_finished_says_so_in_one_line(tmp_path):
    """(with --verbose: Ray's and Tune's own output back, the same outcome)"""
    p = run_cli(tmp_path, fussy_sweep(tmp_path, [48]), "--verbose")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "Trial status" in p.stdout + p.stderr  # Tune's own table is back
    assert "error: no trial finished: nothing to summarise or report" in p.stderr.splitlines(), p.stderr


def test_console_on_a_terminal_is_one_bar_and_a_line_per_target():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    c = SweepProgress(3, done=1, stream=tty)
    c.trained("a", 2.0)
    c.finished("a", "loss AUC 0.900 (step 50)")
    c.failed("b", "data.path: x.npy image 3: contains NaN")
    c.close()
    text = tty.getvalue()
    assert "targets scored" in text and "3/3" in text and "trained 2/3" in text and "failed 1" in text
    assert "done 2/3: a  loss AUC 0.900 (step 50)" in text and "FAILED b: data.path: x.npy" in text
    plain = io.StringIO()
    c = SweepProgress(2, stream=plain)
    c.trained("a", 2.0)
    c.trained("b", None, stored=True)
    c.finished("a", "loss AUC 0.500")
    c.close()
    got = [ln.split("] ", 1)[1] for ln in plain.getvalue().splitlines()]
    assert got == ["trained 1/2: a (trained in 2 s)", "trained 2/2: b (found in the store)",
                   "done 1/2: a  loss AUC 0.500"]


def test_user_errors_are_found_behind_ray_errors():
    from ray.exceptions import RayTaskError

    from mia_ray.distributed.tuning import one_line, user_error

    cause = DataError("data.path: p.npy image 7: contains NaN or inf")
    wrapped = RayTaskError("train", "Traceback (most recent call last):\n  ...", cause).as_instanceof_cause()
    assert isinstance(wrapped, DataError) and str(wrapped) != str(cause)  # its text is the remote traceback
    assert user_error(wrapped) is cause and one_line(user_error(wrapped)) == str(cause)
    try:
        try:
            raise cause
        except DataError as e:
            raise RuntimeError("scoring failed") from e
    except RuntimeError as e:
        assert user_error(e) is cause
    assert user_error(RuntimeError("actor died")) is None


def test_known_harmless_dp_warnings_are_silenced_in_the_training_task():
    import warnings

    import numpy as np
    from conftest import tiny_spec

    from mia_ray.distributed.tuning import quiet_known_warnings
    from mia_ray.training.train import train_target

    spec = tiny_spec("ddpm", steps=2)
    spec.dp.epsilon = 10.0
    x = np.random.default_rng(0).uniform(-1, 1, (64, 1, 8, 8)).astype(np.float32)

    def messages(quiet: bool) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if quiet:
                quiet_known_warnings()
            train_target(spec, x, device="cpu", progress=False)
        return [str(w.message) for w in caught]

    loud = messages(False)
    assert any("Secure RNG turned off" in m for m in loud) and any("Full backward hook" in m for m in loud), loud
    assert not [m for m in messages(True) if "Secure RNG" in m or "Full backward hook" in m]


def test_list_and_dry_run_show_each_attacks_declared_cost(capsys, monkeypatch):
    from mia_ray.attacks.loss import LossAttack
    from mia_ray.sweep import main

    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "  cost: 31 fwd per sample (these defaults, T = 1000)" in out  # pia, pian, sima
    assert "  cost: ~95 fwd + ~380 bwd (estimate) per sample" in out  # likelihood: 4 probes, one backward each
    quick = str(ROOT / "sweeps" / "quickstart.yaml")
    assert main([quick, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "attack pia: 128 samples x (6 fwd) = 768 forward passes per target" in out  # 5 steps + x0's pass
    assert "attack secmi: 128 samples x (11 fwd) = 1,408 forward passes per target" in out
    assert "attack likelihood: 64 samples x (~95 fwd + ~380 bwd (estimate)) = ~6,080 forward + ~24,320 backward" in out
    assert "step-draws" not in out and "network passes in all: ~" in out

    def undeclared(self, params, num_steps):
        raise NotImplementedError

    monkeypatch.setattr(LossAttack, "cost", undeclared)  # as a plugin attack that declares no cost
    assert main([quick, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "attack loss: 128 samples per target, cost undeclared" in out
    assert "(attacks without a declared cost not counted)" in out
    assert main(["--list"]) == 0 and "\n  cost undeclared\n" in capsys.readouterr().out
