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
sb_eb, cbs_fit = ch.fit_phase(runs, history, metric, params["thresholds"], params["n_val"],
                              n_bootstrap=n_bootstrap, seed=seed)
logged = "grad_noise/B_noise_estimate" in history.columns and \
    history["grad_noise/B_noise_estimate"].notna().any()
print(f"{len(runs)} runs; gradient-noise keys logged: {'yes' if logged else 'no'}")

# %% [markdown]
# ## The logged noise scale during training

# %%
smoothed = ch.smooth_grad_noise(history, runs)
at_target = ch.grad_noise_at_target(smoothed, sb_eb) if len(smoothed) else None
if len(smoothed):
    fig = ch.plot_grad_noise(smoothed, cbs_fit, title=f"{params['title']}: B_simple (EMA)")
    ch.save_figure(fig, smoothed, figures, "grad_noise")
    display(fig)  # noqa: F821 (IPython)
else:
    print("No run of this phase logs grad_noise/B_noise_estimate; only the post-hoc estimate below.")

# %% [markdown]
# ## B_simple after the fact, from gradient norms at matched accuracy

# %%
b_simple = ch.b_simple_posthoc(runs, history, metric, params["thresholds"],
                               n_bootstrap=n_bootstrap, seed=seed)
comparison = ch.compare_b_simple(b_simple, cbs_fit)
ch.save_table(comparison, tables, "noise_scale_vs_fit", latex=True,
              caption="Gradient noise scale vs fitted B_noise", label=f"tab:noise_{phase}")
fig = ch.plot_noise_scale_vs_fit(comparison, at_target, title=f"{params['title']}: noise scale vs fit")
ch.save_figure(fig, comparison, figures, "noise_scale_vs_fit")
fig

# %% [markdown]
# ## Answer

# %%
for row in comparison.itertuples():
    if row.status != "ok":
        print(f"acc ≥ {row.threshold:g}: post-hoc B_simple {row.status} ({row.reason})")
        continue
    print(f"acc ≥ {row.threshold:g}: B_simple = {ch.format_ci(row.B_simple, row.B_simple_lo, row.B_simple_hi)} "
          f"vs fitted B_noise = {ch.format_ci(row.B_noise, row.B_noise_lo, row.B_noise_hi)} "
          f"(ratio {row.B_simple_over_B_noise:.2f})")
if at_target is not None and len(at_target):
    med = at_target.groupby("threshold")["B_simple_ema"].median()
    ratio = (med / cbs_fit.set_index("threshold")["B_noise"]).dropna()
    verdict = ("agrees with it within 15%" if 0.85 <= ratio.median() <= 1.15 else
               "overestimates it" if ratio.median() > 1 else "underestimates it")
    print(f"\nLogged B_simple at the crossing / fitted B_noise: median ratio {ratio.median():.2f} "
          f"(range {ratio.min():.2f} to {ratio.max():.2f}): the logged noise scale {verdict}. "
          "Note that B_simple is measured at the target while S(B) integrates the noise scale over "
          "the whole run, so a noise scale that grows during training makes B_simple at the target "
          "larger than the fitted B_noise.")
