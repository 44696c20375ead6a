"""Schema v1 and v2 side by side: a v1 folder written by the v1 code of record (tests/data/v1_results: two tiny
digits targets, eps inf and 10, loss at steps 0 and 100, likelihood on 4 + 4) stays readable, reportable and
checkable; the DP-claim check flags a lower bound above the spent epsilon and nothing else."""

from __future__ import annotations

import math
import os
import shutil
from types import SimpleNamespace

import pandas as pd
import pyarrow.parquet as pq
import pytest

import analysis
from analysis.calibrated import audit_table
from analysis.findings import check, dp_claims_hold, format_findings
from analysis.loader import AnalysisError
from mia_ray.results import SCHEMAS

V1 = os.path.join(os.path.dirname(__file__), "data", "v1_results")


@pytest.fixture
def v1(tmp_path) -> str:
    """A copy of the v1 fixture (the report is written into the results folder)."""
    return shutil.copytree(V1, tmp_path / "v1fixture")


def test_v1_folder_loads_with_nulls_for_v2_columns_and_empty_v2_tables(v1):
    r = analysis.load(v1)
    assert set(r.metrics["schema_version"]) == {1} and r.metrics["trial_id"].nunique() == 2
    raw = pq.read_table(os.path.join(V1, "metrics")).to_pandas()
    assert sorted(r.metrics["auc"]) == sorted(raw["auc"])  # values read as written
    assert r.splits["in_calibration"].isna().all() and len(r.splits) == len(pq.read_table(f"{V1}/splits"))
    for table in ("calibrated", "audit"):
        frame = getattr(r, table)
        assert frame.empty and list(frame.columns) == SCHEMAS[table].names


def test_v1_folder_reports_and_checks_findings(v1):
    r = analysis.load(v1)
    path, tables = analysis.report.build_report(r)
    assert os.path.getsize(path) > 10_000
    assert "calibrated" not in tables and "epsilon_audit" not in tables and "attack_comparison" in tables
    attack, found = check(r)
    assert attack == "loss" and len(found) == 3  # no audit/ -> no DP-claim finding
    assert all("oracle" in f.basis for f in found)
    text, _ = analysis.finish(v1, report=False)
    assert "ddpm-n16-epsinf-s0" in text and "ε_LB" not in text and "oracle AUC at the best step" in text


def test_v1_folder_missing_a_v1_column_is_refused_in_one_line(v1):
    path = os.path.join(v1, "splits", sorted(os.listdir(os.path.join(v1, "splits")))[0])
    pq.write_table(pq.read_table(path).drop(["in_eval"]), path)
    with pytest.raises(AnalysisError) as err:
        analysis.load(v1)
    message = str(err.value)
    assert "missing columns ['in_eval']" in message and "schema v1" in message and "\n" not in message


def _audit(rows) -> SimpleNamespace:
    """Audit rows (epsilon, epsilon_spent, cp bound, gdp bound) of one attack, one target each."""
    out = []
    for i, (eps, spent, cp, gdp) in enumerate(rows):
        common = {"trial_id": f"t{i}", "family": "ddpm", "dataset": "digits", "train_size": 64, "epsilon": eps,
                  "seed": i, "attack": "loss", "step": 100, "epsilon_spent": spent, "delta": 1e-5}
        out += [{**common, "method": "clopper_pearson", "epsilon_lb": cp}, {**common, "method": "gdp",
                                                                             "epsilon_lb": gdp}]
    return SimpleNamespace(audit=pd.DataFrame(out))


def test_a_bound_above_epsilon_spent_is_a_failed_dp_claim_judged_on_clopper_pearson_only():
    ok = _audit([(1.0, 0.99, 0.3, 2.5), (math.inf, math.inf, 3.0, 9.0)])  # GDP above: not judged; no DP: no claim
    found = dp_claims_hold(ok)
    assert found.holds is True and len(found.evidence) == 1 and "FAILED" not in found.evidence[0]
    bad = _audit([(1.0, 0.99, 1.2, 2.5), (8.0, 7.9, 0.5, 0.7)])
    found = dp_claims_hold(bad)
    assert found.holds is False and "FAILED DP CLAIM" in found.evidence[0] and "FAILED" not in found.evidence[1]
    assert audit_table(bad)["failed_claim"].tolist() == [True, False]
    assert "[does NOT hold] DP claims hold" in format_findings("loss", [found])
    assert dp_claims_hold(SimpleNamespace(audit=pd.DataFrame())) is None
