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
# The answer first (the same sentences open the index page), then how it is reached. The plan
# predicts, for every candidate (n_prompts, n_rollouts) — powers of two across the sampled range and
# two octaves beyond it — the rollout steps to each target from the phase's fit of S(B) (or, where
# the params name `two_axis_phases`, from the joint fit that prices a split between prompts and
# rollouts), the step time from the step-time model T_step = a + b_B·B (+ b_p·n_prompts), and from
# them the training hours (validation and checkpoints come on top), the GPU-hours (where the run
# configs give GPU counts) and the samples. The 95% bands carry the fit's bootstrap and the step-time
# model's uncertainty. The decision is made at the phase's decision target (params
# `decision_target`; by default the highest target that the most batch sizes reach). The next runs
# are simulated from the fit with the phase's measured noise and ranked by how much they narrow the
# B_noise interval at that target per GPU-hour (per hour where GPU counts are unknown).
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

import pandas as pd
from IPython.display import Markdown, display

import cbs_helpers as ch

ch.setup_style()
out, params_dir, source = ch.section_paths("08_plan", out_dir, params_dir, source,
                                           phase=phase, n_bootstrap=n_bootstrap, seed=seed, n_simulations=n_simulations)
params = ch.load_phase_params(params_dir, phase)
figures, tables = out / phase / "figures", out / phase / "tables"
runs_all, history_all, manifest = ch.open_snapshot(out, source, params_dir, lazy=True)
runs, history, metric = ch.phase_runs(runs_all, history_all, params, columns=ch.WALL_CLOCK_KEYS)
thresholds = params["thresholds"]
sb_eb, cbs_fit, draws = ch.fit_phase(runs, history, metric, thresholds, params["n_val"], n_bootstrap=n_bootstrap,
                                     seed=seed, metaparameters=params["metaparameters"], return_draws=True)
wall = ch.wall_clock_table(runs, history, metric, thresholds, metaparameters=params["metaparameters"])
models = ch.mccandlish_models(sb_eb, cbs_fit, draws)
measured = wall
members, left_out = (ch.joint_phase_runs(runs_all, history_all, params, params_dir, columns=ch.WALL_CLOCK_KEYS)
                     if params["two_axis_phases"] else ([], []))
if members:
    frames = [ch.sb_eb_table(m["runs"], m["history"], m["metric"], thresholds).assign(phase=m["phase"])
              for m in members]
    walls = [ch.wall_clock_table(m["runs"], m["history"], m["metric"], thresholds,
                                 metaparameters=m["params"]["metaparameters"]).assign(phase=m["phase"])
             for m in members]
    two_axis = ch.two_axis_models(pd.concat(frames, ignore_index=True), n_bootstrap=n_bootstrap, seed=seed)
    models = ch.choose_models(models, two_axis)
    measured = pd.concat(walls, ignore_index=True)
step_times = ch.step_time_table(measured)
step_model = ch.step_time_model(measured)
predictions = ch.predict_plan(models, step_model, step_times, seed=seed)
plan = ch.recommend(predictions)
envelope = sb_eb[sb_eb["in_envelope"]]
target = ch.decision_target(cbs_fit, envelope, params["decision_target"])
t0 = time.perf_counter()
next_table = ch.next_runs(draws, cbs_fit, envelope, step_model, step_times, target=target,
                          budget_steps=ch.step_budget(history, runs), n_simulations=n_simulations, seed=seed)
elapsed = time.perf_counter() - t0
gpu_note = ch.gpu_claim(step_times["n_gpus"])
decision = ch.decide(phase, target, plan, next_table, cbs_fit, gpu_note=gpu_note, title=params["title"])
ch.save_table(predictions, tables, "plan_candidates")
ch.save_table(plan, tables, "plan")
ch.save_table(next_table, tables, "next_runs")
_ = ch.save_table(pd.DataFrame([decision], columns=ch.DECISION_COLUMNS + [c for c in decision if c not in
                                                                       ch.DECISION_COLUMNS]), tables, "decision")

# %% [markdown]
# ## The decision

# %%
display(Markdown("\n\n".join(ch.decision_sentences(decision))))

# %% [markdown]
# ## Which fit prices each target
# Along one axis the phase's own fit; where the params name `two_axis_phases`, the joint two-axis fit
# over them wherever it is `ok` (the candidates then vary both n_prompts and n_rollouts, and the
# step-time model is fitted on all the runs of those phases).

# %%
if members:
    print(f"Joint two-axis fit over {', '.join(m['phase'] for m in members)}."
          + (f" Left out: {'; '.join(left_out)}." if left_out else ""))
