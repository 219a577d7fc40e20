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
# For every run and target accuracy we measure S(B), the steps to reach the target, and
# E(B) = B·S(B), the samples, then fit McCandlish et al. (2018):
# S(B) = S_min (1 + B_noise / B), E(B) = E_min (1 + B / B_noise), B_crit = E_min / S_min = B_noise.
# That law assumes the learning rate tuned at each B. A sweep at one fixed learning rate often
# bends differently (with Adam S falls like B^-0.5 to B^-0.7 at small B), so the general form
# S(B) = S_min (1 + (B_noise / B)^alpha) is fitted beside it. All targets are fitted at once
# (S_min per target, log B_noise linear in the target accuracy, one alpha), so a sweep of few seeds
# borrows strength across its targets and the trend of B_noise gets an interval. The forms are
# weighed by how well each predicts a batch size left out of the fit (runs that never reached a
# target count as lower bounds), and every interval mixes them in that proportion. B_noise means the
# same in every form: the batch size at which a step is worth half of what an infinitely large
# batch's step would be, S(B_noise) = 2 S_min.
#
# **Units.** S is counted in *rollout steps*, verl's `training/global_step`: one step generates
# B = n_prompts × n_rollouts samples and then makes `updates` optimizer updates on them (the
# step's prompts divided by the prompts of one mini-batch, times the epochs over them; 01 lists
# each run's). B_noise is in samples per rollout step.
# Where the updates per step differ between runs, the fit is repeated in optimizer updates below.
#
# **Another phase:** its report is in the index beside this one. To explore it in JupyterLab,
# `make notebook NB=02 PHASE=p2b` opens a working copy for that phase in `scratch/`; or
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

s = ch.section("02_steps_to_target", phase, out_dir, params_dir, source, columns=[ch.GEN_BATCHES_KEY],
               n_bootstrap=n_bootstrap, seed=seed)
params, runs, history, metric, figures, tables = s.params, s.runs, s.history, s.metric, s.figures, s.tables
print(f"{params['title']}: {len(runs)} runs, metric {metric}, n_val = {params['n_val']}, "
      f"{n_bootstrap} bootstrap resamples")

# %% [markdown]
# ## Steps and samples to each target
# Rollout steps to each target at each batch size (median over the replicates of the best
# configuration). A value marked `≥` is a lower bound: a run that never reached the target
# counts with its last evaluated step (censored), so the true S is at least that.

# %%
fit = ch.fit_phase(runs, history, metric, params["thresholds"], params["n_val"], n_bootstrap=n_bootstrap,
                   seed=seed, metaparameters=params["metaparameters"])
sb_eb, cbs_fit = fit.sb_eb, fit.table
envelope = sb_eb[sb_eb["in_envelope"]]
ch.save_table(sb_eb[ch.SB_EB_CSV_COLUMNS + ["configuration", "lr", "updates_per_step", "S_updates", "in_envelope"]],
              tables, "sb_eb")
ch.save_table(cbs_fit[ch.CBS_FIT_COLUMNS], tables, "cbs_fit", latex=True,
              caption=f"Fit of S(B), {params['title']}", label=f"tab:cbs_fit_{phase}")
ch.censored_pivot(envelope, "S_B", digits=1)

# %% [markdown]
# ## The fitted curve at each target, in the form that predicts best
# `model` is the form that predicts left-out batch sizes best: `mccandlish` (alpha = 1) or `general`;
# its weight against the other is in the shape sentences below, and every interval mixes the forms
# in that proportion. alpha is the bent form's exponent at every target, with its 95% interval;
# "B_noise if S ∝ 1/B" is what the 1/B form alone would say. A status `extrapolated` means B_noise rests
# on the fitted form beyond the runs (S_min was not approached, or B_noise lies outside the batch
# sizes that reached the target). E_min and the 20%-overhead batch (where E = 1.2 E_min, Zhang et al.
# 2024) exist only where E(B) has a minimum: not when alpha < 1, where smaller batches always need
# fewer samples.

