# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Which batch size reaches each target fastest in wall-clock time?
#
# Fewer steps at a larger batch only pay off if a step does not get proportionally slower.
# Time to target is the cumulative logged step time (`perf/time_per_step`, else `timing_s/step`)
# up to the interpolated crossing, not a mean step time times S. Validation (`timing_s/testing`)
# and checkpoint saving (`timing_s/save_checkpoint`) are counted apart: they depend on how often
# a run evaluates and saves, not on its batch size. Recent verl times them outside the step,
# verl up to 0.5 inside it; which one a run did is read from its data. GPU-hours multiply the time
# by the run's GPU count (its GPUs per node times its nodes, from its config) where the config gives it.
#
# **Another phase:** its report is in the index beside this one. To explore it in JupyterLab,
# `make notebook NB=06 PHASE=p4_math` opens a working copy for that phase in `scratch/`; or
# set `phase` below and run: a run that is not `make report`'s writes to `scratch/`, never
# to `outputs/`.

# %% tags=["parameters"]
phase: str = "p1"  # the phase: params/<phase>.yaml
out_dir: str = ""  # empty: a hand run, written to scratch/ (only make report writes outputs/)
params_dir: str = "params"  # the folder of the phases' params files
source: str = "data/demo"  # wandb:<entity>/<project>, a folder of W&B offline runs, or an export folder
n_bootstrap: int = 1000  # bootstrap resamples per fit

# %%

import cbs_helpers as ch

s = ch.section("06_wall_clock", phase, out_dir, params_dir, source, columns=ch.WALL_CLOCK_KEYS,
               n_bootstrap=n_bootstrap)
params, runs, history, metric, figures, tables = s.params, s.runs, s.history, s.metric, s.figures, s.tables

# %% [markdown]
# ## Training time to each target, per batch size
# Hours of training steps (validation and checkpoints excluded), median over the replicates of the
# best configuration at each batch size. A value marked `≥` is a lower bound: the run stopped
# before reaching the target.

# %%
wall = ch.wall_clock_table(runs, history, metric, params["thresholds"], metaparameters=params["metaparameters"])
ch.save_table(wall, tables, "wall_clock")
best = wall[wall["in_envelope"]] if len(wall) else wall
ch.censored_pivot(best, "time_to_target_h", digits=2)

# %% [markdown]
# ## Validation and checkpoint time, counted apart

# %%
logged = {what: key in history.columns and history[key].notna().any()
          for what, key in (("validation", "timing_s/testing"), ("checkpoint", "timing_s/save_checkpoint"))}
mid = params["thresholds"][len(params["thresholds"]) // 2]
at_mid = best[best["threshold"] == mid]
any_overhead = bool((wall[["testing_h", "checkpoint_h"]].fillna(0) > 0).any().any())
print("\n".join(ch.overhead_lines(wall.drop_duplicates("run_id"), logged, at_mid, mid, any_overhead,
                                 ch.resumed_runs(runs))))
print(f"Per run of the best configuration, at acc ≥ {mid:g} (hours; – where not logged):")
ch.reader_table(ch.with_censored_marks(at_mid, ["time_to_target_h", "time_to_target_with_overhead_h"])[[
    "run_name", "total_batch", "time_to_target_h", "testing_h", "checkpoint_h", "time_to_target_with_overhead_h",
    "overhead_in_step_time"]].set_index("run_name").round(3))

# %% [markdown]
# ## Step time against the batch
# A step-time model T_step(n_prompts, n_rollouts), fitted to each run's mean training step time:
# a + b_B·B, with a per-prompt term b_p·n_prompts where both n_prompts and n_rollouts vary.

# %%
step_times = ch.step_time_table(wall)
model = ch.step_time_model(wall)
print(ch.step_model_sentence(model))
ch.save_table(step_times.assign(**{f"model_{k}": v for k, v in model["coef"].items()}), tables, "step_time_model")
fig = ch.plot_step_time(step_times, model, title=params["title"])
ch.save_figure(fig, step_times, figures, "step_time")
fig

# %% [markdown]
# ## Time to target against the batch

# %%
if best["time_to_target_h"].notna().any():
    fig = ch.plot_wall_clock(best, title=params["title"])
    ch.save_figure(fig, best, figures, "wall_clock")
    display(fig)  # noqa: F821 (IPython)
else:
    print("No run of this phase logs a step time (perf/time_per_step or timing_s/step).")

# %% [markdown]
# ## Answer
# These are the runs as they ran, each with its seed's luck. `08_plan` predicts every batch size from
# the fit over all of them (including batch sizes not run), so its fastest batch can differ from the
# fastest run here; where it does, 08 says so and why.

# %%
fastest = ch.fastest_batch(best)
with_overhead = ch.fastest_batch(best, by="time_to_target_with_overhead_h").set_index("threshold")
ch.save_table(fastest, tables, "wall_clock_fastest", latex=True,
              caption=f"Fastest batch size to each target, {params['title']}",
              label=f"tab:wall_{phase}")
print("\n".join(ch.fastest_run_lines(fastest, with_overhead, any_overhead)))
per_run = wall.drop_duplicates("run_id")
print(ch.sentence(ch.gpu_claim(per_run["n_gpus"] if "n_gpus" in per_run else [])))