# rho (how alike one prompt's rollouts are) exists only in the two-axis fit
priced = pd.DataFrame([{"threshold": t, "model": m["kind"].replace("_", "-"), "fit": m["status"],
                        "fewest steps (large B)": m["S_min"], "B_noise (samples, along one axis)": m["B0"],
                        "rho": m["rho"] if m["kind"] == "two_axis" else float("nan")}
                       for t, m in models.items()])
ch.reader_table(priced, index="threshold")

# %% [markdown]
# ## The step time against the batch
# Fitted to each run's mean training step time (validation and checkpoint time excluded); the plan
# predicts hours only where this model exists.

# %%
if step_model["status"] == "ok":
    unit = {"a": "s", "b_B": "s per sample", "b_p": "s per prompt"}
    print(f"{step_model['formula']}: " + ", ".join(
        f"{k} = {step_model['coef'][k]:.4g} ± {step_model['se'][k]:.2g} {unit[k]}" for k in step_model["terms"])
        + f"; R² = {step_model['r2']:.3f} over {step_model['n_runs']} runs, B = {ch.count(step_model['B_range'][0])} "
        f"to {ch.count(step_model['B_range'][1])}" + (f". Note: {step_model['reason']}." if step_model["reason"] else "."))
else:
    print(f"No step-time model ({step_model['reason'] or 'no run logs a step time'}): the plan can rank "
          "candidates by samples only.")
print(ch.sentence(gpu_note))

# %% [markdown]
# ## Every candidate at every target
# Predicted rollout steps or training hours to each target (– where the fit cannot predict).

# %%
shown = ("predicted_hours" if predictions["predicted_hours"].notna().any() else
         "predicted_steps" if predictions["predicted_steps"].notna().any() else None)
if shown == "predicted_hours":
    print("Predicted training hours to each target:")
elif shown == "predicted_steps":
    print("No step-time model, so no hours; predicted rollout steps to each target:")
else:
    print("No target has a usable fit (table above): nothing to predict; plan.csv is written with its header only.")
if shown:
    table = predictions.pivot_table(index=["total_batch", "n_prompts", "n_rollouts"], columns="threshold",
                                    values=shown, aggfunc="first").reset_index()
    table.columns = [c if isinstance(c, str) else f"acc ≥ {c:g}" for c in table.columns]
    with pd.option_context("display.max_rows", 250):  # every candidate, not pandas' first and last few
        display(ch.reader_table(table, index="total_batch"))

# %% [markdown]
# ## Predicted time to target against B
# Per target: the prediction with its 95% band (dashed where extrapolated), the measured runs, and the
# fastest candidate (star). With two axes the curve is the fastest split at each B, and the measured
# runs are those of every split.

# %%
curves = ch.best_split_per_batch(predictions)
if len(curves):
    fig = ch.plot_plan(predictions, measured[measured["in_envelope"]] if len(measured) else measured, plan,
                       title=params["title"])
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
# ## Which runs would pin B_noise down, per GPU-hour
# At the decision target: a new run at each batch size along the phase's axis (one octave beyond the
# sweep at most) or the extension of a run that stopped before the target, each simulated from the
# fit with the phase's measured noise (a new run is censored at the phase's step budget, its longest
# run), added to the fit's bootstrap tables and refitted. Ranked by expected narrowing of the B_noise
# interval per unit of cost; the band is the 80% range of the narrowing over the run's outcomes.

# %%
if len(next_table):
    print(f"{len(next_table)} suggested run(s) at accuracy {target:g}; {n_simulations} bootstrap tables per "
          f"outcome, {elapsed:.1f} s.")
    shown_next = next_table.assign(action=[a if a != "new" else "new run" for a in next_table["action"]])
    display(ch.reader_table(shown_next, ["rank", "action", "n_prompts", "n_rollouts", "total_batch",
                                         "to_step", "p_reach", "expected_narrowing", "narrowing_lo",
                                         "narrowing_hi", "cost", "cost_unit"], index="rank"))
else:
    print("No run is expected to narrow the B_noise interval by 5% or more, or no target has a usable fit "
          "with bootstrap tables to simulate from: next_runs.csv is written with its header only. "
          "A fit needs 3 batch sizes that reach the target.")

# %% [markdown]
# ## Answer

# %%
fastest = ch.fastest_batch(measured[measured["in_envelope"]]) if len(measured) else None
lines = ch.decision_sentences(decision) + ch.plan_summary(plan, fastest, next_table,
                                                         cbs_fit[["threshold", "status", "reason"]])
display(Markdown("\n\n".join(lines)))
