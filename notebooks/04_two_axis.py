# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Is adding rollouts worth as much as adding prompts?
#
# A batch of B = n_prompts × n_rollouts samples can grow along two axes. Rollouts of one prompt
# share the prompt, so their gradients are correlated and they are worth fewer independent
# samples. We model the effective batch as B_eff = n_p n_r / (1 + (n_r − 1) ρ) and fit
# S = S_min (1 + B0 / B_eff) jointly over the prompt-axis and rollout-axis phases; ρ = 0 means
# rollouts are as good as prompts, ρ = 1 means extra rollouts add nothing. On an iso-batch phase
# (one B split differently) the notebook compares the splits directly.

# %% tags=["parameters"]
phase = "p2b"
out_dir = "outputs"
params_dir = "params"
source = "data/demo"
n_bootstrap = 1000
seed = 0

# %%

import pandas as pd

import cbs_helpers as ch

ch.setup_style()
out, params_dir, source = ch.project_paths(out_dir, params_dir, source)
params = ch.load_phase_params(params_dir, phase)
figures, tables = out / phase / "figures", out / phase / "tables"
runs_all, history_all, manifest = ch.open_snapshot(out, source)
joint_phases = params["two_axis_phases"] or [phase]
frames = []
for p in joint_phases:
    if not (runs_all["phase"] == p).any():
        print(f"phase {p}: no runs in the snapshot, left out of the joint fit")
        continue
    p_runs, p_hist, p_metric = ch.phase_runs(runs_all, history_all, ch.load_phase_params(params_dir, p))
    frames.append(ch.sb_eb_table(p_runs, p_hist, p_metric, params["thresholds"]).assign(phase=p))
sb_eb_all = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
print(f"joint fit over {', '.join(sorted(sb_eb_all['phase'].unique())) if len(sb_eb_all) else 'nothing'}: "
      f"{sb_eb_all['run_id'].nunique() if len(sb_eb_all) else 0} runs")

# %% [markdown]
# ## The joint fit: rollout correlation ρ and noise scale B0 at each target

# %%
two_axis = ch.two_axis_fit(sb_eb_all, n_bootstrap=n_bootstrap, seed=seed) if len(sb_eb_all) > 0 \
    else {"fit": pd.DataFrame(), "axes": pd.DataFrame()}
ch.save_table(two_axis["fit"], tables, "two_axis_fit", latex=True,
              caption="Joint two-axis fit: rollout correlation rho and B0 (prompts)",
              label=f"tab:two_axis_{phase}")
ch.save_table(two_axis["axes"], tables, "two_axis_b_noise")
two_axis["fit"].round(3)

# %% [markdown]
# ## B_noise along the prompt axis and along the rollout axis

# %%
fit_ok = two_axis["fit"][two_axis["fit"].get("status", pd.Series(dtype=str)) == "ok"] \
    if len(two_axis["fit"]) else pd.DataFrame()
if params["axis"] != "iso_batch" and len(fit_ok):
    mid = float(fit_ok["threshold"].iloc[len(fit_ok) // 2])
    fig = ch.plot_two_axis(sb_eb_all, two_axis, mid, title=params["title"])
    ch.save_figure(fig, sb_eb_all, figures, "two_axis")
    display(fig)  # noqa: F821 (IPython)
else:
    print("no joint fit drawn here" if params["axis"] != "iso_batch" else
          "iso-batch phase: the joint fit above only predicts the splits below")

# %% [markdown]
# ## At a fixed batch, which split into prompts × rollouts is fastest?
# (Iso-batch phases only.)

# %%
iso = pd.DataFrame()
if params["axis"] == "iso_batch":
    runs, history, metric = ch.phase_runs(runs_all, history_all, params)
    sb_iso = ch.sb_eb_table(runs, history, metric, params["thresholds"])
    iso = ch.iso_batch_table(sb_iso, two_axis if len(fit_ok) else None)
    ch.save_table(iso, tables, "iso_batch", latex=True,
                  caption=f"Steps to target by split, {params['title']}", label=f"tab:iso_{phase}")
    fig = ch.plot_iso_batch(iso, title=params["title"])
    ch.save_figure(fig, iso, figures, "iso_batch")
    display(fig)  # noqa: F821 (IPython)
iso.round(2)

# %% [markdown]
# ## Answer

# %%
for row in fit_ok.itertuples():
    print(f"acc ≥ {row.threshold:g}: rho = {ch.format_ci(row.rho, row.rho_lo, row.rho_hi, 2)}, "
          f"B0 = {ch.format_ci(row.B0, row.B0_lo, row.B0_hi)} prompts")
axes_tab = two_axis["axes"]
if len(axes_tab):
    for (p, axis), rows in axes_tab.groupby(["phase", "axis"]):
        print(f"{p} ({axis} axis): implied B_noise {rows['B_noise'].min():.0f} to "
              f"{rows['B_noise'].max():.0f} samples/step over the targets")
if len(fit_ok):
    rho = fit_ok["rho"].median()
    print(f"\nMedian rho = {rho:.2f}: the second rollout of a prompt is worth {1 - rho:.2f} of a "
          f"sample from a new prompt, and each further rollout less; n_p prompts with many "
          f"rollouts are worth at most n_p / rho = {1 / rho:.1f} n_p independent samples.")
if len(iso):
    best = iso.loc[iso.groupby("threshold")["S_B"].idxmin()]
    for row in best.itertuples():
        print(f"acc ≥ {row.threshold:g}: fewest steps with {row.n_prompts} prompts × "
              f"{row.n_rollouts} rollouts ({row.S_B:.0f} steps)")
