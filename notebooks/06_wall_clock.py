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
# up to the interpolated crossing, not a mean step time times S; GPU-hours multiply it by the
# GPU count of the run config (`trainer.n_gpus_per_node × trainer.nnodes`) where it is known.

# %% tags=["parameters"]
phase = "p1"
out_dir = "outputs"
params_dir = "params"
source = "data/demo"
n_bootstrap = 1000

# %%
import cbs_helpers as ch

ch.setup_style()
out, params_dir, source = ch.project_paths(out_dir, params_dir, source)
params = ch.load_phase_params(params_dir, phase)
runs_all, history_all, manifest = ch.open_snapshot(out, source)
runs, history, metric = ch.phase_runs(runs_all, history_all, params)

# %% [markdown]
# ## Time to each target, per run

# %%
wall = ch.wall_clock_table(runs, history, metric, params["thresholds"])
ch.save_table(wall, out / phase / "tables", "wall_clock")
wall.pivot_table(index=["total_batch", "n_prompts", "n_rollouts"], columns="threshold",
                 values="time_to_target_h", aggfunc="median").round(2)

# %% [markdown]
# ## Step time grows with the batch; time to target has a sweet spot

# %%
fig = ch.plot_wall_clock(wall, title=params["title"])
ch.save_figure(fig, wall, out / phase / "figures", "wall_clock")
fig

# %% [markdown]
# ## Answer

# %%
fastest = ch.fastest_batch(wall)
ch.save_table(fastest, out / phase / "tables", "wall_clock_fastest", latex=True,
              caption=f"Fastest batch size to each target, {params['title']}",
              label=f"tab:wall_{phase}")
for row in fastest.itertuples():
    if row.n_configs == 0:
        print(f"acc ≥ {row.threshold:g}: no run reached it")
        continue
    caveat = (" (a run stopped before the target at less time, so this is not certain)"
              if row.undetermined else "")
    gpu = f", {row.gpu_hours:.1f} GPU-hours" if row.gpu_hours == row.gpu_hours else ""
    print(f"acc ≥ {row.threshold:g}: fastest is B = {int(row.total_batch)} "
          f"({int(row.n_prompts)}×{int(row.n_rollouts)}): {row.time_to_target_h:.2f} h{gpu}, "
          f"{row.S_B:.0f} steps{caveat}")
