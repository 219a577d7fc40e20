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
# The page across phases: every phase's fit of S(B) (each phase's `tables/cbs_fit.csv`, linked
# below) in one table for the paper (CSV and LaTeX) and one headline figure, B_noise against the
# target accuracy per phase; then the answer: how B_noise moves with the target in each phase and,
# where a phase fitted prompts against rollouts (04), what a second rollout is worth against a new
# prompt. The index shows the same lines.
#
# **In JupyterLab:** `make notebook NB=07` opens a working copy in `scratch/`; run by hand, it
# summarises the fits of your hand runs and, where there are none, those of the last
# `make report`. Each phase's own reports are in the index.

# %% tags=["parameters"]
phase: str = "summary"  # the cross-phase section (no params file of its own)
out_dir: str = ""  # empty: a hand run, written to scratch/ (only make report writes outputs/)
params_dir: str = "params"  # the folder of the phases' params files
source: str = "data/demo"  # wandb:<entity>/<project>, a folder of W&B offline runs, or an export folder
n_bootstrap: int = 1000  # bootstrap resamples per fit

# %%

import pandas as pd
from IPython.display import Markdown, display

import cbs_helpers as ch

s = ch.section("07_summary", phase, out_dir, params_dir, source, n_bootstrap=n_bootstrap)
out = s.out
phases, skipped = ch.summary_fits(s)  # a hand run: its own fits, else the build's
display(Markdown(f"{len(phases)} phase(s) with a fit: "
                 + (", ".join(f"[{p}](../{p}/tables/cbs_fit.csv)" for p in phases) or "none") + "."
                 + (f" Not in the summary: {'; '.join(skipped)}." if skipped else "")))

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
if summary.empty:
    display(Markdown("**Insufficient:** no phase has a McCandlish fit yet."))
else:
    display(ch.reader_table(summary.set_index(["phase", "target accuracy"])))
    display(Markdown("Fit: " + ch.legend_markdown(ch.status_legend(summary["fit"]))))

# %%
usable = summary_long[summary_long["status"].isin(["ok", "extrapolated"])]
if len(usable):
    display(Markdown("## B_noise of every phase against the target accuracy"))
    fig = ch.plot_cross_phase(summary_long)
    ch.save_figure(fig, summary_long, out / "summary" / "figures", "headline")
    display(fig)

# %% [markdown]
# ## Answer
# Per phase, how B_noise moves with the target; and where a phase fitted prompts against rollouts (04),
# what a second rollout of a prompt is worth against a new prompt. The index opens its cross-phase part
# with these lines (`findings.csv`).

# %%
two_axis = {p: pd.read_csv(f) for p in phases if (f := out / p / "tables" / "two_axis_fit.csv").is_file()}
findings = ch.cross_phase_findings(summary_long, two_axis)
ch.save_table(findings, out / "summary" / "tables", "findings")
display(Markdown("\n".join(f"- {r.phase} · {r.topic}: {r.finding}" for r in findings.itertuples())
                 or "No phase has a McCandlish fit yet, so there is nothing to summarise."))
