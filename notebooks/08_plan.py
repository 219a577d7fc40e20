# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Which batch size reaches each target fastest on your GPUs, and which runs would pin B_noise down?
#
# Once a sweep has given S(B), the plan predicts for every candidate (n_prompts, n_rollouts) — powers
# of two across the sampled range and two octaves beyond it — the rollout steps to each target
# from the McCandlish fit S = S_min (1 + B_noise / B) (or, where the phase's params name
# `two_axis_phases`, from the joint fit S = S_min (1 + B0 (1 + (n_r − 1) ρ) / (n_p n_r)), which
# prices a split between prompts and rollouts), the step time from the step-time model
# T_step = a + b_B·B (+ b_p·n_prompts), and from them the training hours (validation and
# checkpoints come on top), the GPU-hours (with the GPU count of the run configs) and the samples.
# The 95% bands carry the fit's bootstrap and the step-time model's uncertainty. A prediction is
# `extrapolated` beyond the batch sizes that reached the target, or where the fit's status is not
# `ok`. It then simulates new runs from the fitted model with the phase's own noise to find the
# batch sizes whose addition would narrow the B_noise interval most.

# %% tags=["parameters"]
phase = "p1"
out_dir = None  # None: outputs/ with these defaults, else a folder in scratch/
params_dir = "params"
source = "data/demo"
n_bootstrap = 1000
seed = 0
n_simulations = 400

# %%
import time

import pandas as pd

import cbs_helpers as ch

ch.setup_style()
out, params_dir, source = ch.section_paths("08_plan", out_dir, params_dir, source,
                                           phase=phase, n_bootstrap=n_bootstrap, seed=seed, n_simulations=n_simulations)
params = ch.load_phase_params(params_dir, phase)
figures, tables = out / phase / "figures", out / phase / "tables"
runs_all, history_all, manifest = ch.open_snapshot(out, source, params_dir)
runs, history, metric = ch.phase_runs(runs_all, history_all, params)
thresholds = params["thresholds"]
sb_eb, cbs_fit, draws = ch.fit_phase(runs, history, metric, thresholds, params["n_val"], n_bootstrap=n_bootstrap,
                                     seed=seed, metaparameters=params["metaparameters"], return_draws=True)
wall = ch.wall_clock_table(runs, history, metric, thresholds, metaparameters=params["metaparameters"])
models = ch.mccandlish_models(sb_eb, cbs_fit, draws)
print(f"{params['title']}: {len(runs)} runs, {sb_eb['total_batch'].nunique()} batch sizes; McCandlish fit: "
      + ", ".join(f"{s} at {n}" for s, n in cbs_fit["status"].value_counts().items()) + " target(s)")

# %% [markdown]
# ## Which fit prices each target
# Along one axis the phase's own McCandlish fit; where the params name `two_axis_phases`, the joint
# two-axis fit over them wherever it is `ok` (the candidates then vary both n_prompts and n_rollouts,
# and the step-time model is fitted on all the runs of those phases).

# %%
measured = wall
members, left_out = (ch.joint_phase_runs(runs_all, history_all, params, params_dir)
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
    print(f"Joint two-axis fit over {', '.join(m['phase'] for m in members)}."
          + (f" Left out: {'; '.join(left_out)}." if left_out else ""))
# rho (how alike one prompt's rollouts are) exists only in the two-axis fit
priced = pd.DataFrame([{"threshold": t, "model": m["kind"], "status": m["status"],
                        "S_min": m["S_min"], "B0 (B_noise along one axis)": m["B0"],
                        "rho": m["rho"] if m["kind"] == "two_axis" else float("nan")}
                       for t, m in models.items()])
ch.dash_missing(priced.set_index("threshold").round(3))

# %% [markdown]
# ## The step time against the batch
# Fitted to each run's mean training step time (validation and checkpoint time excluded); the plan
# predicts hours only where this model exists.

# %%
step_times = ch.step_time_table(measured)
step_model = ch.step_time_model(measured)
if step_model["status"] == "ok":
    unit = {"a": "s", "b_B": "s per sample", "b_p": "s per prompt"}
    print(f"{step_model['formula']}: " + ", ".join(
        f"{k} = {step_model['coef'][k]:.4g} ± {step_model['se'][k]:.2g} {unit[k]}" for k in step_model["terms"])
        + f"; R² = {step_model['r2']:.3f} over {step_model['n_runs']} runs, B = {step_model['B_range'][0]:.0f} to "
        f"{step_model['B_range'][1]:.0f}" + (f". Note: {step_model['reason']}." if step_model["reason"] else "."))
else:
    print(f"No step-time model ({step_model['reason'] or 'no run logs a step time'}): the plan can rank "
          "candidates by samples only.")
gpu_counts = sorted(int(g) for g in step_times["n_gpus"].dropna().unique())
print(f"GPU counts in the run configs: {gpu_counts}" if gpu_counts else
      "No GPU count in the run configs (trainer.n_gpus_per_node × trainer.nnodes): no GPU-hours.")

# %% [markdown]
# ## Every candidate at every target
# Predicted rollout steps, training hours, GPU-hours and samples with their 95% bands.

# %%
predictions = ch.predict_plan(models, step_model, step_times, seed=seed)
ch.save_table(predictions, tables, "plan_candidates")
plan = ch.recommend(predictions)
ch.save_table(plan, tables, "plan")
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
                                    values=shown, aggfunc="first").round(2)
    with pd.option_context("display.max_rows", 250):  # every candidate, not pandas' first and last few
        display(ch.dash_missing(table))  # noqa: F821 (IPython)

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
    display(fig)  # noqa: F821 (IPython)
