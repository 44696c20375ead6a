"""The paper's three findings, checked on a sweep's metrics with a step-wise attack (the loss attack), and
(schema v2) whether every DP claim survives the privacy audit.

1. Intermediate diffusion steps leak most: the best step lies strictly inside the evaluated range. A best step at
   an end of that range refutes it only when the end is one of the diffusion's (step 0 or T - 1, T from the
   targets' specs); otherwise the sweep did not evaluate far enough to tell (not tested: steps [10..200] peaking
   at 200 say nothing about 200..999).
2. Smaller training sets leak more: without DP, the best-step AUC falls as the training set grows.
3. DP-SGD pushes the AUC towards 0.5: at the step where the model trained without DP leaks most, every
   finite ε is closer to chance than ε = ∞. (The DP model's own best step would be a maximum over noisy
   AUCs, biased above 0.5 even at chance: about 0.59 over 14 independent steps of 64 + 64 samples, 0.55-0.64 in
   90 % of runs, simulated.)

Each check says whether the finding holds on this sweep, or that the sweep lacks the axis to test it,
and shows its evidence. Findings 1 and 2 look only at settings without DP that leak (AUC 95% CI above
0.5, or AUC >= 0.6 without a CI): a model at chance has a random best step.

Which figure each finding uses (``Finding.basis``): finding 1 needs the AUC of every step, so it uses the
oracle per-step AUCs. With ``calibrated/`` (schema v2), findings 2 and 3 use the **test-half AUC at the step
chosen on the calibration half** -- unbiased, so DP is judged at each model's own calibrated step; without it
(v1 results) they use the oracle AUCs as above.
4. (schema v2, when ``audit/`` has DP targets) DP claims hold: on every DP target the Clopper–Pearson ε lower
   bound (threshold from the calibration half, counts from the test half, alpha 0.05) is at most ε spent; a
   bound above it is flagged as a failed DP claim (docs/audit.md). GDP is shown, not judged: it is a bound only
   for Gaussian-like mechanisms.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.calibrated import dp_claims
from analysis.loader import Results
from analysis.tables import attack_is_stepwise, attacks, per_step, setting_columns, sort_settings
from mia_ray.steps import best_rows

LEAK_AUC = 0.6  # without a bootstrap CI (several seeds), a setting "leaks" at this mean AUC or above
ORACLE = "oracle AUC: best step and AUC on the same samples"
CALIBRATED = "calibrated: test-half AUC at the step chosen on the calibration half"


@dataclass
class Finding:
    claim: str
    holds: bool | None  # None: the sweep cannot test it (a missing axis, or no setting leaks)
    evidence: list[str]  # one line per setting (or why the sweep cannot test it)
    basis: str = ORACLE  # the figure the verdict is judged on


def _eps(e: float) -> str:
    return "∞" if math.isinf(e) else f"{e:g}"


def _label(row, keys: list[str], skip: str) -> str:
    fmt = {"train_size": lambda v: f"n={v}", "epsilon": lambda v: f"ε={_eps(v)}"}
    return " ".join(fmt.get(k, str)(row[k]) for k in keys if k != skip)


def _leaks(row) -> bool:
    low = row.get("auc_ci_low", np.nan)
    return bool(low > 0.5) if pd.notna(low) else bool(row["auc"] >= LEAK_AUC)


def last_steps(results) -> dict[str, int]:
    """T - 1 of each family, from the targets' specs (empty without ``targets/``: then the evaluated ends count
    as the diffusion's)."""
    targets = getattr(results, "targets", None)
    if targets is None or targets.empty or "spec_json" not in targets.columns:
        return {}
    out = {}
    for family, spec in zip(targets["family"], targets["spec_json"], strict=True):
        num_steps = json.loads(spec).get("family", {}).get("num_steps") if isinstance(spec, str) else None
        if num_steps:
            out[family] = int(num_steps) - 1
    return out


