"""The decision a phase's sweep exists for: at its decision target, the configuration to train with,
how sure that is, and the one next run to make (OUT/decisions.csv, design.md's contract).

The decision target, unless the params name one (`decision_target`): the highest target at which
the fit is usable and enough batch sizes reached it to trust the shape there (at least 4, or two
thirds of the sweep's batch sizes where it has fewer than 6; never fewer than 3).
The configuration: the fewest expected hours among the candidates a recommendation may rest on
(plan/predict.py: measured, on a phase's own axis, or off the axes only where a cross-axis model
passed its check on this sweep); with no step times, the fewest samples within 10% without giving
up speed. Its margin: the other configurations of the same kind whose expected hours are within
MARGIN of it (the range a researcher can choose from at little cost).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..contracts import DECISION_COLUMNS, DECISION_EXTRA_COLUMNS
from ..words.decision import decision_summary
from .predict import RECOMMENDABLE, Prediction

#: the margin of a decision: configurations within this share of its expected hours
MARGIN = 0.10
_USABLE = ("ok", "extrapolated")


def _needed(n_batch_sizes: int) -> int:
    return int(min(4, max(3, math.ceil(2.0 * n_batch_sizes / 3.0))))


def decision_target(cbs_fit: pd.DataFrame, requested: float | None = None) -> tuple[float | None, str]:
    """(target, why): `requested` (params `decision_target`) when given; else the highest target with
    a usable fit that at least 4 batch sizes reached (2/3 of them where the sweep has fewer than 6,
    3 at least). None when no target qualifies."""
    if requested is not None and not (isinstance(requested, float) and math.isnan(requested)):
        return float(requested), "the params' decision_target"
    if cbs_fit is None or not len(cbs_fit):
        return None, "no target has a fit"
    fit = cbs_fit.copy()
    n_sizes = int(pd.to_numeric(fit.get("n_batch_sizes"), errors="coerce").max() or 0)
    need = _needed(n_sizes)
    reached = pd.to_numeric(fit.get("n_reached"), errors="coerce").fillna(0)
    ok = fit["status"].isin(_USABLE) & (reached >= need)
    if not ok.any():
        usable = fit[fit["status"].isin(_USABLE)]
        if not len(usable):
            return None, "no target has a usable fit (3 batch sizes must reach a target)"
        best = usable.loc[pd.to_numeric(usable["n_reached"], errors="coerce").idxmax()]
        return float(best["threshold"]), (f"no target was reached by {need} batch sizes: the target most of "
                                          "them reached")
    t = float(fit.loc[ok, "threshold"].astype(float).max())
    return t, f"the highest target with a usable fit that {need} or more of the {n_sizes} batch sizes reached"


def margin(pred: Prediction, chosen: int, share: float = MARGIN) -> dict:
    """The configurations a recommendation may rest on whose expected hours are within `share` of the
    chosen one's, along the same axis (or the same kind of split): their batch range and count."""
    tab = pred.table
    eh = tab["expected_hours"].to_numpy(dtype=float)
    ok = tab["basis"].isin(RECOMMENDABLE).to_numpy() & np.isfinite(eh)
    same = (tab["axis_phase"] == tab.at[chosen, "axis_phase"]).to_numpy()
    near = ok & same & (eh <= (1 + share) * eh[chosen])
    B = tab["total_batch"].to_numpy(dtype=float)
    return {"margin": share, "margin_batch_lo": float(B[near].min()), "margin_batch_hi": float(B[near].max()),
            "margin_n": int(near.sum())}


def p_best(pred: Prediction, chosen: int) -> float:
    """The share of the plan's draws in which the chosen configuration is the fastest of every
    candidate the plan prices (those it may not recommend included: a low share says another
    configuration, not yet run or checked, may be faster)."""
    H = pred.hours
    if not H.shape[0]:
        return np.nan
    Hs = np.where(np.isfinite(H), H, np.inf)
    return float((np.argmin(Hs, axis=1) == chosen).mean())


def expected_regret(pred: Prediction, chosen: int) -> float:
    """The expected hours lost by training at the chosen configuration instead of the fastest
    candidate, over the plan's draws (0 where the plan is sure)."""
    H = pred.hours
    if not H.shape[0]:
        return np.nan
    Hs = np.where(np.isfinite(H), H, np.inf)
    best = Hs.min(axis=1)
    ok = np.isfinite(Hs[:, chosen]) & np.isfinite(best)
    r = np.where(ok, Hs[:, chosen] - np.where(ok, best, 0.0), np.nan)
    return float(r[ok].mean()) if ok.any() else np.nan


