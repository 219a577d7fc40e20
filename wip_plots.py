"""Phase parameters, figure style, plots, tables and the report build (WIP part of cbs_helpers)."""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import yaml
from matplotlib import ticker
from matplotlib.figure import Figure

# ---------------------------------------------------------------------------------------------
# Phase parameters (params/<phase>.yaml)
# ---------------------------------------------------------------------------------------------

#: Every analysis section, in report order, with the title used in the index.
SECTIONS = {
    "01_load_runs": "Runs in the phase",
    "02_steps_to_target": "Steps and samples to target, McCandlish fit",
    "03_training_curves": "Training curves",
    "04_two_axis": "Prompts vs rollouts",
    "05_gradient_noise": "Gradient noise scale",
    "06_wall_clock": "Wall-clock time",
}
SUMMARY_SECTION = "07_summary"
#: Column order of outputs/<phase>/tables/sb_eb.csv: design.md's contract first, extras last.
SB_EB_CSV_COLUMNS = ["run_name", "n_prompts", "n_rollouts", "total_batch", "threshold", "S_B",
                     "E_B", "censored", "run_id", "replicate", "n_eval", "n_nonfinite"]
AXES = ("prompts", "rollouts", "iso_batch")
PARAM_SPEC = {  # key: (types, required)
    "phase": ((str,), True),
    "title": ((str,), True),
    "axis": ((str,), True),
    "metric": ((str,), True),
    "prefer_source": ((str, type(None)), False),
    "n_val": ((int,), True),
    "thresholds": ((list,), True),
    "sections": ((list,), True),
    "two_axis_phases": ((list,), False),
}


class ParamsError(ValueError):
    """A params/<phase>.yaml file that cannot be used; the message says what to fix."""


def validate_phase_params(raw: object, where: str = "params") -> dict:
    """Check one phase's parameters and return them with defaults filled in.

    Raises ParamsError naming the file and the key on: a non-mapping, an unknown or missing
    key, a wrong type, a threshold outside (0, 1), an unknown axis or section.
    """
    if not isinstance(raw, dict):
        raise ParamsError(f"{where}: expected a mapping of keys to values, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(PARAM_SPEC))
    if unknown:
        raise ParamsError(f"{where}: unknown key(s) {unknown}; allowed keys: {sorted(PARAM_SPEC)}")
    missing = sorted(k for k, (_, req) in PARAM_SPEC.items() if req and k not in raw)
    if missing:
        raise ParamsError(f"{where}: missing key(s) {missing}")
    for key, value in raw.items():
        types, _ = PARAM_SPEC[key]
        # bool is an int subclass; n_val: true would otherwise pass as 1
        if isinstance(value, bool) or not isinstance(value, types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ParamsError(f"{where}: {key} must be {names}, got {value!r}")
    params = dict(raw)
    params.setdefault("prefer_source", None)
    params.setdefault("two_axis_phases", [])
    if params["axis"] not in AXES:
        raise ParamsError(f"{where}: axis must be one of {list(AXES)}, got {params['axis']!r}")
    if params["n_val"] <= 0:
        raise ParamsError(f"{where}: n_val must be a positive number of validation problems")
    thresholds = params["thresholds"]
    if not thresholds:
        raise ParamsError(f"{where}: thresholds is empty")
    for t in thresholds:
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < 1:
            raise ParamsError(f"{where}: every threshold must be a number in (0, 1), got {t!r}"
                              " (accuracy is a fraction: write 0.6, not 60)")
    params["thresholds"] = sorted(float(t) for t in thresholds)
    bad = [s for s in params["sections"] if s not in SECTIONS]
    if bad:
        raise ParamsError(f"{where}: unknown section(s) {bad}; known: {list(SECTIONS)}")
    if not all(isinstance(p, str) for p in params["two_axis_phases"]):
        raise ParamsError(f"{where}: two_axis_phases must be a list of phase names")
    return params


def load_phase_params(params_dir: str | Path, phase: str) -> dict:
    """Read and validate params/<phase>.yaml (the phase's metric, thresholds, n_val, sections)."""
    params_dir = Path(params_dir)
    known = sorted(p.stem for p in params_dir.glob("*.yaml"))
    path = params_dir / f"{phase}.yaml"
    if not path.is_file():
        raise ParamsError(f"unknown phase {phase!r}: there is no {path}. Known phases: {known}."
                          " To add a phase, add a params file (see params/README.md).")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({exc})") from None
    params = validate_phase_params(raw, where=str(path))
    if params["phase"] != phase:
        raise ParamsError(f"{path}: phase is {params['phase']!r} but the file is named for {phase!r}")
    return params


# ---------------------------------------------------------------------------------------------
# Figure style and saving
# ---------------------------------------------------------------------------------------------

#: Okabe & Ito's colour-blind-safe palette (black last, it is kept for reference lines).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]


def setup_style() -> None:
    """The one matplotlib style of every figure in the reports and the paper."""
    matplotlib.rcParams.update({
        "figure.figsize": (6.4, 4.2),
        "figure.dpi": 110,
        "figure.constrained_layout.use": True,
        "savefig.dpi": 150,
        "font.size": 10,
        "axes.titlesize": 11,
        "axes.labelsize": 10,
        "legend.fontsize": 8.5,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "grid.linewidth": 0.6,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
        "legend.frameon": False,
        "lines.linewidth": 1.6,
        "lines.markersize": 5,
        "pdf.fonttype": 42,  # editable text in the paper's PDF
        "ps.fonttype": 42,
    })
    _register_figure_display()


def _register_figure_display() -> None:
    """Let a bare `fig` at the end of a notebook cell display as PNG (figures here are built
    with matplotlib.figure.Figure, not pyplot, so nothing global is left open)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return

    def to_png(fig: Figure) -> bytes:
        import io
        saved = getattr(fig, "_cbs_saved_png", None)
        if saved is not None:  # save_figure already rendered it: do not render twice
            return saved
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        return buf.getvalue()

    shell.display_formatter.formatters["image/png"].for_type(Figure, to_png)


def threshold_colors(thresholds) -> dict:
    """A fixed colour per accuracy threshold, the same in every figure of a phase."""
    return {t: PALETTE[i % (len(PALETTE) - 1)] for i, t in enumerate(sorted(thresholds))}


def batch_colors(batch_sizes) -> dict:
    """Sequential colours (viridis, colour-blind safe) for an ordered set of batch sizes."""
    values = sorted(set(batch_sizes))
    cmap = matplotlib.colormaps["viridis"]
    n = max(len(values) - 1, 1)
    return {b: cmap(0.9 * i / n) for i, b in enumerate(values)}


def _pow2_label(x: float, _pos=None) -> str:
    if x <= 0:
        return ""
    k = np.log2(x)
    if abs(k - round(k)) > 1e-6:
        return ""
    value = int(round(x))
    return f"{value // 1024}K" if value >= 8192 and value % 1024 == 0 else f"{value}"


def set_log2_axis(ax, which: str = "x", lo: float | None = None, hi: float | None = None) -> None:
    """log2 axis with ticks at powers of two labelled as plain numbers (64, 128, ... 16K)."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log", base=2)
    axis.set_major_locator(ticker.LogLocator(base=2, numticks=12))
    axis.set_major_formatter(ticker.FuncFormatter(_pow2_label))
    axis.set_minor_locator(ticker.NullLocator())
    if lo is not None and hi is not None:
        (ax.set_xlim if which == "x" else ax.set_ylim)(lo, hi)


def set_log_axis(ax, which: str = "y") -> None:
    """log10 axis with plain labels (10, 100, 1K, ...). Call it after plotting: when the data
    span less than about two decades, 2 and 5 times each power of ten are labelled too, so the
    axis never shows a single number."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    lo, hi = ax.get_xlim() if which == "x" else ax.get_ylim()
    decades = np.log10(hi / lo) if lo > 0 and hi > lo else 3.0
    subs = (1.0, 2.0, 5.0) if decades < 2.2 else (1.0,)
    axis.set_major_locator(ticker.LogLocator(base=10, subs=subs, numticks=12))
    axis.set_major_formatter(ticker.FuncFormatter(_sci_label))
    axis.set_minor_locator(ticker.LogLocator(base=10, subs=np.arange(2, 10), numticks=12))
    axis.set_minor_formatter(ticker.NullFormatter())


def _sci_label(x: float, _pos=None) -> str:
    """1, 2, 5 times powers of ten as 0.5, 1, 20, 500, 1K, 20K, 1M ...; other ticks unlabelled."""
    if x <= 0:
        return ""
    k = int(np.floor(np.log10(x) + 1e-9))
    m = x / 10.0**k
    if min(abs(m - d) for d in (1, 2, 5)) > 1e-6:
        return ""
    m = int(round(m))
    if k < 0:
        return f"{x:g}"
    suffix, scale = next((s, d) for s, d in (("G", 9), ("M", 6), ("K", 3), ("", 0)) if k >= d)
    return f"{m * 10 ** (k - scale)}{suffix}"


def save_figure(fig: Figure, data: pd.DataFrame, out_dir: str | Path, name: str) -> dict:
    """Save a figure as PDF (vector, for the paper) and PNG (for the HTML), with its data as CSV.

    Returns the three paths. The PDF carries no creation date, so rebuilding gives the same file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"{name}.{ext}" for ext in ("pdf", "png", "csv")}
    fig.savefig(paths["pdf"], metadata={"CreationDate": None})
    fig.savefig(paths["png"])
    fig._cbs_saved_png = paths["png"].read_bytes()
    data.to_csv(paths["csv"], index=False)
    return paths


