"""The figures of prompts against rollouts (the cross-axis model and its check, the iso-batch
splits) and of the gradient noise scale (its smoothed series, B_simple against the fitted
B_noise). Built on style.py; each returns a Figure.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.figure import Figure

from .style import (
    PALETTE,
    _accuracy_xlim,
    _batch_limits,
    _ci_errorbar,
    _float_columns,
    _floats,
    _frame,
    _no_data,
    _positive,
    _usable_fits,
    batch_colors,
    label_axes,
    set_log2_axis,
    set_log_axis,
    threshold_colors,
)


def _axis_of(n_p: np.ndarray, n_r: np.ndarray) -> str:
    n_p, n_r = np.unique(n_p[np.isfinite(n_p)]), np.unique(n_r[np.isfinite(n_r)])
    if len(n_r) == 1 and len(n_p) > 1:
        return "prompts"
    if len(n_p) == 1 and len(n_r) > 1:
        return "rollouts"
    return "mixed"


def plot_two_axis(sb_eb_all: pd.DataFrame, cross, threshold: float, title: str = "") -> Figure:
    """Left: S against B at one target for each phase, with the cross-axis model along each phase's
    configurations. Right: its check: each left-out phase's runs against what the model predicted
    without them (on the diagonal: predicted right; the band: a factor of the scatter)."""
    fig = Figure(figsize=(10.5, 4.4))
    ax_s, ax_c = fig.subplots(1, 2)
    sb = _frame(sb_eb_all, ["phase", "threshold", "n_prompts", "n_rollouts", "total_batch", "S_B", "censored"])
    sub = sb[np.isclose(_floats(sb["threshold"]), threshold)]
    lo, hi = _batch_limits(sb["total_batch"])
    markers = "osD^v"
    ok_model = cross is not None and getattr(cross, "point", None) is not None and cross.target_index(threshold) is not None
    for i, (phase, rows) in enumerate(sub.groupby("phase", sort=True)):
        c = PALETTE[i % (len(PALETTE) - 1)]
        cen = rows["censored"].fillna(False).astype(bool)
        ax_s.scatter(_floats(rows.loc[~cen, "total_batch"]), _floats(rows.loc[~cen, "S_B"]), color=c,
                     marker=markers[i % len(markers)], s=24, zorder=3)
        ax_s.scatter(_floats(rows.loc[cen, "total_batch"]), _floats(rows.loc[cen, "S_B"]), marker="^",
                     facecolors="none", edgecolors=c, s=30, zorder=3)
        n_p, n_r = _floats(rows["n_prompts"]), _floats(rows["n_rollouts"])
        axis = _axis_of(n_p, n_r)
        if axis == "prompts":
            fixed = n_r[np.isfinite(n_r)][0]
            label = f"{phase}: prompts vary, n_rollouts = {fixed:g}"
            grid_np, grid_nr = np.geomspace(lo, hi, 100) / fixed, np.full(100, fixed)
        elif axis == "rollouts":
            fixed = n_p[np.isfinite(n_p)][0]
            label = f"{phase}: rollouts vary, n_prompts = {fixed:g}"
            grid_nr = np.geomspace(max(lo / fixed, 1), max(hi / fixed, 1), 100)
            grid_np = np.full(100, fixed)
        else:
            label = f"{phase}: {'one configuration' if len(rows) <= 1 else 'prompts and rollouts vary'}"
            ok_cfg = np.isfinite(n_p) & np.isfinite(n_r)
            grid_np, grid_nr = n_p[ok_cfg], n_r[ok_cfg]
        if ok_model and len(grid_np):
            from ..fit.crossaxis import effective_log_batch

            pt = cross.point
            j = cross.target_index(threshold)
            a, b, al, _ = pt.lay.local(pt.fits[pt.chosen].theta[None])[0, j]
            x = effective_log_batch(grid_np, grid_nr, pt.rho)
            s_pred = np.exp(a + np.logaddexp(0.0, al * (b - x))
                            + (float(pt.fits[pt.chosen].theta[pt.lay.gamma][0]) / grid_nr if pt.lay.m else 0.0))
            ax_s.plot(grid_np * grid_nr, s_pred, color=c, lw=1.3, label=label,
                      **({"ls": "", "marker": "x"} if axis == "mixed" else {}))
        else:
            ax_s.plot([], [], color=c, label=label)
    set_log2_axis(ax_s, "x", lo, hi)
    if _positive(sub["S_B"]):
        set_log_axis(ax_s, "y")
        ax_s.legend(loc="upper right", fontsize=7.5)
    else:
        _no_data(ax_s, f"no run has a measured S at accuracy {threshold:g}")
    ax_s.set_xlabel("batch size B = prompts × rollouts")
    ax_s.set_ylabel("rollout steps to target S")
    ax_s.set_title(f"steps to accuracy {threshold:g}: cross-axis model")
    pts = _frame(getattr(cross, "check_points", None), ["left_out", "S_measured", "S_predicted", "threshold"])
    pts = pts[np.isfinite(_floats(pts["S_measured"])) & np.isfinite(_floats(pts["S_predicted"]))]
    if len(pts):
        for i, (phase, rows) in enumerate(pts.groupby("left_out", sort=True)):
            ax_c.scatter(_floats(rows["S_predicted"]), _floats(rows["S_measured"]), color=PALETTE[i % (len(PALETTE) - 1)],
                         marker=markers[i % len(markers)], s=22, label=f"{phase} left out")
        v = np.r_[_floats(pts["S_measured"]), _floats(pts["S_predicted"])]
        g = np.geomspace(v.min() / 1.3, v.max() * 1.3, 20)
        ax_c.plot(g, g, color="0.3", lw=1)
        ax_c.fill_between(g, g / 1.25, g * 1.25, color="0.5", alpha=0.15, lw=0, label="within 25%")
        set_log_axis(ax_c, "x")
        set_log_axis(ax_c, "y")
        ax_c.legend(loc="upper left", fontsize=7.5)
        ax_c.set_xlabel("S predicted without that phase")
        ax_c.set_ylabel("S measured")
    else:
        _no_data(ax_c, "no phase can be left out with configurations off the others' axes: "
                       "the model is not checked")
    ax_c.set_title("the check: left-out phases predicted")
    if title:
        fig.suptitle(title)
    return fig


def plot_iso_batch(iso: pd.DataFrame, title: str = "") -> Figure:
    """At a fixed total batch: steps to each target against how it is split (n_rollouts per
    prompt, log2), measured (points; open triangles never reached) and, when given, the joint
    two-axis model's prediction (dashed)."""
    fig = Figure(figsize=(6.8, 4.4))
    ax = fig.subplots()
    iso = _frame(iso, ["threshold", "n_prompts", "n_rollouts", "S_B", "censored"])
    colors = threshold_colors(iso["threshold"].dropna().unique())
    for t, rows in iso.groupby("threshold", sort=True):
        rows = rows.sort_values("n_rollouts")
        c = colors[t]
        cen = rows["censored"].fillna(False).astype(bool)
        ax.plot(_floats(rows["n_rollouts"]), _floats(rows["S_B"]), color=c, lw=1.2, marker="o",
                label=f"acc ≥ {t:g}")
        ax.scatter(_floats(rows.loc[cen, "n_rollouts"]), _floats(rows.loc[cen, "S_B"]), marker="^",
                   facecolors="white", edgecolors=c, s=40, zorder=4)
        if "S_pred" in rows:
            ax.plot(_floats(rows["n_rollouts"]), _floats(rows["S_pred"]), color=c, lw=1, ls="--")
    splits = _float_columns(iso, ["n_prompts", "n_rollouts"]).dropna().drop_duplicates().sort_values("n_rollouts")
    if len(splits) >= 2:  # one split: a plain axis with its one label (no log axis to read)
        set_log2_axis(ax, "x")
    if len(splits):
        ax.set_xticks(splits["n_rollouts"].to_numpy(dtype=float))
        ax.set_xticklabels([f"{r:g}\n({p:g} prompts)" for p, r in splits.itertuples(index=False)],
                           fontsize=8)
        ax.xaxis.set_minor_locator(ticker.NullLocator())
    if _positive(iso["S_B"]):
        set_log_axis(ax, "y")
    else:
        _no_data(ax, "no split has a measured S")
    ax.set_xlabel("rollouts per prompt (prompts per step) at a fixed batch")
    ax.set_ylabel("rollout steps to target S")
    ax.set_title(title or "iso-batch: prompt diversity vs rollout diversity")
    handles, labels = ax.get_legend_handles_labels()
    if "S_pred" in iso:
        handles.append(matplotlib.lines.Line2D([], [], color="0.4", ls="--"))
        labels.append("joint two-axis model")
    if handles:
        fig.legend(handles, labels, loc="outside right center", fontsize=8)
    return fig


