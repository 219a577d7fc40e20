"""The fit's figures: S(B) and E(B) with the fitted curves, B_noise against the target, the
Pareto frontier of steps against samples, the training curves' table and the cross-phase
B_noise. Each takes result tables and returns a matplotlib Figure; none saves or shows. Every
plot is total: empty or partial tables give a figure that says what is missing, and a title
states only what the data show.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..words.claims import b_noise_trend
from ..words.numbers import interval
from ..words.sentences import trend_title
from .style import (
    PALETTE,
    _accuracy_xlim,
    _batch_limits,
    _ci_errorbar,
    _fit_alpha,
    _fit_curve,
    _floats,
    _frame,
    _no_data,
    _positive,
    _usable_fits,
    draw_forecasts,
    fan_out,
    finish_legend,
    forecasts_to_draw,
    label_axes,
    set_log2_axis,
    set_log_axis,
    threshold_colors,
    unbounded_as_open,
)


def plot_sb_eb(sb_eb: pd.DataFrame, cbs_fit: pd.DataFrame, title: str = "",
               batch_col: str = "total_batch", forecast: pd.DataFrame | None = None) -> Figure:
    """S(B) and E(B) per threshold: measured points, censored runs as lower bounds (open
    triangles), the chosen fit (McCandlish, or S_min (1 + (B_noise/B)^alpha) where the data
    reject alpha = 1) with its 95% band over B_noise, and B_noise marked (diamond: there
    S = 2 S_min). forecast: forecast.csv while runs run; the crossings its running runs are
    forecast to make (of the runs in sb_eb) drawn as open circles with their 90% interval."""
    fig = Figure(figsize=(10.5, 4.6))
    ax_s, ax_e = fig.subplots(1, 2)
    sb = _frame(sb_eb, [batch_col, "threshold", "S_B", "E_B", "censored", "run_id"])
    cast = forecasts_to_draw(forecast if batch_col == "total_batch" else None)
    cast = cast[cast["run_id"].astype(str).isin(sb["run_id"].astype(str))]
    drawn = []  # the run id of every forecast drawn
    fits = unbounded_as_open(_usable_fits(cbs_fit)).drop_duplicates("threshold").set_index("threshold")
    colors = threshold_colors(sb["threshold"].dropna().unique())
    lo, hi = _batch_limits(sb[batch_col])
    grid = np.geomspace(lo, hi, 200)
    for k, (t, rows) in enumerate(sb.groupby("threshold")):
        c = colors[t]
        cen = rows["censored"].fillna(False).astype(bool)
        for ax, col in ((ax_s, "S_B"), (ax_e, "E_B")):
            ax.scatter(_floats(rows.loc[~cen, batch_col]), _floats(rows.loc[~cen, col]), color=c, s=22, zorder=3)
            ax.scatter(fan_out(_floats(rows.loc[cen, batch_col]), k, len(colors)), _floats(rows.loc[cen, col]), marker="^",
                       facecolors="none", edgecolors=c, s=30, zorder=3)
        f = cast[np.isclose(_floats(cast["threshold"]), float(t))]
        xf = _floats(f["n_prompts"]) * _floats(f["n_rollouts"])
        steps = [_floats(f[col]) for col in ("step", "step_lo", "step_hi")]
        drawn += list(f["run_id"].to_numpy()[draw_forecasts(ax_s, fan_out(xf, k, len(colors)), *steps, c)])
        draw_forecasts(ax_e, fan_out(xf, k, len(colors)), *(v * xf for v in steps), c)  # samples: steps x B
        label = f"acc ≥ {t:g}"
        if t in fits.index:
            f = fits.loc[t]
            al = _fit_alpha(f)
            s_fit = _fit_curve(grid, f["S_min"], f["B_noise"], al)
            ax_s.plot(grid, s_fit, color=c, lw=1.4)
            ax_e.plot(grid, s_fit * grid, color=c, lw=1.4)
            if np.isfinite(f["B_noise_lo"]) and f["B_noise_lo"] > 0 and np.isfinite(f["B_noise_hi"]):
                # Band: the curve through the fitted S_min as B_noise spans its 95% CI (none where the
                # interval has no bound from these runs)
                s_lo = _fit_curve(grid, f["S_min"], f["B_noise_lo"], al)
                s_hi = _fit_curve(grid, f["S_min"], f["B_noise_hi"], al)
                ax_s.fill_between(grid, s_lo, s_hi, color=c, alpha=0.15, lw=0)
                ax_e.fill_between(grid, s_lo * grid, s_hi * grid, color=c, alpha=0.15, lw=0)
            ax_s.scatter([f["B_noise"]], [2 * f["S_min"]], marker="D", color=c, s=36,
                         edgecolors="black", linewidths=0.6, zorder=4)
            ax_e.scatter([f["B_noise"]], [2 * f["S_min"] * f["B_noise"]], marker="D", color=c,
                         s=36, edgecolors="black", linewidths=0.6, zorder=4)
            label += f": B_noise = {interval(f['B_noise'], f['B_noise_lo'], f['B_noise_hi'], decimals=0)}"
            if al != 1.0:
                label += f", S ∝ B^-{al:.2f} at small B"
        ax_s.plot([], [], color=c, marker="o", label=label)
    has_data = _positive(sb["S_B"])
    for ax in (ax_s, ax_e):
        set_log2_axis(ax, "x", lo, hi)
        if has_data:
            set_log_axis(ax, "y")
        else:
            _no_data(ax, "no run has a measured S(B)")
        ax.set_xlabel("batch size B = prompts × rollouts (samples per step)")
    ax_s.set_ylabel("rollout steps to target S(B)")
    ax_e.set_ylabel("samples to target E(B) = B·S(B)")
    ax_s.set_title("steps to target")
    ax_e.set_title("samples to target")
    handles, labels = ax_s.get_legend_handles_labels()
    handles += [matplotlib.lines.Line2D([], [], ls="", marker="^", mfc="none", mec="0.3"),
                matplotlib.lines.Line2D([], [], ls="", marker="D", mfc="0.6", mec="black")]
    labels += ["never reached (lower bound)", "B = B_noise"]
    return finish_legend(fig, handles, labels, drawn, title)


def with_forecasts(data: pd.DataFrame, forecast: pd.DataFrame | None) -> pd.DataFrame:
    """A figure's data with the forecasts it draws (forecasts_to_draw's rows, `kind` 'forecast',
    the data's rows 'measured'); the data as they are where it draws none, so a finished sweep's
    figure data do not change."""
    cast = forecasts_to_draw(forecast)
    if not len(cast):
        return data
    return pd.concat([data.assign(kind="measured"), cast.assign(kind="forecast")], ignore_index=True)


def plot_b_noise_vs_target(cbs_fit: pd.DataFrame, compare: pd.DataFrame | None = None,
                           compare_label: str = "seed method", title: str = "", trend: dict | None = None) -> Figure:
    """B_noise against the target accuracy, with 95% CIs (an end beyond 100 times the largest batch
    that reached the target drawn as an arrow: no bound from these runs); optionally a second method
    beside it. The default title is the trend of the pooled fit (`trend`, PhaseFit.trend()) where
    given, else the trend the per-target fits show (`b_noise_trend`); never an assumed one."""
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    ok = unbounded_as_open(_usable_fits(cbs_fit))
    _ci_errorbar(ax, ok["threshold"], ok["B_noise"], ok["B_noise_lo"], ok["B_noise_hi"],
                 marker="o", color=PALETTE[0], capsize=3, label="this project (95% CI)")
    ext = ok[ok["status"] == "extrapolated"]
    if len(ext):
        ax.scatter(_floats(ext["threshold"]), _floats(ext["B_noise"]), marker="o", facecolors="white",
                   edgecolors=PALETTE[0], zorder=4, label="outside the sampled B (extrapolated)")
    cmp_ok = _frame(compare, ["threshold", "B_noise"])
    cmp_ok = cmp_ok[np.isfinite(_floats(cmp_ok["B_noise"])) & (_floats(cmp_ok["B_noise"]) > 0)]
    if len(cmp_ok):
        ax.plot(_floats(cmp_ok["threshold"]) + 0.004, _floats(cmp_ok["B_noise"]), marker="s",
                ls="--", color=PALETTE[3], label=compare_label)
    if len(ok) or len(cmp_ok):
        set_log_axis(ax, "y")  # B_noise: a quantity, decimal ticks (1K, 10K, 1M)
        vals = np.concatenate([_floats(ok["B_noise_lo"]), _floats(ok["B_noise_hi"]), _floats(ok["B_noise"]),
                               _floats(cmp_ok["B_noise"])])
        est = _floats(ok["B_noise"])
        est = est[np.isfinite(est) & (est > 0)]
        lv = np.log(vals[np.isfinite(vals) & (vals > 0)])
        if len(est):  # interval ends far beyond the estimates (unidentified) do not set the scale
            lv = np.clip(lv, np.log(est.min()) - 7.0, np.log(est.max()) + 7.0)
        if len(lv):  # at least an octave of room: a narrow range would get two tick labels
            mid, half = (lv.min() + lv.max()) / 2, max((lv.max() - lv.min()) / 2, np.log(2.0)) + np.log(1.1)
            ax.set_ylim(np.exp(mid - half), np.exp(mid + half))
        fig.legend(loc="outside lower center", fontsize=8, ncol=3)  # never over the points
        _accuracy_xlim(ax, np.concatenate([_floats(ok["threshold"]), _floats(cmp_ok["threshold"])]))
    else:
        _no_data(ax, "no target has a usable fit (see the status of each target)")
    return label_axes(ax, "target validation accuracy", "B_noise (samples per step)",
                      title or (trend_title(trend) if trend else b_noise_trend(cbs_fit)["claim"]))


def plot_pareto(pareto: pd.DataFrame, title: str = "") -> Figure:
    """(S/S_min - 1) against (E/E_min - 1) with E_min = S_min B_noise: the McCandlish model puts
    every run on x·y = 1; where the data chose the general form, its curve is drawn dotted."""
    fig = Figure(figsize=(5.6, 4.6))
    ax = fig.subplots()
    xcol, ycol = "E_excess", "S_excess"
    pareto = _frame(pareto, ["threshold", xcol, ycol, "censored", "alpha"])
    x, y = _floats(pareto[xcol]), _floats(pareto[ycol])
    data = pareto[(x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)]
    colors = threshold_colors(data["threshold"].dropna().unique())
    for t, rows in data.groupby("threshold"):
        cen = rows["censored"].fillna(False).astype(bool)
        ax.scatter(_floats(rows.loc[~cen, xcol]), _floats(rows.loc[~cen, ycol]), color=colors[t], s=22,
                   label=f"acc ≥ {t:g}")
        ax.scatter(_floats(rows.loc[cen, xcol]), _floats(rows.loc[cen, ycol]), marker="^",
                   facecolors="none", edgecolors=colors[t], s=26)
    if len(data):
        vals = np.concatenate([_floats(data[xcol]), _floats(data[ycol])])
        lo, hi = min(vals.min(), 0.5) / 2, max(vals.max(), 2) * 2
        x = np.geomspace(lo, hi, 100)
        ax.plot(x, 1 / x, color="black", lw=1, ls="--", label="McCandlish: (S/S_min−1)(E/E_min−1) = 1")
        u = np.geomspace(lo, hi, 200)  # the general form here: y = u, x = u^(-1/alpha) (1 + u) - 1
        for t, al in pareto.dropna(subset=["alpha"]).groupby("threshold")["alpha"].first().items():
            if t in colors and np.isfinite(al) and al != 1.0:
                xm = u ** (-1.0 / al) * (1.0 + u) - 1.0
                ax.plot(xm[xm > 0], u[xm > 0], color=colors[t], lw=1, ls=":",
                        label=f"acc ≥ {t:g}: the fitted form, alpha = {al:.2f}")
        ax.set_xlim(lo, hi), ax.set_ylim(lo, hi)
        for which in "xy":
            set_log_axis(ax, which)
        ax.legend(loc="upper right", fontsize=8)
    else:
        _no_data(ax, "no run with both excesses positive at a target with a usable fit")
    return label_axes(ax, "E/E_min − 1 (extra samples)", "S/S_min − 1 (extra steps)",
               title or "steps-samples trade-off")


def training_curves_table(runs: pd.DataFrame, history: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Long table of the validation curve of every run: accuracy against steps and samples.
    (Empty, with the same columns, when the metric was not logged.)"""
    cols = ["run_id", "name", "replicate", "n_prompts", "n_rollouts", "total_batch"]
    out_cols = ["run_id", "step", "accuracy", *cols[1:], "samples"]
    history = _frame(history, ["run_id", "step", metric])
    acc = _floats(history[metric])
    h = history.loc[np.isfinite(acc), ["run_id", "step", metric]]
    out = h.merge(_frame(runs, cols)[cols], on="run_id", how="inner").rename(columns={metric: "accuracy"})
    out["samples"] = _floats(out["step"]) * _floats(out["total_batch"])
    out = out.reindex(columns=out_cols)
    return out.sort_values(["total_batch", "n_prompts", "replicate", "step"]).reset_index(drop=True)