# ---------------------------------------------------------------------------------------------
# Plots. Each takes result tables and returns a Figure; none saves or shows.
# ---------------------------------------------------------------------------------------------

def _fit_curve(B, S_min, B_noise):
    return S_min * (1.0 + B_noise / B)


def _batch_limits(b) -> tuple[float, float]:
    b = np.asarray(b, dtype=float)
    b = b[np.isfinite(b) & (b > 0)]
    if b.size == 0:
        return 1.0, 2.0
    return 2 ** (np.floor(np.log2(b.min())) - 0.5), 2 ** (np.ceil(np.log2(b.max())) + 0.5)


def plot_sb_eb(sb_eb: pd.DataFrame, cbs_fit: pd.DataFrame, title: str = "",
               batch_col: str = "total_batch") -> Figure:
    """S(B) and E(B) per threshold: measured points, censored runs as lower bounds (open
    triangles), the McCandlish fit with its 95% band over B_noise, and B_noise marked (diamond:
    there S = 2 S_min and E = 2 E_min)."""
    fig = Figure(figsize=(10.5, 4.6))
    ax_s, ax_e = fig.subplots(1, 2)
    fits = cbs_fit.set_index("threshold")
    colors = threshold_colors(sb_eb["threshold"].unique())
    lo, hi = _batch_limits(sb_eb[batch_col])
    grid = np.geomspace(lo, hi, 200)
    for t, rows in sb_eb.groupby("threshold"):
        c = colors[t]
        ok = rows[~rows["censored"].astype(bool)]
        cen = rows[rows["censored"].astype(bool)]
        for ax, col in ((ax_s, "S_B"), (ax_e, "E_B")):
            ax.scatter(ok[batch_col], ok[col], color=c, s=22, zorder=3)
            ax.scatter(cen[batch_col], cen[col], marker="^", facecolors="none", edgecolors=c,
                       s=30, zorder=3)
        label = f"acc ≥ {t:g}"
        if t in fits.index and np.isfinite(fits.loc[t, "B_noise"]) and \
                fits.loc[t, "status"] in ("ok", "extrapolated"):
            f = fits.loc[t]
            s_fit = _fit_curve(grid, f["S_min"], f["B_noise"])
            ax_s.plot(grid, s_fit, color=c, lw=1.4)
            ax_e.plot(grid, s_fit * grid, color=c, lw=1.4)
            if np.isfinite(f["B_noise_lo"]) and np.isfinite(f["B_noise_hi"]):
                # Band: the curve through the fitted S_min as B_noise spans its 95% CI.
                s_lo = _fit_curve(grid, f["S_min"], f["B_noise_lo"])
                s_hi = _fit_curve(grid, f["S_min"], f["B_noise_hi"])
                ax_s.fill_between(grid, s_lo, s_hi, color=c, alpha=0.15, lw=0)
                ax_e.fill_between(grid, s_lo * grid, s_hi * grid, color=c, alpha=0.15, lw=0)
            ax_s.scatter([f["B_noise"]], [2 * f["S_min"]], marker="D", color=c, s=36,
                         edgecolors="black", linewidths=0.6, zorder=4)
            ax_e.scatter([f["B_noise"]], [2 * f["S_min"] * f["B_noise"]], marker="D", color=c,
                         s=36, edgecolors="black", linewidths=0.6, zorder=4)
            label += f": B_noise = {f['B_noise']:.0f}"
            if np.isfinite(f["B_noise_lo"]):
                label += f" [{f['B_noise_lo']:.0f}, {f['B_noise_hi']:.0f}]"
        ax_s.plot([], [], color=c, marker="o", label=label)
    for ax in (ax_s, ax_e):
        set_log2_axis(ax, "x", lo, hi)
        set_log_axis(ax, "y")
        ax.set_xlabel("batch size B = prompts × rollouts (samples per step)")
    ax_s.set_ylabel("optimizer steps to target S(B)")
    ax_e.set_ylabel("samples to target E(B) = B·S(B)")
    ax_s.set_title("steps to target")
    ax_e.set_title("samples to target")
    handles, labels = ax_s.get_legend_handles_labels()
    handles += [matplotlib.lines.Line2D([], [], ls="", marker="^", mfc="none", mec="0.3"),
                matplotlib.lines.Line2D([], [], ls="", marker="D", mfc="0.6", mec="black")]
    labels += ["never reached (lower bound)", "B = B_noise"]
    fig.legend(handles, labels, loc="outside lower center", ncol=3)
    if title:
        fig.suptitle(title)
    return fig


