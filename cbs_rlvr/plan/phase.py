"""One phase's plan from its fits, in one call: the candidates' predictions, plan.csv, the decision
target, the next runs there, and the decision row (what 08_plan shows and decisions.csv holds)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ..fit.result import PhaseFit
from .decide import decide, decision_target
from .nextruns import NEXT_RUNS_COLUMNS, next_runs
from .predict import Plan, axis_model, predict, recommend


@dataclass
class PhasePlan:
    phase: str
    target: float | None
    target_rule: str
    plan: Plan
    table: pd.DataFrame
    next_runs: pd.DataFrame
    decision: dict
    axis_models: list = field(default_factory=list)


def plan_phase(phase: str, fits: dict[str, PhaseFit], step_model: dict, step_times: pd.DataFrame, thresholds,
               requested_target: float | None = None, cross=None, budget_steps: float | None = None,
               title: str = "", gpu_note: str = "", lr_context: str = "", n_outcomes: int = 64,
               seed: int = 0) -> PhasePlan:
    """fits: {phase: PhaseFit}, this phase's first, then the other phases whose axes the plan may
    recommend on (the params' two_axis_phases); cross: a cross-axis model for the splits off them.
    n_outcomes: the simulated outcomes behind each next run's value (0: the decision alone, no
    next runs)."""
    models = [m for m in (axis_model(p, f) for p, f in fits.items()) if m is not None]
    plan = predict(models, step_model, step_times, thresholds, cross=cross, seed=seed)
    table = recommend(plan)
    own = fits.get(phase)
    target, rule = decision_target(own.table if own is not None else None, requested_target)
    nxt = pd.DataFrame(columns=NEXT_RUNS_COLUMNS)
    pred = plan.predictions.get(float(target)) if target is not None else None
    if pred is not None and n_outcomes > 0:
        nxt = next_runs(pred, fits, step_model, budget_steps=budget_steps, n_outcomes=n_outcomes, seed=seed)
    row = decide(phase, target, table, pred, nxt, own.table if own is not None else None, gpu_note=gpu_note,
                 title=title, target_rule=rule, lr_context=lr_context)
    return PhasePlan(phase, target, rule, plan, table, nxt, row, models)
