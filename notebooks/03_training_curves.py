# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # How does validation accuracy grow with steps and with samples at each batch size?
#
# Larger batches need fewer rollout steps to a target but more samples; the gap between the
# two panels is what the critical batch size summarises. Dashed lines mark the target accuracies.
#
# **Another phase:** its report is in the index beside this one. To explore it in JupyterLab,
# `make notebook NB=03 PHASE=p2a` opens a working copy for that phase in `scratch/`; or
# set `phase` below and run: a run that is not `make report`'s writes to `scratch/`, never
# to `outputs/`.

# %% tags=["parameters"]
phase: str = "p1"  # the phase: params/<phase>.yaml
out_dir: str = ""  # empty: a hand run, written to scratch/ (only make report writes outputs/)
params_dir: str = "params"  # the folder of the phases' params files
source: str = "data/demo"  # wandb:<entity>/<project>, a folder of W&B offline runs, or an export folder
n_bootstrap: int = 1000  # bootstrap resamples per fit

# %%
from IPython.display import Markdown, display

import cbs_helpers as ch

s = ch.section("03_training_curves", phase, out_dir, params_dir, source, n_bootstrap=n_bootstrap)
out, params, runs, history, metric = s.out, s.params, s.runs, s.history, s.metric
curves = ch.training_curves_table(runs, history, metric)
# which learning rate won at each batch size (02's envelope): the winners solid, the others faded
sb_eb = ch.sb_eb_table(runs, history, metric, params["thresholds"], metaparameters=params["metaparameters"])
winners = ch.envelope_winners(ch.configuration_table(sb_eb))
curves = ch.mark_lr_winners(curves, sb_eb, winners)
print(f"{len(curves)} validation points from {curves['run_id'].nunique()} of {len(runs)} runs; "
      f"metric {metric}")

# %%
if len(curves):
    display(Markdown("## Accuracy against rollout steps and against samples seen"))
    fig = ch.plot_training_curves(curves, params["thresholds"], title=params["title"])
    ch.save_figure(fig, curves, out / phase / "figures", "training_curves")
    display(fig)

# %% [markdown]
# ## Answer

# %%
final = curves.sort_values("step").groupby("run_id").tail(1)
if final.empty:
    display(Markdown(f"No run of phase {phase} logged a finite value of `{metric}`."))
else:
    lines = [ch.curves_answer(final, params["thresholds"])]
    lines += ch.lr_sweep_claims(sb_eb, winners)
    display(Markdown("\n\n".join(lines)))