def intermediate_steps(steps: pd.DataFrame, keys: list[str], last_step: dict[str, int] | None = None) -> Finding:
    claim = "intermediate diffusion steps leak most"
    best = _plain(best_rows(steps, keys))
    leaking = [r for _, r in best.iterrows() if _leaks(r)]
    if steps["step"].nunique() < 3 or not leaking:
        why = "fewer than 3 steps evaluated" if steps["step"].nunique() < 3 else "no setting without DP leaks"
        return Finding(claim, None, [why])
    verdicts, parts = [], []
    for r in leaking:
        s = steps[(steps[keys] == r[keys]).all(axis=1)].sort_values("step")
        first, last = s.iloc[0], s.iloc[-1]
        line = (f"{_label(r, keys, '')}: step {first['step']} {first['auc']:.2f}, best step {r['step']} "
                f"{r['auc']:.2f}, step {last['step']} {last['auc']:.2f}")
        end = (last_step or {}).get(r.get("family"))
        ends = (first["step"], last["step"]) if end is None else (0, end)  # T unknown: the evaluated ends
        if first["step"] < r["step"] < last["step"]:
            verdicts.append(True)
        elif r["step"] in ends:  # best at the diffusion's own first or last step
            verdicts.append(False)
        else:  # best at an evaluated end inside the diffusion: the curve may rise beyond it
            verdicts.append(None)
            line += f" (best at an end of the steps evaluated, inside 0..{end}: evaluate beyond it to test)"
        parts.append(line)
    holds = False if False in verdicts else (None if None in verdicts else True)
    return Finding(claim, holds, parts)


def smaller_sets(best: pd.DataFrame, keys: list[str], basis: str = ORACLE) -> Finding:
    claim = "smaller training sets leak more (no DP)"
    plain = _plain(best)
    group = [k for k in keys if k != "train_size"]
    ok, parts = True, []
    for _, g in plain.groupby(group, sort=False):
        g = g.sort_values("train_size")
        if len(g) < 2 or not any(_leaks(r) for _, r in g.iterrows()):
            continue
        ok &= bool((np.diff(g["auc"].to_numpy()) <= 0).all())
        chain = " > ".join(f"n={r.train_size} {r.auc:.2f}" for r in g.itertuples())
        parts.append(f"{_label(g.iloc[0], keys, 'train_size')}: {chain}")
    if not parts:
        return Finding(claim, None, ["needs at least two train_sizes with a leaking setting"], basis)
    return Finding(claim, bool(ok), parts, basis)


def dp_towards_chance(steps: pd.DataFrame, keys: list[str]) -> Finding:
    claim = "DP-SGD pushes the AUC towards 0.5"
    group = [k for k in keys if k != "epsilon"]
    ok, parts = True, []
    for _, g in steps.groupby(group, sort=False):
        plain = g[np.isinf(g["epsilon"])]
        if plain.empty or np.isinf(g["epsilon"]).all():
            continue
        at = best_rows(plain, group)["step"].iloc[0]
        g = g[g["step"] == at].sort_values("epsilon", ascending=False)
        gap = abs(g["auc"].iloc[0] - 0.5)
        ok &= bool((abs(g["auc"].iloc[1:] - 0.5) < gap).all())
        chain = " → ".join(f"ε={_eps(r.epsilon)} {r.auc:.2f}{_chance(r)}" for r in g.itertuples())
        parts.append(f"{_label(g.iloc[0], keys, 'epsilon')} at step {at} (best without DP): {chain}")
    if not parts:
        return Finding(claim, None, ["needs ε = ∞ and at least one finite ε"])
    return Finding(claim, bool(ok), parts)


def dp_towards_chance_calibrated(cal: pd.DataFrame, keys: list[str]) -> Finding:
    """Finding 3 on calibrated figures: each model's test-half AUC at its own calibrated step (unbiased, so no
    need to borrow the undefended model's step); judged only where the model without DP leaks."""
    claim = "DP-SGD pushes the AUC towards 0.5"
    group = [k for k in keys if k != "epsilon"]
    ok, parts = True, []
    for _, g in cal.groupby(group, sort=False):
        if not np.isinf(g["epsilon"]).any() or np.isinf(g["epsilon"]).all():
            continue
        g = g.sort_values("epsilon", ascending=False)
        if not _leaks(g.iloc[0]):  # an undefended model at chance: nothing for DP to push towards 0.5
            continue
        gap = abs(g["auc"].iloc[0] - 0.5)
        ok &= bool((abs(g["auc"].iloc[1:] - 0.5) < gap).all())
        chain = " → ".join(f"ε={_eps(r.epsilon)} {r.auc:.2f}{_chance(r)}" for r in g.itertuples())
        parts.append(f"{_label(g.iloc[0], keys, 'epsilon')} (test AUC at each calibrated step): {chain}")
    if not parts:
        why = "needs ε = ∞ that leaks (test AUC CI above 0.5, or >= 0.6) and at least one finite ε"
        return Finding(claim, None, [why], CALIBRATED)
    return Finding(claim, bool(ok), parts, CALIBRATED)


