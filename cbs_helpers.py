"""The CBS-RLVR notebooks' one import: the analysis, in the order a notebook uses it.

Every name here comes from the package `cbs_rlvr/`, where the machinery lives, one module per
concern (see the README's "Layout"). A notebook narrates and calls these; functions take and
return DataFrames and arrays (or a Figure). Importing this module costs about as much as
pandas and matplotlib: scipy, pyarrow, wandb and yaml are loaded by the functions that use them.
"""

# --- Where things are, and a phase's parameters (params/<phase>.yaml) ---------------------------
from cbs_rlvr.params import SECTIONS, SUMMARY_SECTION, ParamsError, load_all_phase_params, load_phase_params
from cbs_rlvr.paths import PROJECT_DIR, display_path, project_paths
# a section's one setup call: where it writes (a hand run: scratch/; only the build writes
# outputs/), its phase's params, the snapshot and the phase's runs
from cbs_rlvr.section import Section, fit_axes, section, summary_fits
from cbs_rlvr.build.handrun import output_file, section_paths
# a progress bar for long loops: in JupyterLab and terminals, never in the reports
from cbs_rlvr.progress import progress

# --- The data: the snapshot of the source, and one phase's runs in it ---------------------------
from cbs_rlvr.sources.snapshot import open_snapshot, read_excluded_runs, read_snapshot
from cbs_rlvr.data.runs import normalise_tags, parse_run_name
from cbs_rlvr.measure.crossings import joint_phase_runs, phase_runs, select_accuracy_metric
from cbs_rlvr.data.select import configuration_counts, select_runs, selection_description
from cbs_rlvr.data.resume import resumed_runs

# --- S(B) and E(B): steps and samples to each target accuracy -----------------------------------
from cbs_rlvr.measure.crossings import GEN_BATCHES_KEY, SB_EB_COLUMNS, generated_samples_table, sb_eb_table, steps_to_target

# --- The fit of S(B): pooled over the targets, the form chosen by what predicts, 95% intervals ----
from cbs_rlvr.fit.phase import CBS_FIT_COLUMNS, FIT_STATUSES, fit_arrays, fit_phase
from cbs_rlvr.fit.forms import FORMS
from cbs_rlvr.fit.result import PhaseFit
from cbs_rlvr.fit.across import b_noise_vs_target, pareto_table
from cbs_rlvr.fit.interval import bootstrap_interval
from cbs_rlvr.fit.table import fit_mccandlish, fit_steps
from cbs_rlvr.fit.curves import general_samples, general_steps, mccandlish_samples, mccandlish_steps, overhead_batch, samples_minimum
from cbs_rlvr.words.sentences import b_noise_line, learning_rate_context, lr_label, shape_sentence, step_model_sentence, sweep_facts, updates_lines, generated_samples_line, fit_answer_lines, curves_answer, overhead_lines, fastest_run_lines, trend_kind, trend_sentence, trend_title
from cbs_rlvr.fit.baseline import seed_method_fit

# --- Learning-rate (metaparameter) sweeps: the best configuration at each batch size ------------
from cbs_rlvr.measure.envelope import configuration_table, envelope_winners, lr_policy, sweep_lr_policy

# --- Prompts vs rollouts: the cross-axis model, its check, the iso-batch comparison --------------
from cbs_rlvr.fit.crosscheck import CHECK_COLUMNS
from cbs_rlvr.fit.crossaxis import TWO_AXIS_FIT_COLUMNS, CrossAxisFit, cross_axis_fit, iso_batch_table, rollout_worth

# --- Does the gradient noise scale predict B_crit? ----------------------------------------------
from cbs_rlvr.fit.gradnoise import NOISE_KEYS, b_simple_posthoc, compare_b_simple, grad_noise_at_target, smooth_grad_noise

# --- Wall-clock time to target ------------------------------------------------------------------
from cbs_rlvr.measure.wallclock import WALL_CLOCK_KEYS, fastest_batch, predict_step_time, step_time_model, step_time_table, wall_clock_table

# --- Figures: one style, one save function (PDF + PNG + CSV), one builder per plot --------------
from cbs_rlvr.report.figures import plot_b_noise_vs_target, plot_cross_phase, plot_pareto, plot_sb_eb, training_curves_table
from cbs_rlvr.report.figures import with_forecasts
from cbs_rlvr.report.figures_axes import plot_grad_noise, plot_iso_batch, plot_noise_scale_vs_fit, plot_two_axis
from cbs_rlvr.report.figures_habits import plot_wall_clock
from cbs_rlvr.report.style import save_figure, setup_style
from cbs_rlvr.report.figures_habits import plot_envelope, plot_generated_samples, plot_step_time, plot_training_curves

# --- Tables for the paper (CSV and booktabs LaTeX) ----------------------------------------------
from cbs_rlvr.report.tables import SB_EB_CSV_COLUMNS, cbs_summary_long, cbs_summary_table, save_table, to_latex_booktabs

# --- Report text: claims computed from the results, censored values marked, statuses explained --
from cbs_rlvr.words.claims import TRENDS, b_noise_trend, rho_claim, trend_claim, lr_sweep_claims, noise_scale_answer, noise_scale_verdict, noise_scale_lines, logged_noise_claim, cross_phase_findings, envelope_lines, two_axis_answer
from cbs_rlvr.words.numbers import mark_censored, shape_label
from cbs_rlvr.report.tables import FLAG_MEANINGS, STATE_MEANINGS, STATUS_MEANINGS, censored_pivot, explain_flags, explain_status, flag_legend, legend_markdown, mark_lr_winners, with_censored_marks, median_with_censoring, state_legend, status_legend, with_intervals

# --- The plan: every candidate's hours with its basis, the decision, the next runs by decision value -

from cbs_rlvr.plan.predict import predict
from cbs_rlvr.plan.predict import BASES, OBJECTIVES, PLAN_COLUMNS, PLAN_EXTRA_COLUMNS, RECOMMENDABLE, axis_model, recommend
from cbs_rlvr.plan.nextruns import MIN_P_REACH, NEXT_RUNS_COLUMNS, next_runs
from cbs_rlvr.plan.phase import PhasePlan, plan_phase
from cbs_rlvr.plan.decide import decide, decision_target
from cbs_rlvr.contracts import DECISION_COLUMNS
from cbs_rlvr.words.decision import decision_sentences, decision_summary, gpu_claim, next_runs_line, plan_summary, why_fastest_differs
from cbs_rlvr.words.numbers import count, duration, header, interval, number, percent, reader_table, sentence
from cbs_rlvr.report.figures_plan import best_split_per_batch, plot_plan, plot_plan_frontier
# while runs run: their crossings forecast, the fit and decision with them, the runs that can stop
from cbs_rlvr.plan.forecast import forecast_hours
from cbs_rlvr.plan.running import EarlyAnswers, early_answers, is_running, running_forecasts
from cbs_rlvr.words.early import running_sentence, targets_sentence