def plot_cross_phase(summary_long: pd.DataFrame, title: str = "") -> Figure:
    """The headline figure: B_noise against the target accuracy, one line per phase, 95% CIs."""
    fig = Figure(figsize=(7.4, 4.4))
    ax = fig.subplots()
    summary_long = _frame(summary_long, ["phase", "axis", "task"])
    ok = unbounded_as_open(_usable_fits(summary_long))
    markers = "osD^vP*X"
    for i, phase in enumerate(p for p in pd.unique(summary_long["phase"]) if (ok["phase"] == p).any()):
        rows = ok[ok["phase"] == phase]
        _ci_errorbar(ax, rows["threshold"], rows["B_noise"], rows["B_noise_lo"], rows["B_noise_hi"],
                     marker=markers[i % len(markers)], color=PALETTE[i % (len(PALETTE) - 1)],
                     label=f"{phase}: {rows['axis'].iloc[0]} axis, {rows['task'].iloc[0]}")
    if len(ok):
        set_log_axis(ax, "y")  # B_noise: a quantity, decimal ticks (1K, 10K, 1M)
        # long labels (a task named by its full metric) beside the axes would squeeze them until the title is cut
        long = max(len(t) for t in ax.get_legend_handles_labels()[1]) > 40
        fig.legend(loc="outside lower center" if long else "outside right center", fontsize=8)
    else:
        _no_data(ax, "no phase has a target with a usable fit")
    return label_axes(ax, "target validation accuracy", "B_noise (samples per step)",
               title or "B_noise (the batch where S = 2 S_min) by phase and target")


