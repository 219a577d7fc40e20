"""The plan layer: from the fits to the decision. Every candidate configuration's predicted steps,
hours, GPU-hours and samples with 95% bands and the basis each rests on (`predict`), plan.csv
(`recommend`), the decision target and decisions.csv's row (`decide`), the next runs ranked by their
value to the decision per GPU-hour (`nextruns`), and one phase's plan in one call (`phase`).

It imports the fit layer and the measure layer (step times), never the report or the build.
"""

from .decide import MARGIN, decide, decision_target, expected_regret, margin, p_best
from .nextruns import MIN_P_REACH, NEXT_RUNS_COLUMNS, WORTH_TESTING, decision_value, next_runs
from .phase import PhasePlan, plan_phase
from .predict import (
    BASES,
    OBJECTIVES,
    PLAN_COLUMNS,
    PLAN_EXTRA_COLUMNS,
    RECOMMENDABLE,
    AxisModel,
    Plan,
    Prediction,
    axis_model,
    gpu_counts,
    predict,
    recommend,
)

__all__ = ["BASES", "MARGIN", "MIN_P_REACH", "NEXT_RUNS_COLUMNS", "OBJECTIVES", "PLAN_COLUMNS", "PLAN_EXTRA_COLUMNS",
           "RECOMMENDABLE", "WORTH_TESTING", "AxisModel", "PhasePlan", "Plan", "Prediction", "axis_model", "decide",
           "decision_target", "decision_value", "expected_regret", "gpu_counts", "margin", "next_runs", "p_best",
           "plan_phase", "predict", "recommend"]