def calibrated_settings(results, attack: str, keys: list[str]) -> pd.DataFrame:
    """One row per setting: mean over seeds of the test-half AUC at the calibrated step (``auc``), the chosen
    step, and the test AUC's CI for single-seed settings; empty without ``calibrated/`` rows of the attack."""
    cal = getattr(results, "calibrated", None)
    if cal is None or cal.empty or not (cal["attack"] == attack).any():
        return pd.DataFrame()
    c = cal[cal["attack"] == attack].drop_duplicates("trial_id")
    grouped = c.groupby(keys, sort=False)
    out = grouped.agg(auc=("test_auc", "mean"), step=("chosen_step", "first"), seeds=("trial_id", "nunique"))
    single = out["seeds"] == 1
    out["auc_ci_low"] = grouped["test_auc_ci_low"].first().where(single)
    out["auc_ci_high"] = grouped["test_auc_ci_high"].first().where(single)
    return sort_settings(out.reset_index().dropna(subset=["auc"]), keys)


def dp_claims_hold(results) -> Finding | None:
    """Finding 4: every DP target's Clopper–Pearson ε lower bound is at most its ε spent (None: no audit)."""
    claims = dp_claims(results) if getattr(results, "audit", None) is not None else pd.DataFrame()
    if claims.empty:
        return None
    claim = "DP claims hold: the empirical ε lower bound stays below ε spent on every DP target"
    holds = not bool(claims["failed_claim"].any())
    basis = "ε lower bound: Clopper–Pearson at the calibrated step, 95%, δ of the target (GDP shown, not judged)"
    if holds and len(claims) > 1:  # one line; every target's bound is in the summary table and the report
        worst = claims.sort_values("epsilon_lb_cp", ascending=False, kind="stable").iloc[0]
        return Finding(claim, True, [
            f"{len(claims)} DP targets, each ε_LB ≤ ε spent; largest ε_LB {worst.epsilon_lb_cp:.3g} "
            f"({worst.family} n={worst.train_size} ε={_eps(worst.epsilon)}, {worst.attack}; ε spent "
            f"{worst.epsilon_spent:.3g})"], basis)
    parts = []
    for r in claims.itertuples():
        flag = "  <- FAILED DP CLAIM" if r.failed_claim else ""
        parts.append(f"{r.family} n={r.train_size} ε={_eps(r.epsilon)} seed {r.seed}: ε spent {r.epsilon_spent:.3g}"
                     f" vs ε_LB {r.epsilon_lb_cp:.3g} (Clopper–Pearson, {r.attack}; GDP {r.epsilon_lb_gdp:.3g}){flag}")
    return Finding(claim, holds, parts, basis)


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """The settings trained without DP (all settings when the sweep has none)."""
    inf = np.isinf(frame["epsilon"])
    return frame[inf] if inf.any() else frame


def _chance(r) -> str:
    low, high = getattr(r, "auc_ci_low", np.nan), getattr(r, "auc_ci_high", np.nan)
    return " (CI holds 0.5)" if pd.notna(low) and low <= 0.5 <= high else ""


def check(results: Results, attack: str | None = None) -> tuple[str | None, list[Finding]]:
    """The attack checked (``attack``, else loss, else the first step-wise one) and the three findings."""
    names = [a for a in attacks(results) if attack_is_stepwise(results, a)]
    attack = attack or ("loss" if "loss" in names else (names[0] if names else None))
    if attack is None:
        return None, []
    keys = setting_columns(results.metrics)
    steps = per_step(results.metrics, attack)
    steps = sort_settings(steps[steps["step"].notna() & steps["auc"].notna()], [*keys, "step"])
    if steps.empty:
        return attack, []
    best = best_rows(steps, keys)
    cal = calibrated_settings(results, attack, keys)
    first = intermediate_steps(steps, keys, last_steps(results))
    if cal.empty:
        found = [first, smaller_sets(best, keys), dp_towards_chance(steps, keys)]
    else:
        found = [first, smaller_sets(cal, keys, CALIBRATED), dp_towards_chance_calibrated(cal, keys)]
    audit = dp_claims_hold(results)
    return attack, found + ([audit] if audit is not None else [])


def format_findings(attack: str | None, findings: list[Finding]) -> str:
    """Plain-text lines: a verdict per finding, then its evidence (AUC at each setting's best step)."""
    if not findings:
        return "findings: no step-wise attack in this sweep"
    verdict = {True: "holds", False: "does NOT hold", None: "not tested"}
    out = [f"the paper's findings ({attack} attack; AUC means over seeds):"]
    for f in findings:
        out.append(f"  [{verdict[f.holds]}] {f.claim}  ({f.basis})")
        out.extend(f"      {line}" for line in f.evidence)
    return "\n".join(out)
