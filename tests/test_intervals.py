"""Every interval the analysis reports contains its point estimate (lo <= estimate <= hi), or
the row says why there is none; and no plot fails on an interval, whatever its bounds hold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cbs_rlvr.fit.crossaxis import cross_axis_fit
from cbs_rlvr.fit.interval import bootstrap_interval
from cbs_rlvr.report.figures import plot_b_noise_vs_target
from cbs_rlvr.report.figures_axes import plot_two_axis
from cbs_rlvr.report.style import _ci_errorbar


# ------------------------------------------------------------------------------------------
# The construction
# ------------------------------------------------------------------------------------------
def test_a_centred_bootstrap_gives_the_plain_percentile_interval():
    draws = np.random.default_rng(0).normal(100.0, 10.0, 4000)
    lo, hi, note = bootstrap_interval(100.0, draws)
    q = np.quantile(draws, [0.025, 0.975], method="inverted_cdf")
    assert (lo, hi) == (q[0], q[1]) and note == ""
    assert lo == pytest.approx(100 - 19.6, abs=1.0) and hi == pytest.approx(100 + 19.6, abs=1.0)


@pytest.mark.parametrize("estimate, side", [(50.0, "lo"), (160.0, "hi")])
def test_an_off_centre_bootstrap_is_extended_to_the_estimate_and_says_so(estimate, side):
    """The percentile interval of draws around 100 (sd 10) excludes 50 and 160: the interval
    is extended to the estimate, the other bound stays the percentile, the note gives both."""
    draws = np.random.default_rng(1).normal(100.0, 10.0, 1000)
    q_lo, q_hi = np.quantile(draws, [0.025, 0.975], method="inverted_cdf")
    lo, hi, note = bootstrap_interval(estimate, draws, "B_noise")
    assert lo <= estimate <= hi
    assert (lo, hi) == ((estimate, q_hi) if side == "lo" else (q_lo, estimate))
    assert "does not contain the estimate" in note and "B_noise" in note
    assert f"[{q_lo:.4g}, {q_hi:.4g}]" in note
    share = "0%" if side == "lo" else "100%"
    assert f"({share} of 1000 resamples lie below it)" in note


def test_failed_refits_do_not_count_and_too_few_give_no_interval_with_a_reason():
    draws = np.r_[np.full(30, np.nan), np.linspace(90, 110, 70)]
    lo, hi, note = bootstrap_interval(100.0, draws)
    assert np.isfinite([lo, hi]).all() and note == ""  # 70 of 100 > half
    lo, hi, note = bootstrap_interval(100.0, np.r_[np.full(60, np.nan), np.linspace(90, 110, 40)])
    assert np.isnan([lo, hi]).all()
    assert note == "no interval for the estimate: 40 of 100 bootstrap refits gave a value (at least 50 needed)"
    lo, hi, note = bootstrap_interval(100.0, np.linspace(90, 110, 10))
    assert np.isnan([lo, hi]).all() and "at least 20 needed" in note


def test_fits_at_a_search_bound_count_as_open_ends():
    draws = np.r_[np.linspace(80, 120, 90), np.full(10, np.inf)]
    lo, hi, note = bootstrap_interval(100.0, draws)
    assert hi == np.inf and lo == pytest.approx(81, abs=1.5) and note == ""


def test_no_estimate_or_no_draws_give_no_interval_and_no_note():
    assert bootstrap_interval(np.nan, [1.0, 2.0]) == (pytest.approx(np.nan, nan_ok=True),) * 2 + ("",)
    lo, hi, note = bootstrap_interval(5.0, [])
    assert np.isnan(lo) and np.isnan(hi) and note == ""


# ------------------------------------------------------------------------------------------
# The fits use it: an off-centre bootstrap on real (mis-specified) data
# ------------------------------------------------------------------------------------------
def _generated_two_axis_table(seed: int = 119, phase: str = "p2b") -> pd.DataFrame:
    """The joint S(B) table of a generated sweep (tests/sweeps/generated.py, seed 119: a rollout-axis
    phase fitted with prompt-axis phases, few runs, partly censored), of the kind on which the
    two-axis notebook crashed with "'yerr' must not contain negative values": a bootstrap
    percentile interval of the implied B_noise did not contain its own estimate."""
    from sweeps.form import snapshot_frames
    from sweeps.generated import generate_sweep

    from cbs_rlvr.measure.crossings import phase_runs, sb_eb_table

    sweep = generate_sweep(seed, habits=False)
    frames = snapshot_frames(sweep)
    params = sweep.params[phase]
    parts = []
    for p in params["two_axis_phases"]:
        if not (frames["runs"]["phase"] == p).any():
            continue
        runs, history, metric = phase_runs(frames["runs"], frames["history"], sweep.params[p])
        parts.append(sb_eb_table(runs, history, metric, params["thresholds"]).assign(phase=p))
    return pd.concat(parts, ignore_index=True)


@pytest.mark.slow
def test_two_axis_intervals_hold_their_estimates_and_the_plot_draws():
    sb = _generated_two_axis_table()
    res = cross_axis_fit(sb, sorted(sb["threshold"].unique()), n_bootstrap=40, seed=0)
    fit = res.table
    checked = 0
    for est in ("rho", "B0"):
        v, lo, hi = (fit[c].to_numpy(dtype=float) for c in (est, f"{est}_lo", f"{est}_hi"))
        both = np.isfinite(v) & ~np.isnan(lo) & ~np.isnan(hi)
        assert (lo[both] <= v[both]).all() and (v[both] <= hi[both]).all(), (est, fit)
        checked += int(both.sum())
    assert checked >= 4
    ok = fit[fit["status"] == "ok"]
    for t in ok["threshold"]:
        FigureCanvasAgg(plot_two_axis(sb, res, float(t))).draw()


@pytest.mark.parametrize("seed, phase", [(194, "q"), (308, "x_y_z")])
def test_phase_fit_intervals_hold_their_estimates_when_the_bootstrap_is_off_centre(seed, phase):
    """Generated sweeps (tests/sweeps/generated.py) whose bootstrap lay (almost) entirely on one side of the
    estimate at a target (few runs, one already above it at step 0): the interval holds its
    estimate, and where it had to be extended to it the row says so."""
    from sweeps.form import snapshot_frames
    from sweeps.generated import generate_sweep

    from cbs_rlvr.fit.phase import fit_phase
    from cbs_rlvr.measure.crossings import phase_runs

    sweep = generate_sweep(seed, habits=False)
    frames = snapshot_frames(sweep)
    params = sweep.params[phase]
    runs, history, metric = phase_runs(frames["runs"], frames["history"], params)
    fit = fit_phase(runs, history, metric, params["thresholds"], params["n_val"], n_bootstrap=40, seed=0).table
    for est in ("B_noise", "S_min"):
        v, lo, hi = (fit[c].to_numpy(dtype=float) for c in (est, f"{est}_lo", f"{est}_hi"))
        both = np.isfinite(v) & ~np.isnan(lo)
        assert (lo[both] <= v[both]).all() and (v[both] <= hi[both]).all()
    extended = fit[(fit["B_noise"] == fit["B_noise_lo"]) | (fit["B_noise"] == fit["B_noise_hi"])]
    assert extended["reason"].str.contains("the 95% bootstrap percentile interval of B_noise").all()
    usable = fit[fit["status"].isin(["ok", "extrapolated"])]
    no_ci = usable[usable["B_noise_lo"].isna()]
    assert no_ci["reason"].str.contains("no CI").all()


# ------------------------------------------------------------------------------------------
# Plots never fail on an interval
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lo, hi", [
    ([3.0, 5.0], [12.0, 9.0]),  # bound on the wrong side of the point
    ([np.nan, 0.0], [np.inf, np.nan]),  # missing, zero and open bounds
    ([-np.inf, 1.0], [np.nan, np.inf]),
])
def test_error_bars_never_raise(lo, hi):
    fig = Figure()
    ax = fig.subplots()
    _ci_errorbar(ax, [0.3, 0.5], [4.0, 10.0], lo, hi, color="C0")
    ax.set_yscale("log")
    FigureCanvasAgg(fig).draw()
    segments = ax.collections[0].get_segments()  # the error bars drawn: none upside down
    assert all(seg[0][1] <= seg[1][1] for seg in segments)


def test_b_noise_plot_draws_an_interval_that_excludes_its_point():
    fit = pd.DataFrame({"threshold": [0.3, 0.5], "B_noise": [100.0, 300.0],
                        "B_noise_lo": [120.0, 0.0], "B_noise_hi": [200.0, np.inf],
                        "status": ["ok", "extrapolated"]})
    FigureCanvasAgg(plot_b_noise_vs_target(fit)).draw()
