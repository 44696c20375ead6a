"""A sweep killed mid-write (kill -9 of the driver, Ray and its workers at once) leaves the hidden temporary
file of the result it was writing; the rerun that writes the same result clears it (and only its own)."""

import os

import pyarrow.parquet as pq

from mia_ray import results


def _leftover(folder: str, name: str, tag: str) -> str:
    """A truncated temporary file as write_atomic leaves it when its writer is killed before the rename."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f".{name}.{tag}.tmp")
    with open(path, "wb") as f:
        f.write(b"PAR1 truncated")
    return path


def _audit_row(trial_id: str) -> dict:
    return {"sweep": "s", "trial_id": trial_id, "target_id": "0" * 16, "attack": "loss", "step": 10,
            "method": "gdp", "epsilon_lb": 0.5}


def test_rewriting_a_trial_table_clears_its_stale_temporary_files(tmp_path):
    root = str(tmp_path / "sweep")
    folder = os.path.join(root, "audit")
    mine = [_leftover(folder, "T1.parquet", "a" * 32), _leftover(folder, "T1.parquet", "b" * 32)]
    other = _leftover(folder, "T2.parquet", "c" * 32)  # another trial's writer may be mid-write: kept
    path = results.write_trial_table(root, "audit", "T1", [_audit_row("T1")])
    assert pq.read_table(path).column("trial_id").to_pylist() == ["T1"]
    assert not any(os.path.exists(p) for p in mine)
    assert os.path.exists(other)
    assert sorted(os.listdir(folder)) == sorted(["T1.parquet", os.path.basename(other)])


def test_rewriting_a_grid_and_the_sweep_yaml_clears_their_stale_temporary_files(tmp_path):
    root = str(tmp_path / "sweep")
    grid = _leftover(os.path.join(root, "grids"), "T1.png", "d" * 32)
    other = _leftover(os.path.join(root, "grids"), "T2.png", "e" * 32)
    yaml = _leftover(root, "sweep.yaml", "f" * 32)
    results.write_grid(root, "T1", b"\x89PNG")
    results.write_text_atomic(root, "sweep.yaml", "name: s\n")
    assert not os.path.exists(grid) and not os.path.exists(yaml)
    assert os.path.exists(other)
    with open(os.path.join(root, "sweep.yaml")) as f:
        assert f.read() == "name: s\n"


def test_only_the_writers_own_temporary_names_are_cleared(tmp_path):
    """Only ``.<name>.<32 hex>.tmp`` (write_atomic's and write_bytes_atomic's names) is a temporary of ``name``:
    ``.sweep.yaml.bak.<hex>.tmp`` is another file's (``sweep.yaml.bak``, maybe being written now) and
    ``.T1.parquet.keep.tmp`` is no writer's; both matched ``.<name>.*.tmp`` and were deleted."""
    root = str(tmp_path / "sweep")
    folder = os.path.join(root, "audit")
    kept = [_leftover(root, "sweep.yaml.bak", "a" * 32), _leftover(folder, "T1.parquet", "keep"),
            _leftover(folder, "T1.parquet", "A" * 32), _leftover(folder, "T1.parquet.x", "b" * 32)]
    mine = _leftover(folder, "T1.parquet", "0123456789abcdef" * 2)
    results.write_text_atomic(root, "sweep.yaml", "name: s\n")
    results.write_trial_table(root, "audit", "T1", [_audit_row("T1")])
    assert not os.path.exists(mine)
    assert all(os.path.exists(p) for p in kept), [p for p in kept if not os.path.exists(p)]
