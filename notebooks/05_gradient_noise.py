# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Does the gradient noise scale predict the critical batch size?
#
# McCandlish et al. (2018) predict B_crit from the simple noise scale B_simple = tr(Σ)/|G|², the
# gradient's variance over its squared mean. We compare the B_noise fitted from steps to target
# with two estimates of B_simple: the one logged during training (`grad_noise/*`, smoothed as
# McCandlish et al. do, with numerator and denominator averaged separately), and one computed
# after the fact from `actor/grad_norm` of runs at different B taken at the same accuracy, since
# E|G_B|² = |G|² + tr(Σ)/B.
#
# **Another phase:** its report is in the index beside this one. To explore it in JupyterLab,
# `make notebook NB=05 PHASE=p2a` opens a working copy for that phase in `scratch/`; or
# set `phase` below and run: a run that is not `make report`'s writes to `scratch/`, never
# to `outputs/`.

# %% tags=["parameters"]
phase: str = "p1"  # the phase: params/<phase>.yaml
out_dir: str = ""  # empty: a hand run, written to scratch/ (only make report writes outputs/)
params_dir: str = "params"  # the folder of the phases' params files
source: str = "data/demo"  # wandb:<entity>/<project>, a folder of W&B offline runs, or an export folder
n_bootstrap: int = 1000  # bootstrap resamples per fit
seed: int = 0  # seed of the bootstrap draws

# %%
from IPython.display import Markdown, display

import cbs_helpers as ch

s = ch.section("05_gradient_noise", phase, out_dir, params_dir, source, columns=ch.NOISE_KEYS,
               n_bootstrap=n_bootstrap, seed=seed)
params, runs, history, metric, figures, tables = s.params, s.runs, s.history, s.metric, s.figures, s.tables
fit = ch.fit_phase(runs, history, metric, params["thresholds"], params["n_val"], n_bootstrap=n_bootstrap, seed=seed)
sb_eb, cbs_fit = fit.sb_eb, fit.table
smoothed = ch.smooth_grad_noise(history, runs)
logged = len(smoothed) > 0
has_norms = "actor/grad_norm" in history.columns and history["actor/grad_norm"].notna().any()
print(f"{len(runs)} runs; gradient-noise keys (grad_noise/*) logged: {'yes' if logged else 'no'}; "
      f"actor/grad_norm logged: {'yes' if has_norms else 'no'}.")

# %%
at_target = ch.grad_noise_at_target(smoothed, sb_eb)
if logged:
    display(Markdown("## The logged noise scale during training\n"
                     "Each run's B_simple, smoothed; the shaded band is the range of the B_noise "
                     "fitted from S(B) over the targets."))
    fig = ch.plot_grad_noise(smoothed, cbs_fit, title=f"{params['title']}: B_simple (EMA)")
    ch.save_figure(fig, smoothed, figures, "grad_noise")
    display(fig)

# %% [markdown]
# ## B_simple after the fact, from gradient norms at matched accuracy

# %%
b_simple = ch.b_simple_posthoc(runs, history, metric, params["thresholds"],
                               n_bootstrap=n_bootstrap, seed=seed)
comparison = ch.compare_b_simple(b_simple, cbs_fit)
ch.save_table(comparison, tables, "noise_scale_vs_fit", latex=True,
              caption="Gradient noise scale vs fitted B_noise", label=f"tab:noise_{phase}")
usable = (comparison["status"] == "ok").any() or comparison["B_noise"].notna().any() or len(at_target)
if not (b_simple["status"] == "ok").any():
    reasons = "; ".join(sorted(set(b_simple["reason"].astype(str)) - {""}))
    display(Markdown(f"**Insufficient** for a post-hoc B_simple at any target: {reasons}."))

# %%
if usable:
    fig = ch.plot_noise_scale_vs_fit(comparison, at_target,
                                     title=f"{params['title']}: noise scale vs fit")
    ch.save_figure(fig, comparison, figures, "noise_scale_vs_fit")
    display(fig)
display(ch.reader_table(ch.with_intervals(
    comparison, {"B_simple": 0, "B_noise": 0},
    keep=["threshold", "B_simple_over_B_noise", "status", "reason"])
    .round({"B_simple_over_B_noise": 2}).set_index("threshold")))
display(Markdown("Status of the post-hoc B_simple: "
                 + ch.legend_markdown(ch.status_legend(comparison["status"]))))

# %% [markdown]
# ## Answer

# %%
display(Markdown("\n".join(ch.noise_scale_lines(comparison, at_target, cbs_fit, logged)) or "No target to report."))
