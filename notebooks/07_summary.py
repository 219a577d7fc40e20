# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Does the critical batch size hold across phases, axes and tasks?
#
# This notebook collects every phase's McCandlish fit (`outputs/<phase>/tables/cbs_fit.csv`) into
# one table for the paper (CSV and LaTeX) and one headline figure: B_noise against the target
# accuracy, per phase.

# %% tags=["parameters"]
phase = "summary"
out_dir = "outputs"
params_dir = "params"
n_bootstrap = 1000

# %%

import pandas as pd

import cbs_helpers as ch

ch.setup_style()
out, params_dir = ch.project_paths(out_dir, params_dir)
phases, skipped = {}, []
for path in sorted(params_dir.glob("*.yaml")):
    try:
        params = ch.load_phase_params(params_dir, path.stem)
    except ch.ParamsError as exc:  # that phase's own notebooks report it; summarise the rest
        skipped.append(f"{path.stem} (params file invalid: {exc})")
        continue
    fit_csv = out / params["phase"] / "tables" / "cbs_fit.csv"
    if fit_csv.exists():
        phases[params["phase"]] = (params, pd.read_csv(fit_csv))
for note in skipped:
    print(f"skipped {note}")
assert phases, f"no phase has a cbs_fit.csv under {out}: run the 02_steps_to_target notebooks first"
print(f"{len(phases)} phases with a fit: {', '.join(phases)}")

# %% [markdown]
# ## B_noise per phase and target accuracy
# In samples per step (B = prompts × rollouts), with 95% bootstrap intervals.

# %%
summary_long = ch.cbs_summary_long({p: fit for p, (_, fit) in phases.items()},
                                   {p: params for p, (params, _) in phases.items()})
summary = ch.cbs_summary_table(summary_long)
ch.save_table(summary, out / "summary" / "tables", "cbs_summary", latex=True,
              caption="Critical batch size B_noise (samples per step, 95% CI) by phase and target accuracy",
              label="tab:cbs_summary")
summary

# %%
fig = ch.plot_cross_phase(summary_long)
ch.save_figure(fig, summary_long, out / "summary" / "figures", "headline")
fig

# %% [markdown]
# ## Answer

# %%
ok = summary_long[summary_long["status"].isin(["ok", "extrapolated"])]
for p, rows in ok.groupby("phase", sort=False):
    lo, hi = rows.iloc[0], rows.iloc[-1]
    print(f"{p} ({rows['axis'].iloc[0]} axis, {rows['task'].iloc[0]}): B_noise {lo.B_noise:.0f} at "
          f"accuracy {lo.threshold:g} -> {hi.B_noise:.0f} at {hi.threshold:g}")
missing = sorted(set(summary_long["phase"]) - set(ok["phase"]))
if missing:
    print(f"No usable fit for: {', '.join(missing)} (see their cbs_fit.csv status and reason).")
