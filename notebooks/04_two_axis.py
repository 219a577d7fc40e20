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
# S = S_min (1 + (B0 / B_eff)^α) jointly over the phases named in `two_axis_phases` (the forms and
# their weights as in 02); ρ = 0 means rollouts are as good as prompts, ρ = 1 means extra rollouts
# add nothing. The model prices splits that no run tried, so it is trusted there only after it
# predicts, on this sweep, runs it was not fitted to: each phase in turn is left out and predicted
# from the others. On an iso-batch phase (one B split differently) the notebook also compares the
# splits directly.
#
# **Another phase:** its report is in the index beside this one. To explore it in JupyterLab,
# `make notebook NB=04 PHASE=p2c` opens a working copy for that phase in `scratch/`; or
# set `phase` below and run: a run that is not `make report`'s writes to `scratch/`, never
# to `outputs/`.

# %% tags=["parameters"]
phase: str = "p2b"  # the phase: params/<phase>.yaml
out_dir: str = ""  # empty: a hand run, written to scratch/ (only make report writes outputs/)
params_dir: str = "params"  # the folder of the phases' params files
source: str = "data/demo"  # wandb:<entity>/<project>, a folder of W&B offline runs, or an export folder
n_bootstrap: int = 1000  # bootstrap resamples per fit
seed: int = 0  # seed of the bootstrap draws

# %%

import pandas as pd
from IPython.display import Markdown, display

import cbs_helpers as ch

s = ch.section("04_two_axis", phase, out_dir, params_dir, source, n_bootstrap=n_bootstrap, seed=seed)
params, figures, tables = s.params, s.figures, s.tables
# the phases named in two_axis_phases that have runs and measure this phase's accuracy key
members, left_out = s.joint()
frames = [ch.sb_eb_table(m["runs"], m["history"], m["metric"], params["thresholds"]).assign(phase=m["phase"])
          for m in members]
sb_eb_all = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
joined = sorted(sb_eb_all["phase"].unique()) if len(sb_eb_all) else []
print(f"Joint fit over {', '.join(joined) or 'no phase'}: "
      f"{sb_eb_all['run_id'].nunique() if len(sb_eb_all) else 0} runs."
      + (f" Left out: {'; '.join(left_out)}." if left_out else ""))

# %% [markdown]
# ## The joint fit: rollout correlation ρ and noise scale B0 at each target

# %%
cross = ch.cross_axis_fit(sb_eb_all, params["thresholds"], n_bootstrap=n_bootstrap, seed=seed) if len(sb_eb_all) else None
fit = cross.table if cross is not None else pd.DataFrame(columns=ch.TWO_AXIS_FIT_COLUMNS)
ch.save_table(fit, tables, "two_axis_fit", latex=True,
              caption="Joint two-axis fit: rollout correlation rho and B0 (prompts)",
              label=f"tab:two_axis_{phase}")
if cross is not None:
    ch.save_table(cross.check, tables, "cross_axis_check")

# %%
fit_ok = fit[fit["status"] == "ok"]
if fit.empty:
    display(Markdown("**Insufficient:** none of the joint phases has runs yet, so there is "
                     "nothing to fit."))
else:
    if fit_ok.empty:
        display(Markdown("**Insufficient:** no target has a joint fit; the reason is given for "
                         "each target below."))
    display(ch.reader_table(ch.with_intervals(
        fit, {"rho": 2, "B0": 0}, keep=["threshold", "S_min", "r2_log", "n_points", "n_censored",
                                        "status", "reason"]).round({"S_min": 1, "r2_log": 3})
        .set_index("threshold")))
    display(Markdown("Status: " + ch.legend_markdown(ch.status_legend(fit["status"]))))

# %%
if cross is not None and len(fit_ok):
    mid = float(fit_ok["threshold"].iloc[len(fit_ok) // 2])
    verdict = ("**Checked:** the model " if cross.validated else "**Not checked:** ") + cross.reason + (
        ". Splits off the sampled axes may be recommended from it." if cross.validated else
        ". Splits off the sampled axes are not recommended from it; 08 names the one worth testing.")
    display(Markdown("## Does the model predict runs it was not fitted to?\n" + verdict + "\n\n"
                     f"Left: the runs at accuracy {mid:g} and the model along each phase's configurations; "
                     "right: each left-out phase's runs against what the model predicted without them."))
    fig = ch.plot_two_axis(sb_eb_all, cross, mid, title=params["title"])
    ch.save_figure(fig, cross.check_points if len(cross.check_points) else sb_eb_all, figures, "two_axis")
    display(fig)
    display(ch.reader_table(cross.check, ["left_out", "n_configs", "n_off_lines", "n_cells", "error_ratio",
                                          "critical", "rms_log_error", "passed", "reason"], index="left_out"))

# %%
iso, n_splits = pd.DataFrame(), 0
if params["axis"] == "iso_batch" and s.runs.empty:
    display(Markdown(f"**No runs yet** of phase {phase}: no split to compare."))
elif params["axis"] == "iso_batch":
    sb_iso = ch.sb_eb_table(s.runs, s.history, s.metric, params["thresholds"])
    iso = ch.iso_batch_table(sb_iso, cross if len(fit_ok) else None)
    ch.save_table(iso, tables, "iso_batch", latex=True,
                  caption=f"Steps to target by split, {params['title']}", label=f"tab:iso_{phase}")
    n_splits = len(iso[["n_prompts", "n_rollouts"]].drop_duplicates())

# %%
if params["axis"] == "iso_batch" and not s.runs.empty:
    display(Markdown("## At a fixed batch, which split into prompts × rollouts is fastest?\n"
                     + ("" if n_splits >= 2 else
                        f"**Insufficient:** {n_splits} split(s) in this phase, two or more are "
                        "needed to compare.")))
if params["axis"] == "iso_batch" and not s.runs.empty and n_splits:
    fig = ch.plot_iso_batch(iso, title=params["title"])
    ch.save_figure(fig, iso, figures, "iso_batch")
    display(fig)
    display(ch.censored_pivot(sb_iso, "S_B", index=["n_prompts", "n_rollouts"]))
    display(Markdown("Steps to each target, median over replicates; ≥N: the run stopped at "
                     "step N before reaching the target (a lower bound)."))

# %% [markdown]
# ## Answer

# %%
lines = ch.two_axis_answer(fit, iso, cross.validated if cross is not None else None,
                           cross.reason if cross is not None else "")
display(Markdown("\n".join(lines)))