def plot_grad_noise(smoothed: pd.DataFrame, cbs_fit: pd.DataFrame | None = None,
                    title: str = "") -> Figure:
    """The smoothed simple noise scale B_simple over training for each run (log2), with the
    fitted B_noise range of the phase shaded for reference."""
    fig = Figure(figsize=(7.4, 4.4))
    ax = fig.subplots()
    smoothed = _frame(smoothed, ["run_id", "total_batch", "step", "B_simple_ema"])
    batches = sorted(b for b in np.unique(_floats(smoothed["total_batch"])) if np.isfinite(b))
    colors = batch_colors(batches)
    seen = set()
    for _rid, rows in smoothed.groupby("run_id", sort=False):
        b = _floats(rows["total_batch"])[0]
        ax.plot(_floats(rows["step"]), _floats(rows["B_simple_ema"]), color=colors.get(b, "0.5"),
                lw=1.1, label=None if b in seen or not np.isfinite(b) else f"B={b:g}")
        seen.add(b)
    fits = _usable_fits(cbs_fit)
    bn = _floats(fits["B_noise"])
    if len(bn):
        ax.axhspan(bn.min(), bn.max(), color="0.5", alpha=0.15, lw=0,
                   label="fitted B_noise (range over targets)")
    if _positive(smoothed["B_simple_ema"]) or len(bn):
        set_log_axis(ax, "y")  # B_noise: a quantity, decimal ticks (1K, 10K, 1M)
    if not _positive(smoothed["B_simple_ema"]) and not len(bn):
        _no_data(ax, "no positive smoothed noise scale logged")
    ax.set_xlabel("rollout step (training/global_step)")
    ax.set_ylabel("B_simple = tr(Σ)/|G|² (samples)")
    ax.set_title(title or "gradient noise scale during training (EMA)")
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        order = sorted(range(len(labels)), key=lambda i: (not labels[i].startswith("B="),
                       float(labels[i][2:]) if labels[i].startswith("B=") else 0.0))
        fig.legend([handles[i] for i in order], [labels[i] for i in order],
                   loc="outside right center", fontsize=8)
    return fig


