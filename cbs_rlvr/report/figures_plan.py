"""Plots of the plan (plan/): predicted time to target against B with its band, and the
trade-off of wall-clock time against GPU-hours and samples.

Same style and helpers as figures.py; each plot takes result tables and returns a Figure,
built without pyplot.
"""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.figure import Figure

from .style import (
    PALETTE,
    _batch_limits,
    _plain_label,
    draw_forecasts,
    finish_legend,
    forecasts_to_draw,
    set_log2_axis,
    set_log_axis,
    threshold_colors,
)


def _log2_axis_thinned(ax, lo: float, hi: float, max_labels: int = 6) -> None:
    """set_log2_axis, with every k-th power of two labelled so that at most max_labels fit in
    a narrow panel."""
    set_log2_axis(ax, "x", lo, hi)
    powers = 2.0 ** np.arange(math.ceil(math.log2(lo)), math.floor(math.log2(hi)) + 1)
    step = max(1, math.ceil(len(powers) / max_labels))
    ax.xaxis.set_major_locator(ticker.FixedLocator(powers[::step]))


def best_split_per_batch(predictions: pd.DataFrame, by: str = "predicted_hours") -> pd.DataFrame:
    """Per threshold and B, the candidate with the least `by` (with two axes several splits
    share a B; along one axis this is the predictions as they are)."""
    rows = predictions[predictions[by].notna()]
    if "basis" in rows.columns:  # a split no run has checked is no point of the curve
        rows = rows[rows["basis"] != "untested"]
    if rows.empty:
        return rows
    idx = rows.groupby(["threshold", "total_batch"])[by].idxmin()
    return rows.loc[idx].sort_values(["threshold", "total_batch"]).reset_index(drop=True)


def plot_plan(predictions: pd.DataFrame, measured: pd.DataFrame, plan: pd.DataFrame, title: str = "",
              forecast: pd.DataFrame | None = None) -> Figure:
    """One panel per target: the predicted training time to target against B (solid where measured
    or between the batch sizes that reached the target, dashed where extrapolated) with its 95% band, the measured runs (filled:
    reached the target; open triangles: stopped before it, a lower bound), and the
    recommendation for wall-clock time (star). With two axes the curve is the fastest split at
    each B. measured: wall_clock_table rows (threshold, total_batch, time_to_target_h,
    censored). forecast: plan.forecast.forecast_hours' rows while runs run, the running runs'
    crossings to come in hours (open circles, 90% interval)."""
    curves = best_split_per_batch(predictions)
    thresholds = sorted(curves["threshold"].unique()) if len(curves) else []
    n = max(len(thresholds), 1)
    ncol = min(3, n)
    nrow = math.ceil(n / ncol)
    fig = Figure(figsize=(3.6 * ncol + 0.4, 3.0 * nrow + 0.9))
    axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
    colors = threshold_colors(predictions["threshold"].unique()) if len(predictions) else {}
    lo, hi = _batch_limits(np.r_[curves["total_batch"].to_numpy(dtype=float) if len(curves) else [],
                                 measured["total_batch"].to_numpy(dtype=float) if len(measured) else []])
    wall_rec = plan[plan["objective"] == "wall_clock"].set_index("threshold") if len(plan) else pd.DataFrame()
    cast, drawn = forecasts_to_draw(forecast), []  # drawn: the run id of every forecast drawn
    for ax, t in zip(axes, thresholds, strict=False):
        c = colors[t]
        rows = curves[curves["threshold"] == t]
        B = rows["total_batch"].to_numpy(dtype=float)
        ax.fill_between(B, rows["predicted_hours_lo"], rows["predicted_hours_hi"], color=c, alpha=0.18, lw=0)
        inter = rows["basis"].isin(("measured", "on_axis", "cross_axis")).to_numpy()
        ax.plot(B, np.where(inter, rows["predicted_hours"], np.nan), color=c, lw=1.6)
        ax.plot(B, rows["predicted_hours"], color=c, lw=1.1, ls="--")  # under the solid: the extrapolated ends
        runs = measured[(measured["threshold"] == t) & measured["time_to_target_h"].notna()] if len(measured) else measured
        if len(runs):
            ok = runs[~runs["censored"].astype(bool)]
            cen = runs[runs["censored"].astype(bool)]
            ax.scatter(ok["total_batch"], ok["time_to_target_h"], color="0.15", s=18, zorder=4)
            ax.scatter(cen["total_batch"], cen["time_to_target_h"], marker="^", facecolors="none",
                       edgecolors="0.15", s=26, zorder=4)
        f = forecasts_to_draw(cast, t)
        if len(f):
            drawn += list(f["run_id"].to_numpy()[draw_forecasts(ax, f["total_batch"], f["hours"], f["hours_lo"],
                                                                 f["hours_hi"], "0.15")])
        if t in wall_rec.index:
            r = wall_rec.loc[t]
            ax.scatter([float(r["total_batch"])], [float(r["predicted_hours"])], marker="*", s=170,
                       color=c, edgecolors="black", linewidths=0.6, zorder=5)
        _log2_axis_thinned(ax, lo, hi, max_labels=6 if ncol == 3 else 8)
        set_log_axis(ax, "y")
        ax.set_title(f"acc ≥ {t:g}", fontsize=10)
    for ax in axes[len(thresholds):]:
        ax.set_axis_off()
    if not thresholds:
        axes[0].set_axis_on()
        axes[0].text(0.5, 0.5, "no target with a usable fit and step times", ha="center", va="center",
                     transform=axes[0].transAxes)
    for ax in axes[(nrow - 1) * ncol:]:
        ax.set_xlabel("batch size B")
    for ax in axes[::ncol]:
        ax.set_ylabel("hours to target")
    handles = [matplotlib.lines.Line2D([], [], color="0.3", lw=1.6),
               matplotlib.lines.Line2D([], [], color="0.3", lw=1.1, ls="--"),
               matplotlib.patches.Patch(color="0.3", alpha=0.18, lw=0),
               matplotlib.lines.Line2D([], [], ls="", marker="o", color="0.15", ms=4.5),
               matplotlib.lines.Line2D([], [], ls="", marker="^", mfc="none", mec="0.15", ms=5.5),
               matplotlib.lines.Line2D([], [], ls="", marker="*", mfc="0.6", mec="black", ms=11)]
    labels = ["predicted (run, or between runs that reached it)", "predicted (extrapolated)", "95% band", "measured run",
              "run stopped before the target (lower bound)", "fastest: the recommendation"]
    return finish_legend(fig, handles, labels, drawn, title)


