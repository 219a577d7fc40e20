"""The CBS-RLVR notebooks' one import: the analysis, in the order a notebook uses it.

Every name here comes from the package `cbs_rlvr/`, where the machinery lives, one module per
concern (see the README's "Layout"). A notebook narrates and calls these; functions take and
return DataFrames and arrays (or a Figure). Importing this module costs about as much as
pandas and matplotlib: scipy, pyarrow, wandb and yaml are loaded by the functions that use them.
"""

# --- Where things are, and a phase's parameters (params/<phase>.yaml) ---------------------------
from cbs_rlvr.params import (
    SECTIONS,
    SUMMARY_SECTION,
    ParamsError,
    load_all_phase_params,
    load_phase_params,
)
from cbs_rlvr.paths import PROJECT_DIR, display_path, project_paths
# where a run writes (a hand run: scratch/; only the build writes outputs/) and reads
from cbs_rlvr.handrun import output_file, section_paths
# a progress bar for long loops: in JupyterLab and terminals, never in the reports
from cbs_rlvr.progress import progress

# --- The data: the snapshot of the source, and one phase's runs in it ---------------------------
from cbs_rlvr.snapshot import open_snapshot, read_excluded_runs, read_snapshot
from cbs_rlvr.runs import normalise_tags, parse_run_name
from cbs_rlvr.measure import joint_phase_runs, phase_runs, select_accuracy_metric
from cbs_rlvr.select import configuration_counts, select_runs, selection_description
from cbs_rlvr.resume import resumed_runs

# --- S(B) and E(B): steps and samples to each target accuracy -----------------------------------
from cbs_rlvr.measure import GEN_BATCHES_KEY, SB_EB_COLUMNS, generated_samples_table, sb_eb_table, steps_to_target

# --- The fit of S(B): pooled over the targets, the form chosen by what predicts, 95% intervals ----
from cbs_rlvr.fit import (
    CBS_FIT_COLUMNS,
    FIT_STATUSES,
    FORMS,
    PhaseFit,
    b_noise_vs_target,
    bootstrap_interval,
    fit_arrays,
    fit_mccandlish,
    fit_phase,
    fit_steps,
    general_samples,
    general_steps,
    mccandlish_samples,
    mccandlish_steps,
    overhead_batch,
    pareto_table,
    samples_minimum,
)
from cbs_rlvr.words import (
    b_noise_line,
    learning_rate_context,
    lr_label,
    shape_sentence,
    trend_kind,
    trend_sentence,
    trend_title,
)
from cbs_rlvr.baseline import seed_method_fit

# --- Learning-rate (metaparameter) sweeps: the best configuration at each batch size ------------
from cbs_rlvr.envelope import configuration_table, envelope_winners, lr_policy

# --- Prompts vs rollouts: the cross-axis model, its check, the iso-batch comparison --------------
from cbs_rlvr.fit import CHECK_COLUMNS, TWO_AXIS_FIT_COLUMNS, CrossAxisFit, cross_axis_fit, iso_batch_table, rollout_worth

# --- Does the gradient noise scale predict B_crit? ----------------------------------------------
from cbs_rlvr.noise import (
    NOISE_KEYS,
    b_simple_posthoc,
    compare_b_simple,
    grad_noise_at_target,
    noise_scale_verdict,
    smooth_grad_noise,
)

# --- Wall-clock time to target ------------------------------------------------------------------
from cbs_rlvr.wallclock import (
    WALL_CLOCK_KEYS,
    fastest_batch,
    predict_step_time,
    step_time_model,
    step_time_table,
    wall_clock_table,
)

# --- Figures: one style, one save function (PDF + PNG + CSV), one builder per plot --------------
from cbs_rlvr.figures import (
    plot_b_noise_vs_target,
    plot_cross_phase,
    plot_grad_noise,
    plot_iso_batch,
    plot_noise_scale_vs_fit,
    plot_pareto,
    plot_sb_eb,
    plot_two_axis,
    plot_wall_clock,
    save_figure,
    setup_style,
    training_curves_table,
)
from cbs_rlvr.figures_habits import plot_envelope, plot_generated_samples, plot_step_time, plot_training_curves

# --- Tables for the paper (CSV and booktabs LaTeX) ----------------------------------------------
from cbs_rlvr.tables import (
    SB_EB_CSV_COLUMNS,
    cbs_summary_long,
    cbs_summary_table,
    format_ci,
    save_table,
    to_latex_booktabs,
)

# --- Report text: claims computed from the results, censored values marked, statuses explained --
from cbs_rlvr.tables import (
    TRENDS,
    b_noise_trend,
    rho_claim,
    trend_claim,
    FLAG_MEANINGS,
    STATE_MEANINGS,
    STATUS_MEANINGS,
    censored_pivot,
    dash_missing,
    explain_flags,
    explain_status,
    flag_legend,
    legend_markdown,
    lr_sweep_claims,
    mark_lr_winners,
    noise_scale_answer,
    mark_censored,
    median_with_censoring,
    state_legend,
    status_legend,
    with_intervals,
)

# --- The plan: every candidate's hours with its basis, the decision, the next runs by decision value -
from cbs_rlvr.plan import (
    BASES,
    MIN_P_REACH,
    NEXT_RUNS_COLUMNS,
    OBJECTIVES,
    PLAN_COLUMNS,
    PLAN_EXTRA_COLUMNS,
    RECOMMENDABLE,
    PhasePlan,
    axis_model,
    decide,
    decision_target,
    next_runs,
    plan_phase,
    predict,
    recommend,
)
from cbs_rlvr.decisions import (
    DECISION_COLUMNS,
    decision_sentences,
    decision_summary,
    gpu_claim,
    plan_summary,
    why_fastest_differs,
)
from cbs_rlvr.fmt import count, duration, header, interval, number, percent, reader_table, sentence
from cbs_rlvr.figures_plan import best_split_per_batch, plot_plan, plot_plan_frontier
