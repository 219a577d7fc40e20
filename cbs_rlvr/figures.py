"""The one figure style, the one save function (PDF + PNG + CSV), and every plot.

Each plot takes result tables and returns a matplotlib Figure (built without pyplot, so
nothing global stays open); none saves or shows.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.figure import Figure

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


def _ci_errorbar(ax, x, y, lo, hi, capsize: float = 2.5, **kw) -> None:
    """Points with their interval [lo, hi] as error bars; a missing bound draws no bar."""
    y, lo, hi = (np.asarray(v, dtype=float) for v in (y, lo, hi))
    yerr = np.vstack([y - lo, hi - y])
    ax.errorbar(x, y, yerr=np.where(np.isfinite(yerr), yerr, 0), capsize=capsize, **kw)


def plot_b_noise_vs_target(cbs_fit: pd.DataFrame, compare: pd.DataFrame | None = None,
                           compare_label: str = "seed method", title: str = "") -> Figure:
    """B_noise against the target accuracy, with 95% CIs; optionally a second method beside it."""
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    ok = cbs_fit[cbs_fit["status"].isin(["ok", "extrapolated"]) & np.isfinite(cbs_fit["B_noise"])]
    _ci_errorbar(ax, ok["threshold"], ok["B_noise"], ok["B_noise_lo"], ok["B_noise_hi"],
                 marker="o", color=PALETTE[0], capsize=3, label="this project (95% CI)")
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
        _ci_errorbar(ax, rows["threshold"], rows["B_noise"], rows["B_noise_lo"], rows["B_noise_hi"],
                     marker=markers[i % len(markers)], color=PALETTE[i % (len(PALETTE) - 1)],
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
            _ci_errorbar(ax_b, ph_axes["threshold"] + 0.003 * (i - 1), ph_axes["B_noise"],
                         ph_axes["B_noise_lo"], ph_axes["B_noise_hi"], color=c,
                         marker=markers[i % len(markers)],
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

    c = comparison.sort_values("threshold")
    _ci_errorbar(ax, c["threshold"], c["B_noise"], c["B_noise_lo"], c["B_noise_hi"], marker="o",
                 color=PALETTE[0], label="B_noise fitted from S(B)")
    ok = c[c["status"] == "ok"]
    _ci_errorbar(ax, ok["threshold"] + 0.004, ok["B_simple"], ok["B_simple_lo"], ok["B_simple_hi"],
                 marker="s", color=PALETTE[1], label="B_simple from actor/grad_norm (post hoc)")
    if at_target is not None and len(at_target):
        med = at_target.groupby("threshold")["B_simple_ema"].agg(
            med="median", lo=lambda v: np.quantile(v, 0.1), hi=lambda v: np.quantile(v, 0.9))
        _ci_errorbar(ax, med.index.to_numpy() - 0.004, med["med"], med["lo"], med["hi"],
                     marker="D", color=PALETTE[2], label="logged B_simple at the crossing (median, 10-90%)")
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