def plot_b_noise_vs_target(cbs_fit: pd.DataFrame, compare: pd.DataFrame | None = None,
                           compare_label: str = "seed method", title: str = "") -> Figure:
    """B_noise against the target accuracy, with 95% CIs; optionally a second method beside it."""
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    ok = cbs_fit[cbs_fit["status"].isin(["ok", "extrapolated"]) & np.isfinite(cbs_fit["B_noise"])]
    yerr = np.vstack([ok["B_noise"] - ok["B_noise_lo"], ok["B_noise_hi"] - ok["B_noise"]])
    yerr = np.where(np.isfinite(yerr), yerr, 0)
    ax.errorbar(ok["threshold"], ok["B_noise"], yerr=yerr, marker="o", color=PALETTE[0],
                capsize=3, label="this project (95% CI)")
    ext = ok[ok["status"] == "extrapolated"]
    if len(ext):
        ax.scatter(ext["threshold"], ext["B_noise"], marker="o", facecolors="white",
                   edgecolors=PALETTE[0], zorder=4, label="outside the sampled B (extrapolated)")
    if compare is not None and len(compare):
        cmp_ok = compare[np.isfinite(compare["B_noise"])]
        ax.plot(cmp_ok["threshold"] + 0.004, cmp_ok["B_noise"], marker="s", ls="--",
                color=PALETTE[3], label=compare_label)
    set_log2_axis(ax, "y")
    ax.set_xlabel("target validation accuracy")
    ax.set_ylabel("B_noise (samples per step)")
    ax.set_title(title or "critical batch size grows with the target")
    ax.legend(loc="best")
    return fig


def plot_pareto(pareto: pd.DataFrame, title: str = "") -> Figure:
    """(S/S_min - 1) against (E/E_min - 1): the McCandlish model puts every run on x·y = 1."""
    fig = Figure(figsize=(5.6, 4.6))
    ax = fig.subplots()
    colors = threshold_colors(pareto["threshold"].unique())
    xcol, ycol = "E_excess", "S_excess"
    data = pareto[(pareto[xcol] > 0) & (pareto[ycol] > 0)]
    for t, rows in data.groupby("threshold"):
        cen = rows["censored"].astype(bool)
        ax.scatter(rows.loc[~cen, xcol], rows.loc[~cen, ycol], color=colors[t], s=22,
                   label=f"acc ≥ {t:g}")
        ax.scatter(rows.loc[cen, xcol], rows.loc[cen, ycol], marker="^", facecolors="none",
                   edgecolors=colors[t], s=26)
    if len(data):
        lo = min(data[xcol].min(), data[ycol].min(), 0.5) / 2
        hi = max(data[xcol].max(), data[ycol].max(), 2) * 2
        x = np.geomspace(lo, hi, 100)
        ax.plot(x, 1 / x, color="black", lw=1, ls="--", label="(S/S_min−1)(E/E_min−1) = 1")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("E/E_min − 1 (extra samples)")
    ax.set_ylabel("S/S_min − 1 (extra steps)")
    ax.set_title(title or "steps-samples trade-off")
    ax.legend(loc="upper right", fontsize=8)
    return fig