# %%
display(ch.reader_table(ch.with_intervals(
    cbs_fit.round({"E_min": 0, "B_crit_20pct": 0, "r2_log": 3, "B_noise_mccandlish": 0}),
    {"B_noise": 0, "S_min": 1, "alpha": 2},
    keep=["threshold", "model", "B_noise_mccandlish", "E_min", "B_crit_20pct", "r2_log", "n_points",
          "n_censored", "status", "reason"]).set_index("threshold")))
display(Markdown("Status:" + ch.legend_markdown(ch.status_legend(cbs_fit["status"]))))
shape_lines = [f"- acc ≥ {row.threshold:g}: {ch.shape_sentence(row)}" for row in cbs_fit.itertuples()
               if ch.shape_sentence(row)]
tried_once = sb_eb.drop_duplicates("run_id")
lr_tuned = bool((tried_once.groupby("total_batch")["lr"].nunique() > 1).any())
lr_words = ch.learning_rate_context(ch.lr_policy(tried_once["total_batch"], tried_once["lr"]), cbs_fit,
                                    tuned=lr_tuned)
display(Markdown("**The shape of S(B).** " + (lr_words + "\n\n" if lr_words else "\n\n")
                 + ("\n".join(shape_lines) if shape_lines else "No target has a fit to describe.")))

# %% [markdown]
# While runs are running, the figure also draws the crossings they have not made yet, as forecasts:
# open circles at the step each is forecast to cross at, with a bar over its 90% interval (from one
# progress curve fitted to every evaluation; the fit above is the runs' own crossings, 08 decides
# with the forecasts in it). A filled point is a crossing that happened.

# %%
forecast = ch.running_forecasts(runs, history, metric, params["thresholds"], params["n_val"], fit,
                                n_draws=min(n_bootstrap, 100), seed=seed)  # empty once every run has ended
fig = ch.plot_sb_eb(envelope, cbs_fit, title=params["title"], forecast=forecast)
ch.save_figure(fig, ch.with_forecasts(envelope, forecast), figures, "sb_eb")
fig

# %% [markdown]
# ## Which learning rate won at each batch size
# At a batch size where several configurations ran (learning rates, or other metaparameters named
# in the params), S(B) is the fewest steps any of them needed: the best configuration at that
# batch size and target (Shallue et al. 2018 take the best trial at each B). The others are drawn
# faded. The choice is made on the measured S; the bootstrap interval does not include the luck of
# which rate won.

# %%
configs = ch.configuration_table(sb_eb)
winners = ch.envelope_winners(configs)
ch.save_table(configs, tables, "envelope")
ch.save_table(winners, tables, "envelope_winners")
tried, swept = sb_eb.drop_duplicates("run_id"), winners[winners["n_configs"] > 1]
one_rate = bool((tried.groupby("total_batch")["lr"].nunique() <= 1).all())
policy = (ch.lr_policy(tried["total_batch"], tried["lr"]) if one_rate
          else ch.lr_policy(winners["total_batch"], winners["lr_won"]))
print("\n".join(ch.envelope_lines(winners, policy, one_rate) + ([] if one_rate else ch.lr_sweep_claims(sb_eb, winners))))
if not one_rate:
    fig = ch.plot_envelope(configs, cbs_fit, title=f"{params['title']}: the best learning rate at each B")
    ch.save_figure(fig, configs, figures, "envelope")
    display(fig)  # noqa: F821 (IPython)

# %% [markdown]
# ## Steps to target in optimizer updates
# S in optimizer updates is S × updates per rollout step. Where every run makes the same number of
# updates per step this only rescales S (and B_noise per update is B_noise divided by it); where
# the number differs between runs the fit is repeated with S in updates against the samples per
# update, B / updates.

# %%
updates = sb_eb.drop_duplicates("run_id")["updates_per_step"].dropna().astype(int)
cbs_fit_updates = None
if updates.nunique() > 1:
    cbs_fit_updates = ch.fit_phase(runs, history, metric, params["thresholds"], params["n_val"],
                                   n_bootstrap=n_bootstrap, seed=seed, units="updates",
                                   metaparameters=params["metaparameters"]).table
    ch.save_table(cbs_fit_updates[ch.CBS_FIT_COLUMNS + ["units"]], tables, "cbs_fit_updates")