def plot_noise_scale_vs_fit(comparison: pd.DataFrame, at_target: pd.DataFrame | None = None,
                            title: str = "") -> Figure:
    """Does the gradient noise scale predict B_crit? Fitted B_noise, post-hoc B_simple from
    gradient norms at matched accuracy, and (if logged) the smoothed B_simple at the crossing,
    each against the target accuracy with 95% CIs."""
    fig = Figure(figsize=(6.8, 4.4))
    ax = fig.subplots()
    c = _frame(comparison, ["threshold", "B_noise", "B_noise_lo", "B_noise_hi", "B_simple",
                            "B_simple_lo", "B_simple_hi", "status"]).sort_values("threshold")
    fitted = c[np.isfinite(_floats(c["B_noise"]))]
    if len(fitted):
        _ci_errorbar(ax, fitted["threshold"], fitted["B_noise"], fitted["B_noise_lo"],
                     fitted["B_noise_hi"], marker="o", color=PALETTE[0], label="B_noise fitted from S(B)")
    ok = c[(c["status"] == "ok") & np.isfinite(_floats(c["B_simple"]))]
    if len(ok):
        _ci_errorbar(ax, _floats(ok["threshold"]) + 0.004, ok["B_simple"], ok["B_simple_lo"],
                     ok["B_simple_hi"], marker="s", color=PALETTE[1],
                     label="B_simple from actor/grad_norm (post hoc)")
    at = _frame(at_target, ["threshold", "B_simple_ema"])
    at = at[np.isfinite(_floats(at["B_simple_ema"]))]
    if len(at):
        at = at.assign(B_simple_ema=_floats(at["B_simple_ema"]))
        med = at.groupby("threshold")["B_simple_ema"].agg(
            med="median", lo=lambda v: np.quantile(v, 0.1), hi=lambda v: np.quantile(v, 0.9))
        _ci_errorbar(ax, med.index.to_numpy(dtype=float) - 0.004, med["med"], med["lo"], med["hi"],
                     marker="D", color=PALETTE[2], label="logged B_simple at the crossing (median, 10-90%)")
    if ax.has_data() and any(_positive(v) for v in (fitted["B_noise"], ok["B_simple"],
                                                    at["B_simple_ema"])):
        set_log_axis(ax, "y")  # B_noise: a quantity, decimal ticks (1K, 10K, 1M)
        fig.legend(loc="outside lower center", fontsize=8, ncol=2)  # never over the points
        _accuracy_xlim(ax, _floats(c["threshold"]))
    else:
        _no_data(ax, "neither a fitted B_noise nor a noise scale at any target")
    return label_axes(ax, "target validation accuracy", "batch size (samples per step)",
                      title or "noise scale B_simple vs fitted B_noise")


