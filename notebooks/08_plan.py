# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Which batch size should this phase train with, and which run should come next?
#
# The answer first, boxed as on the index page (the same sentences); how it is reached follows it.
#
# **Another phase:** its report is in the index beside this one. To explore it in JupyterLab,
# `make notebook NB=08 PHASE=p2b` opens a working copy for that phase in `scratch/`; or
# set `phase` below and run: a run that is not `make report`'s writes to `scratch/`, never
# to `outputs/`.

# %% tags=["parameters"]
phase: str = "p1"  # the phase: params/<phase>.yaml
out_dir: str = ""  # empty: a hand run, written to scratch/ (only make report writes outputs/)
params_dir: str = "params"  # the folder of the phases' params files
source: str = "data/demo"  # wandb:<entity>/<project>, a folder of W&B offline runs, or an export folder
n_bootstrap: int = 1000  # bootstrap resamples per fit
seed: int = 0  # seed of the bootstrap draws
n_simulations: int = 200  # simulated outcomes of each candidate next run

# %%
import time
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

import cbs_helpers as ch

s = ch.section("08_plan", phase, out_dir, params_dir, source, columns=ch.WALL_CLOCK_KEYS,
               n_bootstrap=n_bootstrap, seed=seed, n_simulations=n_simulations)
params, tables, figures, thresholds = s.params, s.tables, s.figures, s.params["thresholds"]
axes, left_out = s.axes(ch.WALL_CLOCK_KEYS)  # this phase's axis, and those its params pool
t0 = time.perf_counter()
fits, sb_all, measured = ch.fit_axes(axes, thresholds, n_bootstrap=n_bootstrap, seed=seed)
cross = ch.cross_axis_fit(sb_all, thresholds, n_bootstrap=n_bootstrap, seed=seed) if len(axes) > 1 else None

# %%
step_times, step_model = ch.step_time_table(measured), ch.step_time_model(measured)
gpu_note = ch.gpu_claim(step_times["n_gpus"])
cbs_fit = fits[phase].table  # the runs' own crossings (the forecasts below may add to the plan's fit)
lr_context = ch.lr_label(*ch.sweep_lr_policy(fits[phase].sb_eb))

# %%
# while runs are running: forecasts enter the fit the plan decides on (said after the decision)
early = ch.early_answers(phase, s.runs, s.history, s.metric, thresholds, params["n_val"], fits[phase], step_model,
                         step_times, target=params["decision_target"], n_bootstrap=min(n_bootstrap, 400), seed=seed)
for name in ("forecast", "stop_runs", "sweep_progress"):  # a finished sweep keeps none from its running days
    (Path(tables) / f"{name}.csv").unlink(missing_ok=True)
if early is not None:
    fits[phase] = early.fit  # the decision below carries the forecasts with their uncertainty
    for name, table in (("forecast", early.forecast), ("stop_runs", early.stop), ("sweep_progress", early.progress)):
        ch.save_table(table, tables, name)
    early_lines = [ch.running_sentence(early.progress.iloc[0].to_dict()),
                   ch.targets_sentence(cbs_fit, early.forecast), *early.forecasts.notes]
else:
    early_lines = ["Every run of this phase has finished (or stopped): no forecasts, the fit is the runs' own."]

