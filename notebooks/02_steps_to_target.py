# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # How many steps and samples does each batch size need, and what is B_noise?
#
# For every run and target accuracy we measure S(B), the optimizer steps to reach the target,
# and E(B) = B·S(B), the samples, then fit McCandlish et al. (2018):
# S(B) = S_min (1 + B_noise / B), E(B) = E_min (1 + B / B_noise), B_crit = E_min / S_min = B_noise.
#
# How this differs from the first version of this analysis: the eval series is smoothed
# monotonically (isotonic) and the crossing interpolated between evals, instead of taking the
# first eval above target; runs that never reach a target enter the fit as lower bounds instead
# of being dropped; the fit is done in log space so the slowest runs do not dominate; and every
# B_noise has a 95% bootstrap interval.

# %% tags=["parameters"]
phase = "p1"
out_dir = "outputs"
params_dir = "params"
source = "data/demo"
n_bootstrap = 1000
seed = 0

# %%
import cbs_helpers as ch

ch.setup_style()
out, params_dir, source = ch.project_paths(out_dir, params_dir, source)
params = ch.load_phase_params(params_dir, phase)
figures, tables = out / phase / "figures", out / phase / "tables"
runs_all, history_all, manifest = ch.open_snapshot(out, source)
runs, history, metric = ch.phase_runs(runs_all, history_all, params)
print(f"{params['title']}: {len(runs)} runs, metric {metric}, n_val = {params['n_val']}, "
      f"{n_bootstrap} bootstrap resamples")

# %% [markdown]
# ## Steps and samples to each target
# `censored` runs never reached the target; their S is the last evaluated step, a lower bound.

# %%
sb_eb, cbs_fit = ch.fit_phase(runs, history, metric, params["thresholds"], params["n_val"],
                              n_bootstrap=n_bootstrap, seed=seed)
ch.save_table(sb_eb[ch.SB_EB_CSV_COLUMNS], tables, "sb_eb")
ch.save_table(cbs_fit[ch.CBS_FIT_COLUMNS], tables, "cbs_fit", latex=True,
              caption=f"McCandlish fit, {params['title']}", label=f"tab:cbs_fit_{phase}")
sb_eb.pivot_table(index=["total_batch", "n_prompts", "n_rollouts"],
                                    columns="threshold", values="S_B", aggfunc="median").round(1)

# %% [markdown]
# ## The McCandlish fit at each target

# %%
cbs_fit[ch.CBS_FIT_COLUMNS].set_index("threshold").round({"B_noise": 0, "B_noise_lo": 0, "B_noise_hi": 0, "S_min": 1,
                                    "E_min": 0, "B_crit_20pct": 0, "r2_log": 3})

# %%
fig = ch.plot_sb_eb(sb_eb, cbs_fit, title=params["title"])
ch.save_figure(fig, sb_eb, figures, "sb_eb")
fig

# %% [markdown]
# ## The critical batch size grows as the target gets harder
# B_noise against the target accuracy, next to the first-crossing, drop-censored, linear-space
# fit of the original notebook on the same runs.

# %%
seed_fit = ch.seed_method_fit(runs, history, metric, params["thresholds"])
comparison = cbs_fit[["threshold", "B_noise", "B_noise_lo", "B_noise_hi", "status"]].merge(
    seed_fit[["threshold", "B_noise"]].rename(columns={"B_noise": "B_noise_seed_method"}),
    on="threshold", how="left")
ch.save_table(comparison, tables, "b_noise_vs_target")
fig = ch.plot_b_noise_vs_target(cbs_fit, compare=seed_fit, compare_label="first crossing, linear fit",
                                title=f"{params['title']}: B_noise vs target")
ch.save_figure(fig, comparison, figures, "b_noise_vs_target")
fig

# %% [markdown]
# ## Do the runs lie on the steps–samples trade-off curve?
# Under the model every (run, target) satisfies (S/S_min − 1)(E/E_min − 1) = 1.

# %%
pareto = ch.pareto_table(sb_eb, cbs_fit)
ch.save_table(pareto, tables, "pareto")
fig = ch.plot_pareto(pareto, title=f"{params['title']}: trade-off check")
ch.save_figure(fig, pareto, figures, "pareto")
fig

# %% [markdown]
# ## Answer

# %%
good = cbs_fit[cbs_fit["status"].isin(["ok", "extrapolated"])]
for row in cbs_fit.itertuples():
    ci = ch.format_ci(row.B_noise, row.B_noise_lo, row.B_noise_hi)
    print(f"acc ≥ {row.threshold:g}: B_noise = {ci} samples/step, S_min = {row.S_min:.1f} steps, "
          f"20%-overhead CBS = {row.B_crit_20pct:.0f}, R²(log) = {row.r2_log:.3f}, "
          f"{row.n_points} points ({row.n_censored} censored), status {row.status}")
if len(good) >= 2:
    first, last = good.iloc[0], good.iloc[-1]
    print(f"\nB_noise grows from {first.B_noise:.0f} at accuracy {first.threshold:g} to "
          f"{last.B_noise:.0f} at {last.threshold:g} ({last.B_noise / first.B_noise:.1f}x).")