def training_curves_table(runs: pd.DataFrame, history: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Long table of the validation curve of every run: accuracy against steps and samples."""
    cols = ["run_id", "name", "replicate", "n_prompts", "n_rollouts", "total_batch"]
    h = history.loc[history[metric].notna() & np.isfinite(history[metric]), ["run_id", "step", metric]]
    out = h.merge(runs[cols], on="run_id", how="inner").rename(columns={metric: "accuracy"})
    out["samples"] = out["step"].astype(float) * out["total_batch"].astype(float)
    return out.sort_values(["total_batch", "n_prompts", "replicate", "step"]).reset_index(drop=True)


def plot_training_curves(curves: pd.DataFrame, thresholds=(), title: str = "",
                         color_by: str = "total_batch") -> Figure:
    """Validation accuracy against optimizer steps (left) and samples seen (right), one line per
    run coloured by batch size; dashed lines are the target accuracies."""
    fig = Figure(figsize=(10.5, 4.4))
    ax_s, ax_n = fig.subplots(1, 2, sharey=True)
    keys = sorted(curves[["total_batch", "n_prompts", "n_rollouts"]].drop_duplicates().itertuples(index=False))
    colors = batch_colors(range(len(keys)))
    for i, (b, npr, nro) in enumerate(keys):
        sel = curves[(curves["total_batch"] == b) & (curves["n_prompts"] == npr)
                     & (curves["n_rollouts"] == nro)]
        for j, (_, run) in enumerate(sel.groupby("run_id", sort=False)):
            label = f"B={b} ({npr}×{nro})" if j == 0 else None
            ax_s.plot(run["step"], run["accuracy"], color=colors[i], lw=1.1, alpha=0.9, label=label)
            ax_n.plot(run["samples"].where(run["samples"] > 0), run["accuracy"], color=colors[i],
                      lw=1.1, alpha=0.9)
    for t in thresholds:
        for ax in (ax_s, ax_n):
            ax.axhline(t, color="0.5", lw=0.7, ls="--", zorder=0)
    ax_s.set_xlabel("optimizer step")
    ax_n.set_xlabel("samples seen (step × B)")
    set_log_axis(ax_n, "x")
    ax_s.set_ylabel("validation accuracy")
    ax_s.set_title("accuracy vs steps")
    ax_n.set_title("accuracy vs samples")
    fig.legend(loc="outside right center", title="batch (prompts×rollouts)", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def plot_cross_phase(summary_long: pd.DataFrame, title: str = "") -> Figure:
    """The headline figure: B_noise against the target accuracy, one line per phase, 95% CIs."""
    fig = Figure(figsize=(7.4, 4.4))
    ax = fig.subplots()
    ok = summary_long[summary_long["status"].isin(["ok", "extrapolated"])
                      & np.isfinite(summary_long["B_noise"])]
    markers = "osD^vP*X"
    for i, (phase, rows) in enumerate(ok.groupby("phase", sort=False)):
        yerr = np.vstack([rows["B_noise"] - rows["B_noise_lo"], rows["B_noise_hi"] - rows["B_noise"]])
        yerr = np.where(np.isfinite(yerr), yerr, 0)
        ax.errorbar(rows["threshold"], rows["B_noise"], yerr=yerr, marker=markers[i % len(markers)],
                    color=PALETTE[i % (len(PALETTE) - 1)], capsize=2.5,
                    label=f"{phase}: {rows['axis'].iloc[0]} axis, {rows['task'].iloc[0]}")
    set_log2_axis(ax, "y")
    ax.set_xlabel("target validation accuracy")
    ax.set_ylabel("B_noise (samples per step)")
    ax.set_title(title or "critical batch size by phase and target")
    fig.legend(loc="outside right center", fontsize=8)
    return fig


def plot_two_axis(sb_eb_all: pd.DataFrame, two_axis: dict, threshold: float, title: str = "") -> Figure:
    """Left: S against B at one target for each phase (prompt and rollout axes), with the joint
    model S = S_min (1 + B0 (1 + (n_r - 1) rho) / (n_p n_r)). Right: the per-axis B_noise in
    total samples that the joint fit implies, against the target, with 95% CIs."""
    fig = Figure(figsize=(10.5, 4.4))
    ax_s, ax_b = fig.subplots(1, 2)
    sub = sb_eb_all[np.isclose(sb_eb_all["threshold"], threshold)]
    fit = two_axis["fit"].set_index("threshold")
    axes_tab = two_axis["axes"]
    lo, hi = _batch_limits(sb_eb_all["total_batch"])
    markers = "osD^v"
    for i, (phase, rows) in enumerate(sub.groupby("phase", sort=True)):
        c = PALETTE[i % (len(PALETTE) - 1)]
        cen = rows["censored"].astype(bool)
        ax_s.scatter(rows.loc[~cen, "total_batch"], rows.loc[~cen, "S_B"], color=c,
                     marker=markers[i % len(markers)], s=24, zorder=3)
        ax_s.scatter(rows.loc[cen, "total_batch"], rows.loc[cen, "S_B"], marker="^",
                     facecolors="none", edgecolors=c, s=30, zorder=3)
        n_p, n_r = rows["n_prompts"].astype(float), rows["n_rollouts"].astype(float)
        if n_r.nunique() == 1:
            fixed, label = n_r.iloc[0], f"{phase}: prompts vary, n_rollouts = {int(n_r.iloc[0])}"
            grid_np, grid_nr = np.geomspace(lo, hi, 100) / fixed, np.full(100, fixed)
        else:
            fixed, label = n_p.iloc[0], f"{phase}: rollouts vary, n_prompts = {int(n_p.iloc[0])}"
            grid_nr = np.geomspace(max(lo / fixed, 1), hi / fixed, 100)
            grid_np = np.full(100, fixed)
        if threshold in fit.index and fit.loc[threshold, "status"] == "ok":
            f = fit.loc[threshold]
            s_pred = f["S_min"] * (1 + f["B0"] * (1 + (grid_nr - 1) * f["rho"]) / (grid_np * grid_nr))
            ax_s.plot(grid_np * grid_nr, s_pred, color=c, lw=1.3, label=label)
        else:
            ax_s.plot([], [], color=c, label=label)
        ph_axes = axes_tab[axes_tab["phase"] == phase].sort_values("threshold")
        if len(ph_axes):
            yerr = np.vstack([ph_axes["B_noise"] - ph_axes["B_noise_lo"],
                              ph_axes["B_noise_hi"] - ph_axes["B_noise"]])
            ax_b.errorbar(ph_axes["threshold"] + 0.003 * (i - 1), ph_axes["B_noise"],
                          yerr=np.where(np.isfinite(yerr), yerr, 0), color=c,
                          marker=markers[i % len(markers)], capsize=2.5,
                          label=f"{phase} ({ph_axes['axis'].iloc[0]} axis)")
    set_log2_axis(ax_s, "x", lo, hi)
    set_log_axis(ax_s, "y")
    ax_s.set_xlabel("batch size B = prompts × rollouts")
    ax_s.set_ylabel("optimizer steps to target S")
    ax_s.set_title(f"steps to accuracy {threshold:g}: joint fit")
    ax_s.legend(loc="upper right", fontsize=7.5)
    set_log2_axis(ax_b, "y")
    ax_b.set_xlabel("target validation accuracy")
    ax_b.set_ylabel("implied B_noise (samples per step)")
    ax_b.set_title("B_noise along each axis")
    ax_b.legend(loc="best", fontsize=7.5)
    if title:
        fig.suptitle(title)
    return fig


def plot_iso_batch(iso: pd.DataFrame, title: str = "") -> Figure:
    """At a fixed total batch: steps to each target against how it is split (n_rollouts per
    prompt, log2), measured (points; open triangles never reached) and, when given, the joint
    two-axis model's prediction (dashed)."""
    fig = Figure(figsize=(6.8, 4.4))
    ax = fig.subplots()
    colors = threshold_colors(iso["threshold"].unique())
    for t, rows in iso.groupby("threshold", sort=True):
        rows = rows.sort_values("n_rollouts")
        c = colors[t]
        cen = rows["censored"].astype(bool)
        ax.plot(rows["n_rollouts"], rows["S_B"], color=c, lw=1.2, marker="o",
                label=f"acc ≥ {t:g}")
        ax.scatter(rows.loc[cen, "n_rollouts"], rows.loc[cen, "S_B"], marker="^",
                   facecolors="white", edgecolors=c, s=40, zorder=4)
        if "S_pred" in rows:
            ax.plot(rows["n_rollouts"], rows["S_pred"], color=c, lw=1, ls="--")
    set_log2_axis(ax, "x")
    set_log_axis(ax, "y")
    splits = iso[["n_prompts", "n_rollouts"]].drop_duplicates().sort_values("n_rollouts")
    ax.set_xticks(splits["n_rollouts"].to_numpy(dtype=float))
    ax.set_xticklabels([f"{int(r)}\n({int(p)} prompts)" for p, r in splits.itertuples(index=False)],
                       fontsize=8)
    ax.set_xlabel("rollouts per prompt (prompts per step) at a fixed batch")
    ax.set_ylabel("optimizer steps to target S")
    ax.set_title(title or "iso-batch: prompt diversity vs rollout diversity")
    handles, labels = ax.get_legend_handles_labels()
    if "S_pred" in iso:
        handles.append(matplotlib.lines.Line2D([], [], color="0.4", ls="--"))
        labels.append("joint two-axis model")
    fig.legend(handles, labels, loc="outside right center", fontsize=8)
    return fig


def plot_grad_noise(smoothed: pd.DataFrame, cbs_fit: pd.DataFrame | None = None,
                    title: str = "") -> Figure:
    """The smoothed simple noise scale B_simple over training for each run (log2), with the
    fitted B_noise range of the phase shaded for reference."""
    fig = Figure(figsize=(7.4, 4.4))
    ax = fig.subplots()
    colors = batch_colors(smoothed["total_batch"].unique())
    seen = set()
    for _rid, rows in smoothed.groupby("run_id", sort=False):
        b = rows["total_batch"].iloc[0]
        ax.plot(rows["step"], rows["B_simple_ema"], color=colors[b], lw=1.1,
                label=None if b in seen else f"B={int(b)}")
        seen.add(b)
    if cbs_fit is not None:
        ok = cbs_fit[cbs_fit["status"].isin(["ok", "extrapolated"])]
        if len(ok):
            ax.axhspan(ok["B_noise"].min(), ok["B_noise"].max(), color="0.5", alpha=0.15, lw=0,
                       label="fitted B_noise (range over targets)")
    set_log2_axis(ax, "y")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("B_simple = tr(Σ)/|G|² (samples)")
    ax.set_title(title or "gradient noise scale during training (EMA)")
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: (not labels[i].startswith("B="),
                   int(labels[i][2:]) if labels[i].startswith("B=") else 0))
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

    def bars(x, y, lo, hi, **kw):
        yerr = np.vstack([y - lo, hi - y])
        ax.errorbar(x, y, yerr=np.where(np.isfinite(yerr), yerr, 0), capsize=2.5, **kw)

    c = comparison.sort_values("threshold")
    bars(c["threshold"], c["B_noise"], c["B_noise_lo"], c["B_noise_hi"], marker="o",
         color=PALETTE[0], label="B_noise fitted from S(B)")
    ok = c[c["status"] == "ok"]
    bars(ok["threshold"] + 0.004, ok["B_simple"], ok["B_simple_lo"], ok["B_simple_hi"],
         marker="s", color=PALETTE[1], label="B_simple from actor/grad_norm (post hoc)")
    if at_target is not None and len(at_target):
        med = at_target.groupby("threshold")["B_simple_ema"].agg(
            med="median", lo=lambda v: np.quantile(v, 0.1), hi=lambda v: np.quantile(v, 0.9))
        bars(med.index.to_numpy() - 0.004, med["med"], med["lo"], med["hi"], marker="D",
             color=PALETTE[2], label="logged B_simple at the crossing (median, 10-90%)")
    set_log2_axis(ax, "y")
    ax.set_xlabel("target validation accuracy")
    ax.set_ylabel("batch size (samples per step)")
    ax.set_title(title or "gradient noise scale vs fitted critical batch")
    ax.legend(loc="upper left", fontsize=8)
    return fig


