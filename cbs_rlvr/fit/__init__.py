"""The fit layer: S(B) from the measured steps to each target, pooled over a phase's targets, the
form chosen by what predicts, 95% intervals from a parametric bootstrap with the phase's pooled
scatter, and the cross-axis model of prompts against rollouts with its check.

It owns one censored-likelihood solver (`_tobit.py`, private) for every form and every fit, and
returns typed results (`PhaseFit`, `CrossAxisFit`) that the plan, the figures and the tables read.
It imports the data and measure layers (measure, select, envelope), never the plan, the report or
the build.

Modules: `_tobit` (the solver), `forms` (the forms and their cross-validated weights),
`resample` (pooled scatter, parametric tables), `evalnoise` (the eval-noise floor), `phase`
(fit_phase, cbs_fit.csv), `result` (PhaseFit), `table` (a plain S(B) table), `crossaxis`
(prompts against rollouts), `curves` (S(B), E(B) and what follows), `across` (B_noise against the
target, the Pareto check), `interval` (bootstrap intervals).
"""

from .across import b_noise_vs_target, pareto_table
from .crossaxis import (
    CHECK_COLUMNS,
    TWO_AXIS_FIT_COLUMNS,
    CrossAxisFit,
    cross_axis_fit,
    effective_log_batch,
    iso_batch_table,
    rollout_worth,
)
from .curves import (
    general_samples,
    general_steps,
    mccandlish_samples,
    mccandlish_steps,
    overhead_batch,
    samples_minimum,
)
from .forms import FORMS
from .interval import bootstrap_interval, ci_shortfall
from .phase import (
    CBS_FIT_COLUMNS,
    CBS_FIT_EXTRA_COLUMNS,
    FIT_STATUSES,
    S_MIN_APPROACHED,
    fit_arrays,
    fit_phase,
    sb_arrays,
    target_coordinates,
)
from .result import FitData, PhaseFit
from .table import fit_mccandlish, fit_steps

__all__ = [
    "CBS_FIT_COLUMNS", "CBS_FIT_EXTRA_COLUMNS", "CHECK_COLUMNS", "FIT_STATUSES", "FORMS", "S_MIN_APPROACHED",
    "TWO_AXIS_FIT_COLUMNS", "CrossAxisFit", "FitData", "PhaseFit", "b_noise_vs_target", "bootstrap_interval",
    "ci_shortfall", "cross_axis_fit", "effective_log_batch", "fit_arrays", "fit_mccandlish", "fit_phase",
    "fit_steps", "general_samples", "general_steps", "iso_batch_table", "mccandlish_samples", "mccandlish_steps",
    "overhead_batch", "pareto_table", "rollout_worth", "samples_minimum", "sb_arrays", "target_coordinates",
]