else:
    print("No hours predicted at any target: no figure.")

# %% [markdown]
# ## Wall-clock time against GPU-hours and samples
# At the highest target with an `ok` fit (else the highest with any plan): a candidate on the frontier
# is not beaten on both axes by another.

# %%
usable = plan[plan["objective"] == "wall_clock"]
frontier_t = None
if len(usable):
    ok_t = usable.loc[usable["fit_status"] == "ok", "threshold"]
    frontier_t = float(ok_t.max() if len(ok_t) else usable["threshold"].max())
    fig = ch.plot_plan_frontier(predictions, plan, frontier_t, title=params["title"])
    ch.save_figure(fig, predictions[predictions["threshold"] == frontier_t], figures, "plan_frontier")
    display(fig)  # noqa: F821 (IPython)
    if len(gpu_counts) == 1:
        print(f"Every run used {gpu_counts[0]} GPUs, so GPU-hours are {gpu_counts[0]} × hours: the fastest batch is "
              "also the cheapest in GPU-hours. Fewer samples cost time: below the fastest batch, each halving "
              "of B saves samples but takes longer.")
else:
    print("No hours predicted: no frontier.")

# %% [markdown]
# ## The recommendation at each target
# `wall_clock`: fewest hours; `gpu_hours`: fewest GPU-hours; `samples`: samples to target keep falling
# as B shrinks, so this takes the fastest candidate within 10% of the fewest samples.

# %%
if len(plan):
    display(plan[ch.PLAN_COLUMNS].set_index(["threshold", "objective"]).round(3))  # noqa: F821 (IPython)
else:
    print("No recommendation: no target has a usable fit.")

# %% [markdown]
# ## Which runs would pin B_noise down
# For every candidate batch size along the phase's axis (one octave beyond the sampled range), a new run
# is simulated from the fitted curve with the phase's eval noise and added to each of the fit's bootstrap
# tables; the refits give the interval expected after. Ranked greedily (the second given the first),
# up to three distinct batch sizes while each narrows the interval by 5% more.

# %%
t0 = time.perf_counter()
next_table = ch.next_runs(draws, cbs_fit, sb_eb[sb_eb["in_envelope"]], step_model,
                          n_simulations=n_simulations, seed=seed)
elapsed = time.perf_counter() - t0
ch.save_table(next_table, tables, "next_runs")
if len(next_table):
    print(f"{len(next_table)} suggested run(s) at {next_table['threshold'].nunique()} target(s); "
          f"{n_simulations} simulated sweeps per candidate, {elapsed:.1f} s.")
    display(next_table.drop(columns=["note"]).set_index(["threshold", "rank"]).round(3))  # noqa: F821 (IPython)
else:
    print("No target has a usable fit to simulate from: next_runs.csv is written with its header only. "
          "First add batch sizes that reach the targets (3 are needed for a fit).")

# %% [markdown]
# ## Answer

# %%
fastest = ch.fastest_batch(measured[measured["in_envelope"]]) if len(measured) else None
for line in ch.plan_summary(plan, fastest, next_table, cbs_fit[["threshold", "status", "reason"]]):
    print(line)
