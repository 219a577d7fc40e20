"""Plots of verl's habits and of whole sweeps: the training curves (learning-rate sweeps faded,
hundreds of batch sizes on a colour bar), the learning-rate envelope, the step-time model,
generated samples.

Same style and helpers as figures.py (setup_style, save_figure, the log axes); each plot takes
result tables and returns a Figure, built without pyplot.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..measure.envelope import envelope_winners
from ..words.claims import trend_claim
from .style import (
    PALETTE,
    _batch_limits,
    _float_columns,
    _floats,
    _frame,
    _no_data,
    _plain_label,
    _positive,
    batch_colors,
    set_log2_axis,
    set_log_axis,
    threshold_colors,
)

_LEGEND_MAX = 16  # batch sizes named in a legend; beyond, a colour bar


def _pick_thresholds(values, at_most: int = 3) -> list[float]:
    """The easiest, a middle and the hardest target (all when there are few)."""
    values = sorted(set(float(v) for v in values))
    if len(values) <= at_most:
        return values
    return [values[0], values[len(values) // 2], values[-1]]


def plot_envelope(configs: pd.DataFrame, cbs_fit: pd.DataFrame | None = None, thresholds=None,
                  title: str = "") -> Figure:
    """Left: S(B) of every configuration (from envelope.configuration_table) at up to three
    targets; the winner at each batch size joined by a line (filled: measured; open triangle:
    never reached, a lower bound, joined dotted), the other configurations faded (open markers, triangles
    likewise), the McCandlish fit of the envelope dashed.
    Right: the learning rate of every configuration against B (filled: won most of the targets
    reached at that B; faded: tried; a B where nothing reached a target has no winner)."""
    fig = Figure(figsize=(10.5, 4.4))
    ax_s, ax_lr = fig.subplots(1, 2)
    thresholds = _pick_thresholds(configs["threshold"]) if thresholds is None else list(thresholds)
    colors = threshold_colors(configs["threshold"].unique())
    fits = cbs_fit.set_index("threshold") if cbs_fit is not None and len(cbs_fit) else None
    lo, hi = _batch_limits(configs["total_batch"])
    for t in thresholds:
        rows = configs[configs["threshold"] == t]
        c = colors[t]
        won = rows[rows["chosen"]].sort_values("total_batch")
        lost = rows[~rows["chosen"]]
        censored = won["censored"].fillna(False).astype(bool)
        # solid between measured winners only; a lower bound is joined dotted (it is not a value)
        ax_s.plot(won["total_batch"], won["S_B"], color=c, lw=1.0, ls=":")
        ax_s.plot(won["total_batch"], won["S_B"].where(~censored), color=c, lw=1.2, label=f"acc ≥ {t:g}: best rate")
        ax_s.scatter(won.loc[~censored, "total_batch"], won.loc[~censored, "S_B"], marker="o",
                     color=c, s=30, zorder=4)
        ax_s.scatter(won.loc[censored, "total_batch"], won.loc[censored, "S_B"], marker="^",
                     facecolors="white", edgecolors=c, s=44, zorder=4)
        lost_cens = lost["censored"].fillna(False).astype(bool)
        for mask, marker in ((~lost_cens, "o"), (lost_cens, "^")):
            ax_s.scatter(lost.loc[mask, "total_batch"], lost.loc[mask, "S_B"], marker=marker,
                         facecolors="none", edgecolors=c, alpha=0.45, s=34, zorder=3)
        if fits is not None and t in fits.index and fits.loc[t, "status"] in ("ok", "extrapolated"):
            grid = np.geomspace(lo, hi, 200)
            f = fits.loc[t]
            al = float(f["alpha"]) if f.get("model", "") == "general" and np.isfinite(f.get("alpha", np.nan)) else 1.0
            ax_s.plot(grid, f["S_min"] * (1 + (f["B_noise"] / grid) ** al), color=c, ls="--", lw=1.0, alpha=0.8)
    set_log2_axis(ax_s, "x", lo, hi)
    set_log_axis(ax_s, "y")
    ax_s.set_xlabel("batch size B = prompts × rollouts")
    ax_s.set_ylabel("rollout steps to target S(B)")
    ax_s.set_title("the envelope: best configuration at each B")
    if "lr" in configs.columns and configs["lr"].notna().any():
        # the winners the report's text names (a B where nothing reached a target has none)
        best = envelope_winners(configs).dropna(subset=["won_most"]).sort_values("total_batch")
        per = configs.drop_duplicates(["total_batch", "configuration"])
        won = pd.MultiIndex.from_frame(per[["total_batch", "configuration"]]).isin(
            list(zip(best["total_batch"], best["won_most"], strict=True)))
        tried = per[~won]
        ax_lr.scatter(tried["total_batch"], tried["lr"], facecolors="none", edgecolors=PALETTE[0],
                      alpha=0.45, s=34, label="tried")
        ax_lr.plot(best["total_batch"], best["lr_won"], color=PALETTE[0], marker="o",
                   label="won (most targets reached)")
        set_log2_axis(ax_lr, "x", lo, hi)
        set_log_axis(ax_lr, "y")
        ax_lr.legend(loc="best")
    else:
        ax_lr.text(0.5, 0.5, "no learning rate in the run configs", ha="center", va="center",
                   transform=ax_lr.transAxes)
    ax_lr.set_xlabel("batch size B = prompts × rollouts")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_title("which learning rate won at each B")
    handles, labels = ax_s.get_legend_handles_labels()
    handles += [matplotlib.lines.Line2D([], [], ls="", marker="^", mfc="white", mec="0.3"),
                matplotlib.lines.Line2D([], [], ls="", marker="o", mfc="none", mec="0.3", alpha=0.5),
                matplotlib.lines.Line2D([], [], ls="--", color="0.3")]
    labels += ["never reached (lower bound)", "other configurations (faded)",
               "McCandlish fit of the envelope"]
    fig.legend(handles, labels, loc="outside lower center", ncol=3)
    if title:
        fig.suptitle(title)
    return fig


def plot_step_time(step_times: pd.DataFrame, model: dict, title: str = "") -> Figure:
    """Mean training step time of each run against B (one colour per n_rollouts when it
    varies) with the fitted step-time model (wallclock.step_time_model) and its R²."""
    from ..measure.wallclock import predict_step_time

    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    lo, hi = _batch_limits(step_times["total_batch"])
    grid = np.geomspace(lo, hi, 200)
    rollouts = sorted(step_times["n_rollouts"].dropna().unique())
    for i, n_r in enumerate(rollouts):
        rows = step_times[step_times["n_rollouts"] == n_r]
        color = PALETTE[i % (len(PALETTE) - 1)]
        label = f"n_rollouts = {int(n_r)}" if len(rollouts) > 1 else "runs"
        ax.scatter(rows["total_batch"], rows["step_time_s"], color=color, s=26, label=label, zorder=3)
        if model.get("status") == "ok":
            pred, _ = predict_step_time(model, grid / n_r, n_r)
            ax.plot(grid, pred, color=color, lw=1.2)
    set_log2_axis(ax, "x", lo, hi)
    ax.set_xlabel("batch size B = prompts × rollouts")
    ax.set_ylabel("training step time (s)")
    if model.get("status") == "ok":
        ax.set_title(f"{model['formula']}, R² = {model['r2']:.3f}")
    else:
        ax.set_title("step-time model: insufficient data")
    if len(step_times):
        ax.legend(loc="upper left")
    else:
        ax.text(0.5, 0.5, "no run logs a step time", ha="center", va="center", transform=ax.transAxes)
    if title:
        fig.suptitle(title)
    return fig


def plot_generated_samples(generated: pd.DataFrame, thresholds=None, title: str = "") -> Figure:
    """Samples to target against B: trained (E = B·S, filled) and generated (open) under dynamic
    sampling, median over the envelope runs at each batch size, for up to three targets."""
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    rows = generated[generated["in_envelope"].astype(bool)] if "in_envelope" in generated else generated
    thresholds = _pick_thresholds(rows["threshold"]) if thresholds is None else list(thresholds)
    colors = threshold_colors(generated["threshold"].unique())
    lo, hi = _batch_limits(rows["total_batch"])
    drawn = 0
    for t in thresholds:
        agg = rows[(rows["threshold"] == t) & ~rows["censored"].astype(bool)].groupby(
            "total_batch", as_index=False)[["E_B", "E_generated"]].median()
        agg = agg[(agg["E_B"] > 0) | (agg["E_generated"] > 0)]
        if agg.empty:
            continue
        drawn += 1
        ax.plot(agg["total_batch"], agg["E_B"], color=colors[t], marker="o", label=f"acc ≥ {t:g}: trained")
        ax.plot(agg["total_batch"], agg["E_generated"], color=colors[t], marker="o", mfc="none", ls=":",
                label=f"acc ≥ {t:g}: generated")
    if not drawn:
        _no_data(ax, "no run under dynamic sampling reached a target")
        if title:
            fig.suptitle(title)
        return fig
    set_log2_axis(ax, "x", lo, hi)
    set_log_axis(ax, "y")
    ax.set_xlabel("batch size B = prompts × rollouts (trained per step)")
    ax.set_ylabel("samples to target")
    ax.set_title("dynamic sampling: generated vs trained samples")
    ax.legend(loc="best", fontsize=7.5)
    if title:
        fig.suptitle(title)
    return fig


def plot_training_curves(curves: pd.DataFrame, thresholds=(), title: str = "",
                         color_by: str = "total_batch") -> Figure:
    """Validation accuracy against rollout steps (left) and samples seen (right), one line per
    run coloured by batch size; dashed lines are the target accuracies. With a learning-rate
    sweep (curves with `winner` and `lr` columns, tables.mark_lr_winners): at each batch size
    the winning rate's runs solid and labelled with their rate, the other rates faded and
    dashed, under one legend entry."""
    fig = Figure(figsize=(10.5, 4.4))
    ax_s, ax_n = fig.subplots(1, 2, sharey=True)
    sweep = "winner" in curves.columns and "lr" in curves.columns and not curves["winner"].all()
    curves = _frame(curves, ["run_id", "step", "accuracy", "total_batch", "n_prompts",
                             "n_rollouts", "samples", "winner", "lr"])
    cfg = _float_columns(curves, ["total_batch", "n_prompts", "n_rollouts"]).dropna().drop_duplicates()
    keys = sorted(cfg.itertuples(index=False, name=None))
    colors = batch_colors(range(len(keys)))
    faded_label = False
    for i, (b, npr, nro) in enumerate(keys):
        sel = curves[(_floats(curves["total_batch"]) == b) & (_floats(curves["n_prompts"]) == npr)
                     & (_floats(curves["n_rollouts"]) == nro)]
        labelled = False
        for _, run in sel.groupby("run_id", sort=False):
            won = bool(run["winner"].iloc[0]) if sweep and pd.notna(run["winner"].iloc[0]) else True
            style = {"lw": 1.1, "alpha": 0.9} if won else {"lw": 0.9, "alpha": 0.3, "ls": "--"}
            label = None
            if won and not labelled and len(keys) <= _LEGEND_MAX:
                lr = _floats(run["lr"])[0] if sweep else np.nan
                label = f"B={b:,.0f} ({npr:g}×{nro:g})" + (f", lr {lr:.0e}" if np.isfinite(lr) else "")
                labelled = True
            elif not won and not faded_label:
                label, faded_label = "other rates tried (faded)", True
            samples = _floats(run["samples"])
            ax_s.plot(_floats(run["step"]), _floats(run["accuracy"]), color=colors[i], label=label, **style)
            ax_n.plot(np.where(samples > 0, samples, np.nan), _floats(run["accuracy"]), color=colors[i], **style)
    for t in thresholds:
        for ax in (ax_s, ax_n):
            ax.axhline(t, color="0.5", lw=0.7, ls="--", zorder=0)
    ax_s.set_xlabel("rollout step (training/global_step)")
    ax_n.set_xlabel("samples seen (step × B)")
    if _positive(curves["samples"]):
        set_log_axis(ax_n, "x")
    else:
        _no_data(ax_n, "no evaluation after step 0", which="x")
    if not keys:
        _no_data(ax_s, "no validation point logged")
    ax_s.set_ylabel("validation accuracy")
    ax_s.set_title("accuracy vs steps")
    ax_n.set_title("accuracy vs samples")
    if len(keys) > _LEGEND_MAX:  # a legend of hundreds of batches would run off the figure
        _batch_colorbar(fig, [ax_s, ax_n], [k[0] for k in keys], colors)
    handles, labels = ax_s.get_legend_handles_labels()
    if labels:
        order = sorted(range(len(labels)), key=lambda i: labels[i].startswith("other rates"))  # faded last
        fig.legend([handles[i] for i in order], [labels[i] for i in order],
                   loc="outside right center" if len(keys) <= _LEGEND_MAX else "outside lower center",
                   title=("batch (prompts×rollouts)" + (", best rate" if sweep else ""))
                   if len(keys) <= _LEGEND_MAX else None, fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def _batch_colorbar(fig: Figure, axes, batch_sizes: list[float], colors: dict) -> None:
    """A colour bar for the batch sizes' colours (one band each), ticked at six of them."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize

    n = len(batch_sizes)
    mappable = ScalarMappable(norm=Normalize(-0.5, n - 0.5), cmap=ListedColormap([colors[i] for i in range(n)]))
    bar = fig.colorbar(mappable, ax=axes, location="right", fraction=0.04, pad=0.02)
    ticks = np.unique(np.linspace(0, n - 1, 6).round().astype(int))
    bar.set_ticks(ticks, labels=[_plain_label(batch_sizes[i]) for i in ticks])
    bar.set_label(f"batch size B ({n:,} batch sizes)")


