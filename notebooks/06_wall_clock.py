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
# by the GPU count of the run config (`trainer.n_gpus_per_node × trainer.nnodes`) where it is known.
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
import pandas as pd

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
per_run = wall.drop_duplicates("run_id")
logged = {"validation": history.get("timing_s/testing"), "checkpoint": history.get("timing_s/save_checkpoint")}
for what, values in logged.items():
    print(f"{what} time: " + ("logged" if values is not None and values.notna().any() else "not logged"))
inside = per_run.loc[per_run["time_key"].notna(), "overhead_in_step_time"].value_counts()
for how, n in inside.items():
    if how == "not logged":
        print(f"{n} run(s) log no validation or checkpoint time: their step time is taken as it is.")
    elif how == "none":
        print(f"{n} run(s): the logged step time contains neither (as verl >= 0.6 times it).")
    else:
        print(f"{n} run(s): the logged step time contains {how.replace('+', ' and ')} (subtracted from the "
              "training time; verl <= 0.5 timed both inside the step, the DAPO recipe the checkpoint).")
if per_run["time_key"].isna().any():
    print(f"{per_run['time_key'].isna().sum()} run(s) log no step time at all.")
mid = params["thresholds"][len(params["thresholds"]) // 2]
at_mid = best[best["threshold"] == mid]
overhead = (at_mid["time_to_target_with_overhead_h"] / at_mid["time_to_target_h"] - 1).dropna()
any_overhead = bool((wall[["testing_h", "checkpoint_h"]].fillna(0) > 0).any().any())
if any_overhead and len(overhead):
    print(f"At acc ≥ {mid:g}, validation and checkpoints add {100 * overhead.min():.0f}% to "
          f"{100 * overhead.max():.0f}% to the training time of the runs.")
resumed = ch.resumed_runs(runs)
if len(resumed):
    print(f"{len(resumed)} run(s) were resumed after a crash and lost {resumed['resume_lost_time_s'].sum() / 3600:.2f} h "
          "of steps trained again after their checkpoint; that time is not counted above.")
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
for row in fastest.itertuples():
    if row.n_configs == 0:
        print(f"acc ≥ {row.threshold:g}: no run reached it")
        continue
    caveat = (" (a run stopped before the target at less time, so this is not certain)"
              if row.undetermined else "")
    gpu = f", {row.gpu_hours:.1f} GPU-hours" if pd.notna(row.gpu_hours) else ""
    alt = with_overhead.loc[row.threshold]
    same = (alt["n_prompts"], alt["n_rollouts"]) == (row.n_prompts, row.n_rollouts)
    print(f"acc ≥ {row.threshold:g}: fastest run made is B = {ch.count(row.total_batch)} "
          f"({int(row.n_prompts)}×{int(row.n_rollouts)}): {row.time_to_target_h:.2f} h of training{gpu}, "
          f"{row.S_B:.0f} steps{caveat}"
          + (("; counting validation and checkpoints, " + ("the same batch size" if same else
              f"B = {int(alt['total_batch'])} instead") + f" takes {alt['value']:.2f} h.") if any_overhead else "."))
print(ch.sentence(ch.gpu_claim(per_run["n_gpus"] if "n_gpus" in per_run else [])))
