"""Plots: every log axis shows at least two tick labels on narrow and wide ranges, every plot
draws on empty, partial and degenerate tables, and titles state only what the data show."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sweep_analysis import tick_labels

import cbs_helpers as ch
from cbs_rlvr.report.style import (
    PlainLogFormatter,
    _plain_label,
    readable_log_ticks,
    set_log2_axis,
    set_log_axis,
)

RANGES = [(300, 340), (181, 362), (1000, 1001), (0.3, 0.4), (2e-4, 3e-4), (9, 600), (1, 1e9),
          (64, 4096), (5000, 7000), (100, 100.0001), (0.02, 5e6)]


def _drawn(fig):
    FigureCanvasAgg(fig).draw()
    return fig


def _log_axes_labels(fig):
    """(axis description, labels) of every log-scaled axis of a drawn figure."""
    out = []
    for ax in fig.axes:
        for which in ("x", "y"):
            axis = ax.xaxis if which == "x" else ax.yaxis
            if axis.get_scale() == "log":
                out.append((f"{ax.get_title()!r} {which}", tick_labels(ax, which)))
    return out


@pytest.mark.parametrize("lo, hi", RANGES)
@pytest.mark.parametrize("setter", [set_log_axis, set_log2_axis], ids=["log10", "log2"])
def test_a_log_axis_shows_at_least_two_distinct_labels(lo, hi, setter):
    fig = Figure()
    ax = fig.subplots()
    ax.plot([1, 2], [lo, hi])
    setter(ax, "y")
    ax.set_ylim(lo, hi)
    _drawn(fig)
    labels = tick_labels(ax, "y")
    assert len(labels) >= 2 and len(set(labels)) == len(labels), (lo, hi, labels)


def test_tick_values_and_labels():
    assert readable_log_ticks(64, 4096, 2).tolist() == [64, 128, 256, 512, 1024, 2048, 4096]
    assert readable_log_ticks(200, 540, 2).tolist() == [256, 384, 512]
    assert readable_log_ticks(9, 600, 10).tolist() == [10, 20, 50, 100, 200, 500]
    assert len(readable_log_ticks(1, 1e12, 10)) <= 8
    # within one decade, at most four labels: '500K600K700K800K' ran together in the plan figure
    assert readable_log_ticks(4.5e5, 9.5e5, 10).tolist() == [5e5, 7e5, 9e5]
    assert [_plain_label(x) for x in (0.05, 3, 96, 4096, 15000, 1.2e6, 2e9)] == \
        ["0.05", "3", "96", "4096", "15K", "1.2M", "2G"]
    assert _plain_label(16384, binary=True) == "16K" and _plain_label(16384) == "16.4K"
    fmt = PlainLogFormatter()
    fmt.set_locs([1000, 1000.25, 1000.5])
    assert [fmt(x) for x in (1000, 1000.25, 1000.5)] == ["1000", "1000.2", "1000.5"]


# ------------------------------------------------------------------------------------------
# Every plot on degenerate input
# ------------------------------------------------------------------------------------------
EMPTY = pd.DataFrame()
ONE_SB = pd.DataFrame({"run_id": ["a"], "run_name": ["a"], "phase": ["p1"], "n_prompts": [8],
                       "n_rollouts": [4], "total_batch": [32], "threshold": [0.5], "S_B": [40.0],
                       "E_B": [1280.0], "censored": [True]})
FIT_NONE = pd.DataFrame({"threshold": [0.5], "B_noise": [np.nan], "B_noise_lo": [np.nan],
                         "B_noise_hi": [np.nan], "S_min": [np.nan], "status": ["insufficient"]})
FIT_ONE = pd.DataFrame({"threshold": [0.5], "B_noise": [300.0], "B_noise_lo": [290.0],
                        "B_noise_hi": [310.0], "S_min": [20.0], "status": ["ok"]})


def _plots(sb, fit, curves, wall, iso, smoothed, comparison, two_axis, summary):
    return {
        "sb_eb": lambda: ch.plot_sb_eb(sb, fit),
        "b_noise_vs_target": lambda: ch.plot_b_noise_vs_target(fit, compare=fit),
        "pareto": lambda: ch.plot_pareto(ch.pareto_table(sb, fit)),
        "training_curves": lambda: ch.plot_training_curves(curves, [0.5]),
        "two_axis": lambda: ch.plot_two_axis(sb, two_axis, 0.5),
        "iso_batch": lambda: ch.plot_iso_batch(iso),
        "grad_noise": lambda: ch.plot_grad_noise(smoothed, fit),
        "noise_scale_vs_fit": lambda: ch.plot_noise_scale_vs_fit(comparison, None),
        "wall_clock": lambda: ch.plot_wall_clock(wall),
        "cross_phase": lambda: ch.plot_cross_phase(summary),
    }


CASES = {
    "empty": dict(sb=EMPTY, fit=EMPTY, curves=EMPTY, wall=EMPTY, iso=EMPTY, smoothed=EMPTY,
                  comparison=EMPTY, two_axis={"fit": EMPTY, "axes": EMPTY}, summary=EMPTY),
    "one run, no fit": dict(
        sb=ONE_SB, fit=FIT_NONE,
        curves=pd.DataFrame({"run_id": ["a", "a"], "step": [0, 10], "accuracy": [0.1, 0.3],
                             "total_batch": [32, 32], "n_prompts": [8, 8], "n_rollouts": [4, 4],
                             "samples": [0, 320]}),
        wall=ONE_SB.assign(time_to_target_h=np.nan, mean_step_time_s=np.nan),
        iso=ch.iso_batch_table(ONE_SB), smoothed=EMPTY,
        comparison=ch.compare_b_simple(EMPTY, FIT_NONE),
        two_axis={"fit": EMPTY, "axes": EMPTY},
        summary=ch.cbs_summary_long({"p1": FIT_NONE}, {"p1": {"axis": "prompts", "metric": "m"}})),
    "one usable fit, open interval": dict(
        sb=ONE_SB, fit=FIT_ONE.assign(B_noise_hi=np.inf, B_noise_lo=0.0),
        curves=pd.DataFrame({"run_id": ["a"], "step": [0], "accuracy": [0.1], "total_batch": [32],
                             "n_prompts": [8], "n_rollouts": [4], "samples": [0]}),
        wall=ONE_SB.assign(time_to_target_h=0.5, mean_step_time_s=20.0),
        iso=ch.iso_batch_table(ONE_SB),
        smoothed=pd.DataFrame({"run_id": ["a", "a"], "total_batch": [32, 32], "step": [1, 2],
                               "B_simple_ema": [300.0, 310.0]}),
        comparison=ch.compare_b_simple(pd.DataFrame({"accuracy": [0.5], "B_simple": [305.0],
                                                     "B_simple_lo": [320.0], "B_simple_hi": [400.0],
                                                     "status": ["ok"], "reason": [""]}), FIT_ONE),
        two_axis={"fit": EMPTY, "axes": EMPTY},
        summary=ch.cbs_summary_long({"p1": FIT_ONE}, {"p1": {"axis": "prompts", "metric": "m"}})),
    "one value everywhere": dict(
        sb=pd.concat([ONE_SB, ONE_SB.assign(threshold=0.6)]), fit=FIT_NONE,
        curves=pd.DataFrame({"run_id": ["a", "a"], "step": [5, 10], "accuracy": [0.4, 0.4],
                             "total_batch": [32, 32], "n_prompts": [8, 8], "n_rollouts": [4, 4],
                             "samples": [160, 320]}),
        wall=pd.concat([ONE_SB, ONE_SB.assign(threshold=0.6)]).assign(time_to_target_h=0.5,
                                                                      mean_step_time_s=20.0),
        iso=ch.iso_batch_table(pd.concat([ONE_SB, ONE_SB.assign(threshold=0.6)])),
        smoothed=pd.DataFrame({"run_id": ["a"], "total_batch": [32], "step": [1],
                               "B_simple_ema": [300.0]}),
        comparison=ch.compare_b_simple(EMPTY, FIT_ONE), two_axis={"fit": EMPTY, "axes": EMPTY},
        summary=ch.cbs_summary_long({"p1": FIT_ONE}, {"p1": {"axis": "prompts", "metric": "m"}})),
}


@pytest.mark.filterwarnings("error")  # a warning would print into the report
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("plot", list(_plots(**CASES["empty"])))
def test_every_plot_draws_on_degenerate_tables(case, plot):
    fig = _drawn(_plots(**CASES[case])[plot]())
    for where, labels in _log_axes_labels(fig):
        assert len(set(labels)) >= 2, (plot, case, where, labels)


def test_an_empty_panel_says_why():
    fig = _drawn(ch.plot_b_noise_vs_target(FIT_NONE))
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["no target has a usable fit (see the status of each target)"]
    assert fig.axes[0].get_title() == ("too few usable points to tell how B_noise changes with "
                                       "the target accuracy")


def test_the_step_time_title_is_the_trend_the_runs_show():
    wall = pd.DataFrame({"run_id": ["a", "b", "c"], "threshold": 0.5, "total_batch": [64, 128, 256],
                         "censored": False, "time_to_target_h": [1.0, 0.8, 0.9],
                         "mean_step_time_s": [30.0, 20.0, 25.0]})
    title = ch.plot_wall_clock(wall).axes[1].get_title()
    assert title == "step time does not change monotonically with B"
    wall["mean_step_time_s"] = [20.0, 25.0, 30.0]
    assert ch.plot_wall_clock(wall).axes[1].get_title() == "step time grows with B"


def test_training_curves_of_hundreds_of_batch_sizes_get_a_colour_bar_not_a_legend():
    """A legend of 40 batch sizes would run off the figure: a colour bar ticked with batch
    sizes replaces it; a sweep of a few batch sizes keeps its legend."""
    def curves(n_batches):
        rows = [{"run_id": f"r{i}", "step": s, "accuracy": 0.1 + 0.001 * s * (i + 1) / n_batches,
                 "total_batch": 8 * (i + 1), "n_prompts": i + 1, "n_rollouts": 8, "samples": s * 8 * (i + 1)}
                for i in range(n_batches) for s in range(0, 100, 10)]
        return pd.DataFrame(rows)

    many = ch.plot_training_curves(curves(40), [0.3])
    _drawn(many)
    assert not many.legends and len(many.axes) == 3
    bar = many.axes[2]
    assert "40 batch sizes" in bar.get_ylabel()
    assert [t.get_text() for t in bar.get_yticklabels()][0] == "8"
    few = ch.plot_training_curves(curves(5), [0.3])
    _drawn(few)
    assert len(few.axes) == 2 and len(few.legends[0].get_texts()) == 5