def decide(phase: str, target: float | None, plan_table: pd.DataFrame, pred: Prediction | None,
           next_table: pd.DataFrame | None = None, cbs_fit: pd.DataFrame | None = None, gpu_note: str = "",
           title: str = "", target_rule: str = "", lr_context: str = "") -> dict:
    """One row of decisions.csv (DECISION_COLUMNS, then the extras)."""
    row = {c: math.nan for c in DECISION_COLUMNS + DECISION_EXTRA_COLUMNS}
    row.update({"phase": phase, "threshold": float(target) if target is not None else math.nan, "title": title,
                "gpu_note": gpu_note, "next_action": "", "objective": "", "basis": "", "model": "", "fit_status": "",
                "next_cost_unit": "", "fewest_gpu_hours": "", "next_why": "", "worth_testing": "",
                "summary": "", "target_rule": target_rule, "lr_context": lr_context})
    if target is None:
        row["summary"] = decision_summary(row)
        return row
    if cbs_fit is not None and len(cbs_fit):
        f = cbs_fit[np.isclose(cbs_fit["threshold"].astype(float), float(target))]
        if len(f):
            f = f.iloc[0]
            model = str(f.get("model", "") or "")
            row.update({"B_noise": float(f["B_noise"]), "B_noise_lo": float(f["B_noise_lo"]),
                        "B_noise_hi": float(f["B_noise_hi"]), "fit_status": str(f["status"]), "model": model,
                        "alpha": float(f["alpha"]) if model == "general" else 1.0 if model else math.nan})
    rows = plan_table[np.isclose(plan_table["threshold"].astype(float), float(target))] if plan_table is not None and len(plan_table) else None
    if rows is None or not len(rows):
        row["summary"] = decision_summary(row)
        return row
    by = rows.set_index("objective")
    obj = "wall_clock" if "wall_clock" in by.index else "samples" if "samples" in by.index else None
    if obj is None:
        row["summary"] = decision_summary(row)
        return row
    r = by.loc[obj]
    row.update({"objective": obj, "n_prompts": int(r["n_prompts"]), "n_rollouts": int(r["n_rollouts"]),
                "total_batch": int(r["total_batch"]), "predicted_hours": float(r["predicted_hours"]),
                "predicted_hours_lo": float(r["predicted_hours_lo"]), "predicted_hours_hi": float(r["predicted_hours_hi"]),
                "expected_hours": float(r["expected_hours"]), "predicted_gpu_hours": float(r["predicted_gpu_hours"]),
                "n_gpus": float(r["n_gpus"]), "predicted_steps": float(r["predicted_steps"]), "basis": str(r["basis"])})
    if str(r["basis"]) == "cross_axis":
        row["model"] = "cross_axis"
    if obj == "wall_clock" and "gpu_hours" in by.index:
        g = by.loc["gpu_hours"]
        if (int(g["n_prompts"]), int(g["n_rollouts"])) != (int(r["n_prompts"]), int(r["n_rollouts"])):
            row["fewest_gpu_hours"] = (f"{int(g['n_prompts']):,} prompts × {int(g['n_rollouts']):,} rollouts "
                                       f"(B = {int(g['total_batch']):,}), {float(g['predicted_gpu_hours']):,.3g} GPU-hours")
    if "samples" in by.index:  # the other objective, said beside the decision (words.decision)
        sm = by.loc["samples"]
        row["fewest_samples_batch"] = f"{int(sm['n_prompts'])}x{int(sm['n_rollouts'])}"
        row["fewest_samples_hours"] = float(sm["predicted_hours"])
    if pred is not None and len(pred.table):
        tab = pred.table
        hit = np.flatnonzero((tab["n_prompts"] == int(r["n_prompts"])) & (tab["n_rollouts"] == int(r["n_rollouts"])))
        if hit.size and obj == "wall_clock":
            i = int(hit[0])
            row.update(margin(pred, i))
            row["p_best"] = p_best(pred, i)
            row["regret_now_h"] = expected_regret(pred, i)
    if next_table is not None and len(next_table):
        n = next_table.sort_values("rank").iloc[0]
        row.update({"next_n_prompts": int(n["n_prompts"]), "next_n_rollouts": int(n["n_rollouts"]),
                    "next_action": str(n["action"]), "next_predicted_hours": float(n["predicted_hours"]),
                    "next_to_step": float(n["to_step"]), "next_p_reach": float(n["p_reach"]),
                    "next_reduction_h": float(n["expected_reduction_h"]),
                    "next_reduction_lo_h": float(n["reduction_lo_h"]), "next_reduction_hi_h": float(n["reduction_hi_h"]),
                    "next_cost": float(n["cost"]), "next_cost_unit": str(n["cost_unit"]),
                    "next_why": str(n["why"]) if isinstance(n["why"], str) else ""})
        tests = next_table[next_table["why"] == "worth testing"]
        if len(tests):
            tt = tests.iloc[0]
            row["worth_testing"] = f"{int(tt['n_prompts'])}x{int(tt['n_rollouts'])}"
    row["summary"] = decision_summary(row)
    return row