def plot_wall_clock(wall: pd.DataFrame, title: str = "") -> Figure:
    """Left: hours to each target against B (median over replicates; open triangles: never
    reached, a lower bound). Right: mean step time against B, titled with the trend it shows."""
    fig = Figure(figsize=(10.5, 4.4))
    ax_t, ax_s = fig.subplots(1, 2)
    wall = _frame(wall, ["run_id", "threshold", "total_batch", "censored", "time_to_target_h",
                         "mean_step_time_s"])
    wall = wall.assign(total_batch=_floats(wall["total_batch"]),
                       time_to_target_h=_floats(wall["time_to_target_h"]),
                       mean_step_time_s=_floats(wall["mean_step_time_s"]),
                       censored=wall["censored"].fillna(False).astype(bool))
    colors = threshold_colors(wall["threshold"].dropna().unique())
    lo, hi = _batch_limits(wall["total_batch"])
    timed = wall[np.isfinite(wall["time_to_target_h"]) & (wall["time_to_target_h"] > 0)]
    n_t = timed["threshold"].nunique()
    for k, (t, rows) in enumerate(timed.groupby("threshold", sort=True)):
        agg = rows.groupby(["total_batch", "censored"], as_index=False)["time_to_target_h"].median()
        ok = agg[~agg["censored"]].sort_values("total_batch")
        cen = agg[agg["censored"]]
        ax_t.plot(ok["total_batch"], ok["time_to_target_h"], color=colors[t], marker="o",
                  label=f"acc ≥ {t:g}")
        # a run that never reached several targets has one bound for all: spread them sideways
        shift = 2.0 ** (0.07 * (k - (n_t - 1) / 2))
        ax_t.scatter(cen["total_batch"] * shift, cen["time_to_target_h"], marker="^", facecolors="none",
                     edgecolors=colors[t], s=30)
        if len(ok):
            best = ok.loc[ok["time_to_target_h"].idxmin()]
            ax_t.scatter([best["total_batch"]], [best["time_to_target_h"]], marker="*", s=120,
                         color=colors[t], edgecolors="black", linewidths=0.5, zorder=4)
    steps = wall.drop_duplicates("run_id")
    steps = steps[np.isfinite(steps["mean_step_time_s"]) & np.isfinite(steps["total_batch"])]
    ax_s.scatter(steps["total_batch"], steps["mean_step_time_s"], color=PALETTE[0], s=24)
    for ax in (ax_t, ax_s):
        set_log2_axis(ax, "x", lo, hi)
        ax.set_xlabel("batch size B = prompts × rollouts")
    if len(timed):
        set_log_axis(ax_t, "y")
    else:
        _no_data(ax_t, "no run logs a step time (perf/time_per_step or timing_s/step)")
    if not len(steps):
        _no_data(ax_s, "no step time logged")
    ax_t.set_ylabel("wall-clock hours to target")
    ax_t.set_title("time to target (★ fastest)")
    ax_s.set_ylabel("mean step time (s)")
    per_b = steps.groupby("total_batch")["mean_step_time_s"].median()
    ax_s.set_title(trend_claim(per_b.index, per_b.to_numpy(), quantity="step time", along="B")["claim"]
                   if len(per_b) >= 2 else "step time by batch size", wrap=True)
    handles, labels = ax_t.get_legend_handles_labels()
    if handles:
        handles.append(matplotlib.lines.Line2D([], [], ls="", marker="^", mfc="none", mec="0.3"))
        labels.append("never reached (lower bound)")
        ax_t.legend(handles, labels, loc="best", fontsize=7.5)  # beside its own panel's lines
    if title:
        fig.suptitle(title)
    return fig