def plot_wall_clock(wall: pd.DataFrame, title: str = "") -> Figure:
    """Left: hours to each target against B (median over replicates; open triangles: never
    reached, a lower bound). Right: mean step time against B."""
    fig = Figure(figsize=(10.5, 4.4))
    ax_t, ax_s = fig.subplots(1, 2)
    colors = threshold_colors(wall["threshold"].unique())
    lo, hi = _batch_limits(wall["total_batch"])
    for t, rows in wall.groupby("threshold", sort=True):
        agg = rows.groupby(["total_batch", "censored"], as_index=False)["time_to_target_h"].median()
        ok = agg[~agg["censored"]].sort_values("total_batch")
        cen = agg[agg["censored"]]
        ax_t.plot(ok["total_batch"], ok["time_to_target_h"], color=colors[t], marker="o",
                  label=f"acc ≥ {t:g}")
        ax_t.scatter(cen["total_batch"], cen["time_to_target_h"], marker="^", facecolors="none",
                     edgecolors=colors[t], s=30)
        if len(ok):
            best = ok.loc[ok["time_to_target_h"].idxmin()]
            ax_t.scatter([best["total_batch"]], [best["time_to_target_h"]], marker="*", s=120,
                         color=colors[t], edgecolors="black", linewidths=0.5, zorder=4)
    steps = wall.drop_duplicates("run_id")
    ax_s.scatter(steps["total_batch"], steps["mean_step_time_s"], color=PALETTE[0], s=24)
    for ax in (ax_t, ax_s):
        set_log2_axis(ax, "x", lo, hi)
        ax.set_xlabel("batch size B = prompts × rollouts")
    set_log_axis(ax_t, "y")
    ax_t.set_ylabel("wall-clock hours to target")
    ax_t.set_title("time to target (★ fastest)")
    ax_s.set_ylabel("mean step time (s)")
    ax_s.set_title("step time grows with B")
    handles, labels = ax_t.get_legend_handles_labels()
    handles.append(matplotlib.lines.Line2D([], [], ls="", marker="^", mfc="none", mec="0.3"))
    labels.append("never reached (lower bound)")
    fig.legend(handles, labels, loc="outside right center", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------------------------
# Tables for the paper
# ---------------------------------------------------------------------------------------------

def cbs_summary_long(fits: dict, params: dict) -> pd.DataFrame:
    """All phases' cbs_fit tables stacked, with the phase's axis and task."""
    frames = []
    for phase, fit in fits.items():
        p = params[phase]
        task = p.get("prefer_source") or p["metric"]
        frames.append(fit.assign(phase=phase, axis=p["axis"], task=task))
    cols = ["phase", "axis", "task", "threshold", "B_noise", "B_noise_lo", "B_noise_hi", "S_min",
            "E_min", "B_crit_20pct", "r2_log", "n_points", "n_censored", "status"]
    return pd.concat(frames, ignore_index=True)[cols]


def cbs_summary_table(summary_long: pd.DataFrame) -> pd.DataFrame:
    """The paper's cross-phase table: one row per (phase, target), B_noise with its 95% CI."""
    rows = summary_long.copy()
    return pd.DataFrame({
        "phase": rows["phase"], "axis": rows["axis"], "task": rows["task"],
        "target": rows["threshold"].map(lambda t: f"{t:g}"),
        "B_noise [95% CI]": [format_ci(b, lo, hi) for b, lo, hi in
                             zip(rows["B_noise"], rows["B_noise_lo"], rows["B_noise_hi"], strict=True)],
        "S_min": rows["S_min"].round(1),
        "0.2 B_noise": rows["B_crit_20pct"].round(0),
        "R2 (log)": rows["r2_log"].round(3),
        "runs (censored)": [f"{n} ({c})" for n, c in zip(rows["n_points"], rows["n_censored"], strict=True)],
        "status": rows["status"],
    })


def format_ci(value: float, lo: float, hi: float, digits: int = 0) -> str:
    """'290 [250, 330]', or an en dash where the value is missing."""
    if not np.isfinite(value):
        return "–"
    if np.isfinite(lo) and np.isfinite(hi):
        return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
    return f"{value:.{digits}f}"


def to_latex_booktabs(table: pd.DataFrame, caption: str = "", label: str = "") -> str:
    """A booktabs LaTeX table (no pandas Styler/jinja dependency): escapes &, %, _, #, $."""
    def esc(x) -> str:
        s = "" if x is None or (isinstance(x, float) and not np.isfinite(x)) else str(x)
        for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"),
                     ("#", r"\#"), ("$", r"\$"), ("{", r"\{"), ("}", r"\}"), ("≥", r"$\geq$"),
                     ("–", "--"), ("×", r"$\times$")):
            s = s.replace(a, b)
        return s
    align = "".join("r" if pd.api.types.is_numeric_dtype(table[c]) else "l" for c in table.columns)
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{esc(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{align}}}", r"\toprule",
              " & ".join(esc(c) for c in table.columns) + r" \\", r"\midrule"]
    for row in table.itertuples(index=False):
        lines.append(" & ".join(esc(v) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def open_snapshot(out_dir: str | Path, source: str | None = None):
    """(runs, history, manifest) of the snapshot in <out_dir>/data. When there is none yet
    (a notebook opened in JupyterLab before any `make snapshot`) and a source is given, build it
    first with the same code as `make snapshot`."""
    from cbs_helpers import build_snapshot, read_snapshot, write_snapshot  # MERGE: drop

    out_dir = Path(out_dir)
    if source is not None and not (out_dir / "data" / "manifest.json").exists():
        write_snapshot(build_snapshot(source), out_dir)
    return read_snapshot(out_dir)


def save_table(table: pd.DataFrame, out_dir: str | Path, name: str, latex: bool = False,
               caption: str = "", label: str = "") -> dict:
    """Write a result table as <name>.csv (and <name>.tex, booktabs, when latex=True)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / f"{name}.csv"}
    table.to_csv(paths["csv"], index=False)
    if latex:
        paths["tex"] = out_dir / f"{name}.tex"
        paths["tex"].write_text(to_latex_booktabs(table, caption, label))
    return paths


# ---------------------------------------------------------------------------------------------
# Report build: plan (make rules), execute (papermill), html (nbconvert) and the index page.
# These are the only functions here that touch files or start processes.
# ---------------------------------------------------------------------------------------------

def report_plan(params_dir: str | Path, notebooks_dir: str | Path, out_dir: str,
                n_bootstrap: int = 1000) -> str:
    """Make rules for every (phase, section) in params/*.yaml, plus the cross-phase summary.

    A params file that does not validate still gets its 01_load_runs notebook, whose first cell
    then stops with the validation message; the other phases build as usual.
    """
    params_dir, notebooks_dir = Path(params_dir), Path(notebooks_dir)
    lines = ["# generated by `cbs_helpers.py plan` from params/*.yaml; do not edit", ""]
    summary_deps = []
    all_params = " ".join(str(p) for p in sorted(params_dir.glob("*.yaml")))
    for path in sorted(params_dir.glob("*.yaml")):
        phase = path.stem
        try:
            params = validate_phase_params(yaml.safe_load(path.read_text()), str(path))
            sections = [s for s in SECTIONS if s in params["sections"]]
            extra = [params_dir / f"{p}.yaml" for p in params["two_axis_phases"] if p != phase]
        except (ParamsError, yaml.YAMLError):
            sections, extra = ["01_load_runs"], []
        targets = []
        for section in sections:
            nb = notebooks_dir / f"{section}.ipynb"
            target = f"{out_dir}/{phase}/{section}.ipynb"
            deps = [str(nb), str(path), "cbs_helpers.py", "$(SNAPSHOT)"] + [str(e) for e in extra
                                                                          if e.exists()]
            lines.append(f"{target}: {' '.join(deps)} | $(STAMP)")
            lines.append(_notebook_recipe(nb, target, phase, out_dir, params_dir, notebooks_dir))
            targets.append(target)
            if section == "02_steps_to_target":
                summary_deps.append(target)
        lines.append(f"NOTEBOOKS_{phase} := {' '.join(targets)}")
        lines.append("")
    nb = notebooks_dir / f"{SUMMARY_SECTION}.ipynb"
    target = f"{out_dir}/summary/{SUMMARY_SECTION}.ipynb"
    lines.append(f"SUMMARY_NB := {target}")
    lines.append(f"{target}: {nb} cbs_helpers.py {all_params} $(SNAPSHOT) "
                 f"$(filter {' '.join(summary_deps)},$(foreach p,$(PHASES),$(NOTEBOOKS_$(p)))) | $(STAMP)")
    lines.append(_notebook_recipe(nb, target, "summary", out_dir, params_dir, notebooks_dir))
    return "\n".join(lines) + "\n"


def _notebook_recipe(nb: Path, target: str, phase: str, out_dir: str, params_dir: Path,
                     notebooks_dir: Path) -> str:
    """The make recipe of one (phase, section): papermill's own command line on the notebook's
    .ipynb twin (kept in sync with its .py by make), so the driver process imports nothing of
    the analysis stack; the kernel runs in notebooks/ with paths relative to it, as in
    JupyterLab. On failure, `cbs_helpers.py failed` prints one line naming the notebook and cell."""
    rel_out = os.path.relpath(out_dir, notebooks_dir)
    rel_params = os.path.relpath(params_dir, notebooks_dir)
    stem = Path(target).with_suffix("")
    return (
        f'\t@mkdir -p "{Path(target).parent}" && '
        f'PYTHONPATH="$(CURDIR)$${{PYTHONPATH:+:$$PYTHONPATH}}" "$(PY)" -m papermill {nb} '
        f'"{target}.tmp" -k python3 --language python --cwd {notebooks_dir} --no-progress-bar --log-level WARNING '
        f'-p phase {phase} -p out_dir "{rel_out}" -p params_dir "{rel_params}" '
        f'-p n_bootstrap $(N_BOOTSTRAP) 2> "{stem}.log" '
        f'&& mv "{target}.tmp" "{target}" && rm -f "{stem}.log" "{stem}.error.txt" '
        f'"{stem}.failed.ipynb" && touch "{out_dir}/.make/status.stamp" '
        f'&& echo "ok: {nb.stem} [phase {phase}]" '
        f'|| "$(PY)" cbs_helpers.py failed "{target}" --notebook {nb.with_suffix(".py")} --phase {phase}')


def record_notebook_failure(target: str | Path, notebook: str | Path, phase: str,
                            partial: str | Path | None = None, log: str | Path | None = None) -> str:
    """After a failed execution of <notebook> for <phase> into <target>: keep the partial
    notebook as <stem>.failed.ipynb, remove the stale executed notebook and HTML, write the
    one-line message to <stem>.error.txt (the index shows it) and return it. The message names
    the notebook, the phase and the cell, and carries the error's last line, not a traceback."""
    import nbformat

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    stem = target.with_suffix("")
    partial = Path(partial) if partial else Path(f"{target}.tmp")
    log = Path(log) if log else stem.with_suffix(".log")
    where, error = "", ""
    if partial.exists():
        try:
            nb = nbformat.read(partial, as_version=4)
            for cell in nb.cells:
                for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
                    if out.get("output_type") == "error":
                        where = f", cell {cell.get('execution_count') or '?'}"
                        error = f"{out.get('ename', 'Error')}: {_first_error_line(out.get('evalue', ''))}"
                        break
                if error:
                    break
        except Exception:  # noqa: BLE001 -- an unreadable partial notebook: fall back to the log
            pass
        os.replace(partial, stem.with_name(stem.name + ".failed.ipynb"))
    if not error and log.exists():
        lines = [ln for ln in log.read_text(errors="replace").splitlines()
                 if ln.strip() and not ln.startswith(" ") and "Traceback" not in ln]
        error = lines[-1] if lines else "the kernel stopped without an error message"
    msg = f"FAILED: {notebook} [phase {phase}]{where}: {error or 'unknown error'}"
    for stale in (target, target.with_suffix(".html")):
        stale.unlink(missing_ok=True)
    stem.with_name(stem.name + ".error.txt").write_text(msg + "\n")
    status = target.parent.parent / ".make" / "status.stamp"
    status.parent.mkdir(parents=True, exist_ok=True)
    status.touch()
    return msg


def _first_error_line(evalue: str) -> str:
    lines = [ln for ln in str(evalue).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def run_notebook(notebook: str | Path, phase: str, out_dir: str | Path, params_dir: str | Path,
                 n_bootstrap: int = 1000, timeout: int = 1800) -> int:
    """Execute notebooks/<NN_section>.py for one phase through papermill into
    <out>/<phase>/<NN_section>.ipynb. The .py percent file is executed (it is the source of
    truth), with phase, paths and n_bootstrap injected as parameters.

    On failure: one line naming the notebook, phase and cell on stderr, the partial notebook kept
    as <NN_section>.failed.ipynb, the error in <NN_section>.error.txt, return code 1.
    """
    import jupytext
    import nbformat
    import papermill as pm

    notebook = Path(notebook)
    out_dir = Path(out_dir).resolve()
    target_dir = out_dir / phase
    target_dir.mkdir(parents=True, exist_ok=True)
    stem = notebook.stem
    target = target_dir / f"{stem}.ipynb"
    failed = target_dir / f"{stem}.failed.ipynb"
    error_file = target_dir / f"{stem}.error.txt"
    status = out_dir / ".make" / "status.stamp"
    status.parent.mkdir(parents=True, exist_ok=True)
    nb = jupytext.read(notebook)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    # Paths relative to the notebook's directory (the kernel's cwd, as in JupyterLab), so the
    # executed notebooks carry no absolute (home) paths.
    nb_dir = notebook.parent.resolve()
    parameters = {"phase": phase, "out_dir": os.path.relpath(out_dir, nb_dir),
                  "params_dir": os.path.relpath(Path(params_dir).resolve(), nb_dir),
                  "n_bootstrap": int(n_bootstrap)}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"{stem}.ipynb"
        dst = Path(tmp) / f"{stem}.out.ipynb"
        nbformat.write(nb, src)
        for stale in (target, target.with_suffix(".html")):
            stale.unlink(missing_ok=True)
        # The kernel imports cbs_helpers from the project root whatever the environment.
        root = str(Path(__file__).resolve().parent)
        env_path = os.environ.get("PYTHONPATH", "")
        if root not in env_path.split(os.pathsep):
            os.environ["PYTHONPATH"] = root + (os.pathsep + env_path if env_path else "")
        try:
            pm.execute_notebook(str(src), str(dst), parameters=parameters, kernel_name="python3",
                                cwd=str(notebook.parent.resolve()), progress_bar=False,
                                log_output=False, execution_timeout=timeout,
                                extra_arguments=["--IPKernelApp.log_level=ERROR"])
        except Exception as exc:  # a cell error, a dead kernel, a timeout: one clear line
            log = Path(tmp) / "error.log"
            log.write_text(f"{type(exc).__name__}: {_first_error_line(getattr(exc, 'evalue', exc))}")
            msg = record_notebook_failure(target, notebook, phase, partial=dst, log=log)
            print(msg, file=sys.stderr)
            return 1
        os.replace(dst, target)
    failed.unlink(missing_ok=True)
    error_file.unlink(missing_ok=True)
    status.touch()
    print(f"ok: {notebook.name} [phase {phase}]")
    return 0


def convert_reports(out_dir: str | Path) -> list[Path]:
    """Convert every executed notebook under OUT that is newer than its HTML, in one nbconvert
    exporter (one process): code hidden for collaborators, figures embedded, no JavaScript
    needed to read it. Returns the HTML files written."""
    import nbformat
    from nbconvert import HTMLExporter

    out_dir = Path(out_dir)
    todo = []
    for nb_path in sorted(out_dir.glob("*/[0-9][0-9]_*.ipynb")):
        if nb_path.name.endswith(".failed.ipynb"):
            continue
        html_path = nb_path.with_suffix(".html")
        if not html_path.exists() or html_path.stat().st_mtime < nb_path.stat().st_mtime:
            todo.append((nb_path, html_path))
    if not todo:
        return []
    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True, embed_images=True)
    written = []
    for nb_path, html_path in todo:
        nb = nbformat.read(nb_path, as_version=4)
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": nb_path.stem}})
        tmp = html_path.with_suffix(".html.tmp")
        tmp.write_text(body, encoding="utf-8")
        os.replace(tmp, html_path)
        written.append(html_path)
    return written


def _embed_png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_index_html(phases: dict, summary: pd.DataFrame | None, headline_png: Path | None,
                      created: str, source: str) -> str:
    """The index page. phases: {phase: {"title": str, "sections": [(section, title, href|None,
    error|None)]}}. Every name and value is HTML-escaped."""
    e = html.escape
    parts = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
             "<title>Critical batch size in RLVR: reports</title>",
             "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;"
             "padding:0 1em;color:#222}table{border-collapse:collapse;font-size:14px}"
             "th,td{border-bottom:1px solid #ddd;padding:4px 10px;text-align:right}"
             "th:first-child,td:first-child{text-align:left}.fail{color:#b00}"
             "img{max-width:100%}h2{margin-top:1.6em}.muted{color:#666;font-size:13px}</style>",
             "</head><body>",
             "<h1>Critical batch size in RLVR</h1>",
             f"<p class='muted'>Source: {e(source)} &middot; built {e(created)}</p>"]
    if summary is not None and len(summary):
        parts.append("<h2>B_noise across phases</h2>")
        parts.append(summary.to_html(index=False, escape=True, na_rep="–", border=0))
    if headline_png is not None and headline_png.exists():
        parts.append(f"<p><img alt='headline figure' src='{_embed_png(headline_png)}'></p>")
    parts.append("<h2>Reports by phase</h2>")
    for phase, info in phases.items():
        parts.append(f"<h3>{e(phase)}: {e(info.get('title', ''))}</h3><ul>")
        for _section, title, href, error in info["sections"]:
            if error:
                parts.append(f"<li class='fail'>{e(title)}: failed &mdash; {e(error)}</li>")
            elif href:
                parts.append(f"<li><a href='{e(href)}'>{e(title)}</a></li>")
            else:
                parts.append(f"<li class='muted'>{e(title)}: not built</li>")
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_index(out_dir: str | Path, params_dir: str | Path = "params") -> Path:
    """Write <OUT>/index.html linking every phase's reports, with the cross-phase summary."""
    out_dir = Path(out_dir)
    phases = {}
    for path in sorted(Path(params_dir).glob("*.yaml")):
        phase = path.stem
        if not (out_dir / phase).is_dir():
            continue
        try:
            params = validate_phase_params(yaml.safe_load(path.read_text()), str(path))
            title, sections = params["title"], [s for s in SECTIONS if s in params["sections"]]
        except (ParamsError, yaml.YAMLError):
            title, sections = "(params file invalid)", ["01_load_runs"]
        phases[phase] = {"title": title, "sections": [
            _section_entry(out_dir, phase, s, SECTIONS[s]) for s in sections]}
    if (out_dir / "summary").is_dir():
        phases["summary"] = {"title": "all phases", "sections": [
            _section_entry(out_dir, "summary", SUMMARY_SECTION, "Cross-phase summary")]}
    summary_csv = out_dir / "summary" / "tables" / "cbs_summary.csv"
    summary = pd.read_csv(summary_csv, keep_default_na=False) if summary_csv.exists() else None
    source = ""
    manifest = out_dir / "data" / "manifest.json"
    if manifest.exists():
        try:
            source = str(json.loads(manifest.read_text()).get("source", ""))
        except (ValueError, OSError):
            source = "(unreadable manifest)"
    created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = render_index_html(phases, summary, out_dir / "summary" / "figures" / "headline.png",
                             created, source)
    target = out_dir / "index.html"
    tmp = target.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, target)
    return target