# %%
pp = ch.plan_phase(phase, fits, step_model, step_times, thresholds, requested_target=params["decision_target"],
                   cross=cross, title=params["title"], gpu_note=gpu_note, lr_context=lr_context,
                   n_outcomes=n_simulations // 4 if n_simulations >= 16 else 16, seed=seed)
elapsed = time.perf_counter() - t0
predictions, plan, next_table, decision, target = pp.plan.candidates, pp.table, pp.next_runs, pp.decision, pp.target
for name, table in (("plan_candidates", predictions), ("plan", plan), ("next_runs", next_table),
                    ("decision", pd.DataFrame([decision], columns=ch.DECISION_COLUMNS
                                              + [c for c in decision if c not in ch.DECISION_COLUMNS]))):
    ch.save_table(table, tables, name)

# %% [markdown]
# ## The decision

# %%
answer = ch.decision_sentences(decision)
display(Markdown("\n>\n".join(f"> {'**' + x + '**' if i == 0 else x}" for i, x in enumerate(answer))
                 + f"\n>\n> To paste in a chat: `{decision['summary']}`"))

# %% [markdown]
# ## While runs are running: forecasts, and the runs that can stop
# Only while some run of the phase is running: each running run's crossing of each target is
# forecast from one progress curve fitted to every evaluation of every run (90% intervals), the
# forecasts enter the fit (and so the decision) as multiple imputations, and a run whose
# continuation moves neither the decision nor B_noise's interval is listed with what stopping saves.

# %%
print(*early_lines, sep="\n")

# %% [markdown]
# ## How the plan is made
# The plan predicts, for every candidate (n_prompts, n_rollouts), the rollout steps to each target from the
# fit of the axis it lies on (this phase's, and where the params name `two_axis_phases`, the other
# phases' axes too), the step time from the step-time model T_step = a + b_B·B (+ b_p·n_prompts),
# and from them the training hours (validation and checkpoints come on top), the GPU-hours (where the
# run configs give GPU counts) and the samples, with 95% bands that carry the fit's bootstrap (the
# forms mixed), each configuration's own deviation from the curve, and the step time's uncertainty.
# A recommendation rests only on what the data support: a configuration that was run, one on a
# sampled axis between runs that reached the target, or a split off the axes priced by a cross-axis
# model that predicted runs it was not fitted to (04). The decision is made at the phase's decision
# target (params `decision_target`; by default the highest target that at least 4 batch sizes, or
# two thirds of them, reached). The next runs are ranked by how much they are expected to cut the
# hours lost to a wrong choice, per GPU-hour.
#
# ## What prices each candidate
# A configuration on a sampled axis is priced by that axis's own fit (its form, its alpha); a split off
# every sampled axis only by the cross-axis model of 04, and it is recommended only if that model
# predicted runs it was not fitted to. The decision target, and why.

# %%
axes_used = [f"{m.phase} ({'prompts vary, ' + format(m.fixed, 'g') + ' rollouts' if m.axis == 'prompts' else 'rollouts vary, ' + format(m.fixed, 'g') + ' prompts'})"
             for m in pp.axis_models]
print("Axes priced by their own fit: " + (", ".join(axes_used) or "none") + "."
      + (f" Left out of the joint phases: {'; '.join(left_out)}." if left_out else ""))
if cross is not None:
    print("Splits off those axes: priced by the cross-axis model, which " + cross.reason + "."
           if cross.validated else
           "Splits off those axes: not recommended, the cross-axis model is not checked (" + cross.reason + ").")
print(f"Decision target: accuracy {target:g}, {pp.target_rule}." if target is not None else
      f"No decision target: {pp.target_rule}.")
print(f"Fits, plan and next runs: {elapsed:.1f} s.")

# %% [markdown]
# ## The step time against the batch
# Fitted to each run's mean training step time (validation and checkpoint time excluded); the plan
# predicts hours only where this model exists.

# %%
print(ch.step_model_sentence(step_model) if step_model["status"] == "ok" else
      f"No step-time model ({step_model['reason'] or 'no run logs a step time'}): the plan can rank candidates "
      "by samples only.")
print(ch.sentence(gpu_note))

# %% [markdown]
# ## Every candidate at every target
# Predicted rollout steps or training hours to each target (– where the fit cannot predict), and what
# each rests on at the decision target (measured: run and reached; on axis: between runs on a sampled
# axis; cross axis: a split priced by the checked cross-axis model; untested: a split whose model is not
# checked, never recommended; extrapolated: beyond the runs).

# %%
shown = ("predicted_hours" if predictions["predicted_hours"].notna().any() else
         "predicted_steps" if predictions["predicted_steps"].notna().any() else None)
if shown == "predicted_hours":
    print("Predicted training hours to each target:")
elif shown == "predicted_steps":
    print("No step-time model, so no hours; predicted rollout steps to each target:")
else:
    print("No target has a usable fit (table above): nothing to predict; plan.csv is written with its header only.")

# %%
if shown:
    table = predictions.pivot_table(index=["total_batch", "n_prompts", "n_rollouts"], columns="threshold",
                                    values=shown, aggfunc="first").reset_index()
    table.columns = [c if isinstance(c, str) else f"acc ≥ {c:g}" for c in table.columns]
    if target is not None:
        at = predictions[predictions["threshold"] == target][["n_prompts", "n_rollouts", "basis"]]
        table = table.merge(at.rename(columns={"basis": f"basis at {target:g}"}), on=["n_prompts", "n_rollouts"],
                            how="left")
    with pd.option_context("display.max_rows", 250):  # every candidate, not pandas' first and last few
        display(ch.reader_table(table, index="total_batch"))

# %% [markdown]
# ## Predicted time to target against B
# Per target: the prediction with its 95% band (dashed where extrapolated), the measured runs, and the
# fastest candidate (star). With two axes the curve is the fastest split at each B, and the measured
# runs are those of every split. While runs are running, open circles with a bar are their forecast
# crossings in hours (90% interval): forecasts, not measurements.

# %%
curves = ch.best_split_per_batch(predictions)
forecasts_in_hours = None if early is None else ch.forecast_hours(early.forecast, step_times)  # runs running
if len(curves):
    fig = ch.plot_plan(predictions, measured[measured["in_envelope"]] if len(measured) else measured, plan,
                       title=params["title"], forecast=forecasts_in_hours)
    ch.save_figure(fig, curves, figures, "plan_time_to_target")
    display(fig)
else:
    print("No hours predicted at any target: no figure.")

# %% [markdown]
# ## Wall-clock time against GPU-hours and samples
# At the decision target: a candidate on the frontier is not beaten on both axes by another.

# %%
usable = plan[plan["objective"] == "wall_clock"]
if len(usable) and target is not None and (usable["threshold"] == target).any():
    fig = ch.plot_plan_frontier(predictions, plan, target, title=params["title"])
    ch.save_figure(fig, predictions[predictions["threshold"] == target], figures, "plan_frontier")
    display(fig)
    print(ch.sentence(gpu_note), "Below the fastest batch, each halving of B saves samples but takes longer.")
else:
    print("No hours predicted at the decision target: no frontier.")

# %% [markdown]
# ## The recommendation at each target
# fewest hours (wall clock); fewest GPU-hours; fewest samples: samples to target keep falling as B
# shrinks, so this takes the fastest candidate within 10% of the fewest samples.

# %%
if len(plan):
    shown_plan = plan.assign(objective=plan["objective"].map(
        {"wall_clock": "fewest hours", "gpu_hours": "fewest GPU-hours", "samples": "fewest samples (within 10%)"}))
    display(ch.reader_table(shown_plan, ["threshold", "objective", "n_prompts", "n_rollouts", "total_batch",
                                         "predicted_steps", "predicted_hours", "predicted_hours_lo",
                                         "predicted_hours_hi", "predicted_gpu_hours", "basis"], index="threshold"))
else:
    print("No recommendation: no target has a usable fit.")

# %% [markdown]
# ## Which run would change the decision, per GPU-hour
# At the decision target, every candidate run (a new run at any candidate, a repeat of a measured one,
# the extension of a run that stopped before the target, a split off the axes) is scored by what it is
# expected to be worth to the decision: its outcome is drawn from the fit, the fit's draws reweighed by
# it, the decision made again, and the hours lost to a wrong choice compared before and after. Ranked by
# that value per unit of cost (the steps the run must run, times the step time and GPU count); a run
# with less than a 50% chance to reach the target is never suggested. A split off the sampled axes that
# could beat the decision comes first: it is the run that would prove the recommendation wrong.

# %%
if len(next_table):
    print(ch.next_runs_line(len(next_table), target, decision["regret_now_h"]))
    shown_next = next_table.assign(action=[a if a != "new" else "new run" for a in next_table["action"]])
    display(ch.reader_table(shown_next, ["rank", "action", "n_prompts", "n_rollouts", "total_batch", "to_step",
                                         "p_reach", "expected_reduction_h", "reduction_lo_h", "reduction_hi_h",
                                         "cost", "cost_unit", "why"], index="rank"))
elif target is not None and decision["total_batch"] == decision["total_batch"]:
    print(ch.next_runs_line(0, target, decision["regret_now_h"]))
else:
    print("No decision to improve: no target has a usable fit (a fit needs 3 batch sizes that reach the "
          "target). next_runs.csv is written with its header only.")

# %% [markdown]
# ## Answer

# %%
fastest = ch.fastest_batch(measured[measured["in_envelope"]]) if len(measured) else None
lines = ch.decision_sentences(decision) + ch.plan_summary(plan, fastest, next_table,
                                                         cbs_fit[["threshold", "status", "reason"]])
display(Markdown("\n\n".join(lines)))