print("\n".join(ch.updates_lines(updates, cbs_fit, cbs_fit_updates)))
envelope.pivot_table(index=["total_batch", "updates_per_step"], columns="threshold", values="S_updates",
                     aggfunc="median").round(1) if updates.nunique() > 1 else None

# %% [markdown]
# ## Samples generated and samples trained on
# With DAPO's dynamic sampling (`train/num_gen_batches` logged) a step generates batches until
# enough prompts with mixed rewards remain, so it generates more samples than it trains on.
# E(B) above counts trained samples (B per step); here the generated ones too.

# %%
generated = ch.generated_samples_table(runs, history, sb_eb)
print(ch.generated_samples_line(generated))
if len(generated):
    ch.save_table(generated, tables, "generated_samples")
if len(generated) and (generated["in_envelope"] & ~generated["censored"]).any():
    fig = ch.plot_generated_samples(generated, title=params["title"])
    ch.save_figure(fig, generated, figures, "generated_samples")
    display(fig)  # noqa: F821 (IPython)

# %%
good = cbs_fit[cbs_fit["status"].isin(["ok", "extrapolated"])]
trend = fit.trend()
display(Markdown(f"## {ch.sentence(ch.trend_title(trend))[:-1]}\n{ch.trend_sentence(trend)} B_noise against the "
                 "target accuracy, next to the first-crossing, drop-censored, linear-space fit of the original "
                 "notebook on the same runs."))
seed_fit = ch.seed_method_fit(runs, history, metric, params["thresholds"])
comparison = cbs_fit[["threshold", "B_noise", "B_noise_lo", "B_noise_hi", "status"]].merge(
    seed_fit[["threshold", "B_noise"]].rename(columns={"B_noise": "B_noise_seed_method"}),
    on="threshold", how="left")
_ = ch.save_table(comparison, tables, "b_noise_vs_target")  # its paths are not for the reader

# %%
if len(good):
    fig = ch.plot_b_noise_vs_target(cbs_fit, compare=seed_fit, compare_label="first crossing, linear fit",
                                    trend=trend)
    ch.save_figure(fig, comparison, figures, "b_noise_vs_target")
    display(fig)  # noqa: F821 (IPython)
else:
    print(f"No usable fit at any target ({cbs_fit['reason'].iloc[0]}): insufficient data for this plot.")

# %% [markdown]
# ## Do the runs lie on the steps–samples trade-off curve?
# Under McCandlish every (run, target) satisfies (S/S_min − 1)(E/E_min − 1) = 1 with
# E_min = S_min B_noise; where a target chose the general form, its own curve is drawn dotted.

# %%
pareto = ch.pareto_table(envelope, cbs_fit)
ch.save_table(pareto, tables, "pareto")
if len(pareto):
    fig = ch.plot_pareto(pareto, title=f"{params['title']}: trade-off check")
    ch.save_figure(fig, pareto, figures, "pareto")
    display(fig)  # noqa: F821 (IPython)
else:
    print("No usable fit: insufficient data for the trade-off check.")

# %% [markdown]
# ## Methods, and how they differ from a first-crossing analysis
# The eval series is smoothed monotonically (isotonic) and the crossing interpolated between evals,
# instead of taking the first eval above target; runs that never reach a target enter the fit as lower
# bounds instead of being dropped; the fit is done in log space so the slowest runs do not dominate;
# all targets are fitted at once and the form is chosen by how well it predicts a left-out batch size;
# every B_noise has a 95% interval from a bootstrap that draws new runs with the scatter pooled over the
# whole phase (so two seeds per batch size still give an honest spread) and mixes the forms; and where
# several learning rates ran at one batch size, only the best one there enters the fit (the envelope),
# as batch-size studies do.

# %% [markdown]
# ## Answer

# %%
print("\n".join(ch.fit_answer_lines(cbs_fit, len(swept))))
if len(good) >= 2:
    print("\n" + ch.trend_sentence(trend))