def _section_entry(out_dir: Path, phase: str, section: str, title: str):
    html_path = out_dir / phase / f"{section}.html"
    error_path = out_dir / phase / f"{section}.error.txt"
    error = error_path.read_text().strip() if error_path.exists() else None
    if error:
        error = re.sub(r"^FAILED: ", "", error)
    href = f"{phase}/{section}.html" if html_path.exists() else None
    return (section, title, href, error)


def report_main(argv: list[str]) -> int:
    """`python cbs_helpers.py plan|execute|html ...`: the report steps the Makefile calls."""
    import argparse

    parser = argparse.ArgumentParser(prog="cbs_helpers.py")
    sub = parser.add_subparsers(dest="command", required=True)
    p_plan = sub.add_parser("plan", help="print the make rules of the report")
    p_plan.add_argument("--params-dir", default="params")
    p_plan.add_argument("--notebooks-dir", default="notebooks")
    p_plan.add_argument("--out", default="outputs")
    p_plan.add_argument("--n-bootstrap", type=int, default=1000)
    p_exec = sub.add_parser("execute", help="run one section notebook for one phase")
    p_exec.add_argument("notebook")
    p_exec.add_argument("--phase", required=True)
    p_exec.add_argument("--out", default="outputs")
    p_exec.add_argument("--params-dir", default="params")
    p_exec.add_argument("--n-bootstrap", type=int, default=1000)
    p_fail = sub.add_parser("failed", help="record a failed notebook execution (used by make)")
    p_fail.add_argument("target")
    p_fail.add_argument("--notebook", required=True)
    p_fail.add_argument("--phase", required=True)
    p_html = sub.add_parser("html", help="convert executed notebooks to HTML and write the index")
    p_html.add_argument("--out", default="outputs")
    p_html.add_argument("--params-dir", default="params")
    args = parser.parse_args(argv)
    if args.command == "plan":
        sys.stdout.write(report_plan(args.params_dir, args.notebooks_dir, args.out, args.n_bootstrap))
        return 0
    if args.command == "execute":
        return run_notebook(args.notebook, args.phase, args.out, args.params_dir, args.n_bootstrap)
    if args.command == "failed":
        print(record_notebook_failure(args.target, args.notebook, args.phase), file=sys.stderr)
        return 1
    written = convert_reports(args.out)
    index = write_index(args.out, args.params_dir)
    print(f"html: {len(written)} report(s) converted; index at {index}")
    return 0