def pareto_front(x, y) -> np.ndarray:
    """Indices of the points no other point beats on both x and y (smaller is better), by x."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    order = ok[np.lexsort((y[ok], x[ok]))]
    front, best = [], np.inf
    for i in order:
        if y[i] < best:
            front.append(i)
            best = y[i]
    return np.array(front, dtype=int)


def plot_plan_frontier(predictions: pd.DataFrame, plan: pd.DataFrame, threshold: float, title: str = "") -> Figure:
    """At one target, every candidate's predicted wall-clock hours against its GPU-hours (left)
    and its samples (right), coloured by B; the candidates no other beats on both axes joined
    (the frontier), the recommendations marked. With one GPU count GPU-hours are hours times
    that count: the frontier is then a single point, the fastest batch is also the cheapest."""
    rows = predictions[(predictions["threshold"] == threshold) & predictions["predicted_hours"].notna()]
    with_gpus = bool(np.isfinite(rows["predicted_gpu_hours"].to_numpy(dtype=float)).any())
    if with_gpus:
        fig = Figure(figsize=(10.5, 4.5))
        ax_g, ax_s = fig.subplots(1, 2)
    else:  # no GPU counts: no empty GPU-hours panel, the samples panel alone
        fig = Figure(figsize=(6.2, 4.5))
        ax_s, ax_g = fig.subplots(1, 1), None
    rec = plan[plan["threshold"] == threshold].set_index("objective") if len(plan) else pd.DataFrame()
    cmap = matplotlib.colormaps["viridis"]
    B = rows["total_batch"].to_numpy(dtype=float)
    lb = np.log2(B) if len(B) else np.array([0.0])
    norm = matplotlib.colors.Normalize(vmin=lb.min() - 0.5, vmax=lb.max() + 0.5)
    marks = {"wall_clock": ("*", "fastest"), "gpu_hours": ("D", "fewest GPU-hours"),
             "samples": ("s", "fewest samples (within 10%), fastest of those")}
    panels = [(ax_g, "predicted_gpu_hours", "GPU-hours to target")] if with_gpus else []
    for ax, col, label in panels + [(ax_s, "predicted_samples", "samples to target")]:
        x = rows[col].to_numpy(dtype=float)
        y = rows["predicted_hours"].to_numpy(dtype=float)
        if not np.isfinite(x).any():
            ax.text(0.5, 0.5, "no GPU count in the run configs" if col == "predicted_gpu_hours"
                    else "no prediction", ha="center", va="center", transform=ax.transAxes)
            ax.set_xlabel(label)
            continue
        sc = ax.scatter(x, y, c=lb, cmap=cmap, norm=norm, s=22, zorder=3)
        front = pareto_front(x, y)
        ax.plot(x[front], y[front], color="0.3", lw=1.0, zorder=2, label="frontier")
        for obj, (marker, text) in marks.items():
            if obj in rec.index and np.isfinite(float(rec.loc[obj, col])):
                ax.scatter([float(rec.loc[obj, col])], [float(rec.loc[obj, "predicted_hours"])], marker=marker,
                           s=150 if marker == "*" else 60, facecolors="none", edgecolors=PALETTE[3],
                           linewidths=1.4, zorder=4, label=text)
        set_log_axis(ax, "x")
        set_log_axis(ax, "y")
        ax.set_xlabel(label)
        ax.set_ylabel("wall-clock hours to target")
        gpus = rows["n_gpus"].dropna().unique()
        if col == "predicted_gpu_hours" and len(gpus) == 1:
            ax.text(0.98, 0.03, f"{int(gpus[0])} GPUs throughout: GPU-hours = {int(gpus[0])} × hours",
                    ha="right", va="bottom", transform=ax.transAxes, fontsize=8, color="0.3")
        ax.legend(loc="best", fontsize=7.5)
    if len(rows):
        cb = fig.colorbar(sc, ax=[a for a in (ax_g, ax_s) if a is not None], shrink=0.9, pad=0.01)
        ticks = np.arange(math.ceil(lb.min()), math.floor(lb.max()) + 1)
        step = max(1, math.ceil(len(ticks) / 8))
        cb.set_ticks(ticks[::step])
        cb.set_ticklabels([_plain_label(2.0**k, binary=True) for k in ticks[::step]])
        cb.set_label("batch size B")
    if ax_g is not None:
        ax_g.set_title(f"acc ≥ {threshold:g}: time against GPU-hours", fontsize=10)
    ax_s.set_title(f"acc ≥ {threshold:g}: time against samples", fontsize=10)
    if title:
        fig.suptitle(title)
    return fig
