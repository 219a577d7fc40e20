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
lines = ch.noise_scale_verdict(comparison, cbs_fit) + [""]
for row in comparison.itertuples():
    if row.status != "ok":
        lines.append(f"- accuracy ≥ {row.threshold:g}: post-hoc B_simple {row.status} ({row.reason})")
        continue
    lines.append(f"- accuracy ≥ {row.threshold:g}: B_simple = "
                 f"{ch.interval(row.B_simple, row.B_simple_lo, row.B_simple_hi, decimals=0)} vs fitted "
                 f"B_noise = {ch.interval(row.B_noise, row.B_noise_lo, row.B_noise_hi, decimals=0)}"
                 + (f" (B_simple / B_noise = {row.B_simple_over_B_noise:.2f})" if row.B_simple_over_B_noise > 0 else ""))
both = comparison[(comparison["status"] == "ok") & comparison["B_noise_lo"].notna()
                  & comparison["B_simple_lo"].notna()]
if len(both):
    overlap = ((both["B_simple_lo"] <= both["B_noise_hi"]) & (both["B_noise_lo"] <= both["B_simple_hi"]))
    lines.append(f"\nThe post-hoc B_simple and the fitted B_noise have overlapping 95% intervals at "
                 f"{int(overlap.sum())} of {len(both)} target(s); median ratio "
                 f"{both['B_simple_over_B_noise'].median():.2f}.")
ratio = (at_target.groupby("threshold")["B_simple_ema"].median()
         / cbs_fit.set_index("threshold")["B_noise"]).dropna() if len(at_target) else []
if len(ratio):
    verdict = ("agrees with it within 15%" if 0.85 <= ratio.median() <= 1.15 else
               "overestimates it" if ratio.median() > 1 else "underestimates it")
    lines.append(f"\nLogged B_simple at the crossing / fitted B_noise: median ratio "
                 f"{ratio.median():.2f} over {len(ratio)} target(s) (range {ratio.min():.2f} to "
                 f"{ratio.max():.2f}): the logged noise scale {verdict}. B_simple is measured at "
                 "the target while S(B) integrates the noise scale over the whole run, so a noise "
                 "scale that grows during training makes B_simple at the target larger than the "
                 "fitted B_noise.")
elif logged:
    lines.append("\nThe logged noise scale cannot be compared: no target has both a fitted "
                 "B_noise and runs that reach it.")
display(Markdown("\n".join(lines) or "No target to report."))
