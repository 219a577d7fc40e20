"""The one figure style, the one save function (PDF + PNG + CSV), and every plot.

Each plot takes result tables and returns a matplotlib Figure (built without pyplot, so
nothing global stays open); none saves or shows. Every plot is total: empty or partial tables
give a figure that says what is missing, an interval never breaks an error bar, every log axis
shows at least two tick labels, and a title states only what the data show.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.figure import Figure

from .tables import b_noise_trend, format_ci, trend_claim
from .words import trend_title

# ---------------------------------------------------------------------------------------------
# Figure style and saving
# ---------------------------------------------------------------------------------------------

#: Okabe & Ito's colour-blind-safe palette (black last, it is kept for reference lines).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]


def setup_style() -> None:
    """The one matplotlib style of every figure in the reports and the paper, and the one
    table display: pandas shows every column and whole cells (no reason cut off with '...')."""
    for option, value in (("display.max_colwidth", None), ("display.max_columns", None),
                          ("display.width", 200)):
        pd.set_option(option, value)
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


def _plain_label(x: float, _pos=None, digits: int = 3, binary: bool = False) -> str:
    """A tick value as a short plain number: 0.05, 3, 96, 4096, 15K, 1.2M (K, M, G from 10^4
    up). binary=True (batch sizes) writes 16384 as 16K (x 1024) where it divides exactly.
    `digits` significant digits at least (more for integers below 10^4)."""
    if not np.isfinite(x) or x <= 0:
        return ""
    if binary and x >= 8192 and float(x).is_integer() and int(x) % 1024 == 0:
        return f"{int(x) // 1024}K"
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if x >= (10 * scale if suffix == "K" else scale):
            return f"{x / scale:.{digits}g}{suffix}"
    whole = int(np.floor(np.log10(x))) + 1 if x >= 1 else 0
    return f"{x:.{max(digits, whole)}g}"


class PlainLogFormatter(ticker.Formatter):
    """`_plain_label` with as many digits as the tick spacing needs to tell ticks apart."""

    def __init__(self, binary: bool = False):
        self.binary, self.digits = binary, 3

    def set_locs(self, locs):
        super().set_locs(locs)
        v = np.sort(np.asarray([x for x in locs if np.isfinite(x) and x > 0], dtype=float))
        self.digits = 3
        if len(v) >= 2:
            rel = float(np.min(np.diff(v) / v[1:]))
            if rel > 0:
                self.digits = int(min(12, max(3, np.ceil(-np.log10(rel)) + 1)))

    def __call__(self, x, pos=None):
        return _plain_label(x, pos, self.digits, self.binary)


def readable_log_ticks(vmin: float, vmax: float, base: int = 10, max_ticks: int = 8) -> np.ndarray:
    """Tick positions for a log axis over [vmin, vmax] that always give at least two labels.

    Takes the first set with at least three values inside the range (else two): powers of the
    base; then 1.5 x powers of two (base 2) or 1, 2, 5 x powers of ten; then 1..9 x powers of
    ten; then evenly spaced round numbers. A set with more than max_ticks values inside is
    thinned to every k-th. A degenerate range (vmin <= 0, vmin == vmax) is widened first.
    """
    lo, hi = sorted((float(vmin), float(vmax)))
    if not np.isfinite(hi) or hi <= 0:
        lo, hi = 1.0, 10.0
    if not np.isfinite(lo) or lo <= 0:
        lo = hi / 100.0
    if hi / lo < 1.0 + 1e-9:
        lo, hi = lo / 1.5, hi * 1.5
    k0, k1 = int(np.floor(np.log(lo) / np.log(base))) - 1, int(np.ceil(np.log(hi) / np.log(base))) + 1
    powers = float(base) ** np.arange(k0, k1 + 1)
    decades = 10.0 ** np.arange(np.floor(np.log10(lo)) - 1, np.ceil(np.log10(hi)) + 2)
    candidates = [powers]
    if base == 2:
        candidates.append(np.concatenate([powers, 1.5 * powers]))
    dense = np.outer(decades, np.arange(1, 10)).ravel()
    candidates += [np.outer(decades, (1, 2, 5)).ravel(), dense]
    for want in (3, 2):
        for c in candidates:
            inside = np.unique(c[(c >= lo * (1 - 1e-9)) & (c <= hi * (1 + 1e-9))])
            if len(inside) >= want:
                # within one decade the labels are long ('500K'): at most four, or they run together
                step = int(np.ceil(len(inside) / (min(max_ticks, 4) if c is dense else max_ticks)))
                return inside[::step]
    return np.asarray([v for v in ticker.MaxNLocator(nbins=4).tick_values(lo, hi) if lo <= v <= hi])


class ReadableLogLocator(ticker.Locator):
    """`readable_log_ticks` at draw time, over the axis's final view limits."""

    def __init__(self, base: int = 10):
        self.base = base

    def __call__(self):
        vmin, vmax = self.axis.get_view_interval()
        return self.tick_values(vmin, vmax)

    def tick_values(self, vmin, vmax):
        return readable_log_ticks(vmin, vmax, self.base)


def _set_log(ax, which: str, base: int) -> None:
    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = axis.get_data_interval()
    if np.isfinite([lo, hi]).all() and 0 < lo == hi:  # one value: widen it, do not let it warn
        (ax.set_xlim if which == "x" else ax.set_ylim)(lo / 1.5, hi * 1.5)
    (ax.set_xscale if which == "x" else ax.set_yscale)("log", base=base)
    axis.set_major_locator(ReadableLogLocator(base))
    axis.set_major_formatter(PlainLogFormatter(binary=base == 2))
    axis.set_minor_locator(ticker.LogLocator(base=10, subs=np.arange(2, 10), numticks=12)
                           if base == 10 else ticker.NullLocator())
    axis.set_minor_formatter(ticker.NullFormatter())


def set_log2_axis(ax, which: str = "x", lo: float | None = None, hi: float | None = None) -> None:
    """log2 axis (batch sizes) with plain labels (64, 128, ... 16K) at powers of two, or at
    1.5 x powers of two and round numbers where the range is narrow: at least two labels."""
    _set_log(ax, which, 2)
    if lo is not None and hi is not None:
        (ax.set_xlim if which == "x" else ax.set_ylim)(lo, hi)


def set_log_axis(ax, which: str = "y") -> None:
    """log10 axis with plain labels (10, 100, 1K, ...) at powers of ten, or at 1, 2, 5 x powers
    of ten, or denser, where the range is narrow: the axis never shows fewer than two labels."""
    _set_log(ax, which, 10)


def save_figure(fig: Figure, data: pd.DataFrame, out_dir: str | Path, name: str) -> dict:
    """Save a figure as PDF (vector, for the paper) and PNG (for the HTML), with its data as CSV.

    Returns the three paths. The PDF carries no creation date, so rebuilding gives the same file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"{name}.{ext}" for ext in ("pdf", "png", "csv")}
    fig.savefig(paths["png"])
    # Every save with a layout engine draws the figure twice (once to lay it out); the PNG has
    # laid it out, so the PDF reuses that layout and draws once: a third less figure time.
    fig.set_layout_engine("none")
    fig.savefig(paths["pdf"], metadata={"CreationDate": None})
    fig._cbs_saved_png = paths["png"].read_bytes()
    data.to_csv(paths["csv"], index=False)
    return paths


# ---------------------------------------------------------------------------------------------
# Plots. Each takes result tables and returns a Figure; none saves or shows.
# ---------------------------------------------------------------------------------------------

def _fit_curve(B, S_min, B_noise, alpha=1.0):
    return S_min * (1.0 + (B_noise / B) ** alpha)


def _fit_alpha(f) -> float:
    """The exponent of a cbs_fit row's chosen form (1 unless the data chose the general form)."""
    a = float(pd.to_numeric(f.get("alpha", np.nan), errors="coerce"))
    return a if str(f.get("model", "")) == "general" and np.isfinite(a) else 1.0


def _frame(df: pd.DataFrame | None, cols) -> pd.DataFrame:
    """df with at least the columns cols (missing ones empty), so a plot never KeyErrors."""
    df = pd.DataFrame() if df is None else df
    return df.reindex(columns=list(dict.fromkeys([*df.columns, *cols])))


def _floats(values) -> np.ndarray:
    return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=float)


def _float_columns(df: pd.DataFrame, cols) -> pd.DataFrame:
    return pd.DataFrame({c: _floats(df[c]) for c in cols}, index=df.index)


def _positive(values) -> bool:
    v = _floats(values)
    return bool((np.isfinite(v) & (v > 0)).any())


def _no_data(ax, text: str, which: str = "xy") -> None:
    """A note in the middle of an empty panel (the panel stays, the reader sees why); its
    axes (`which`: not a y axis shared with a panel that has data) lose their scales and
    ticks, which would only number nothing."""
    for w in which:
        (ax.set_xscale if w == "x" else ax.set_yscale)("linear")
        (ax.set_xticks if w == "x" else ax.set_yticks)([])
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.35",
            fontsize=9, wrap=True)


def _batch_limits(b) -> tuple[float, float]:
    b = _floats(b)
    b = b[np.isfinite(b) & (b > 0)]
    if b.size == 0:
        return 1.0, 2.0
    return 2 ** (np.floor(np.log2(b.min())) - 0.5), 2 ** (np.ceil(np.log2(b.max())) + 0.5)


def _usable_fits(fit: pd.DataFrame, est: str = "B_noise") -> pd.DataFrame:
    fit = _frame(fit, ["threshold", est, f"{est}_lo", f"{est}_hi", "status"])
    keep = fit["status"].isin(["ok", "extrapolated"]) & np.isfinite(_floats(fit[est]))
    return fit[keep].sort_values("threshold")


def unbounded_as_open(fit: pd.DataFrame, factor: float = 100.0) -> pd.DataFrame:
    """A cbs_fit table whose B_noise interval ends beyond `factor` times the largest batch that
    reached the target (or below it divided by factor) are open (inf / 0): no bound from these
    runs, drawn as an arrow, never stretching the axis."""
    fit = fit.copy()
    if "B_reached_max" in fit.columns:
        top, bottom = _floats(fit["B_reached_max"]), _floats(fit["B_reached_min"])
        hi, lo = _floats(fit["B_noise_hi"]), _floats(fit["B_noise_lo"])
        fit["B_noise_hi"] = np.where(np.isfinite(top) & (hi > factor * top), np.inf, hi)
        fit["B_noise_lo"] = np.where(np.isfinite(bottom) & (lo < bottom / factor), 0.0, lo)
    return fit


def _ci_errorbar(ax, x, y, lo, hi, capsize: float = 2.5, positive: bool = True, **kw) -> None:
    """Points with their interval [lo, hi] as error bars, whatever the bounds hold: a missing
    bound draws no bar, a bound on the wrong side of the point is taken as the point (the bar
    can never be negative), and an open bound (hi = inf; lo <= 0 for a positive quantity on a
    log axis) is an arrow."""
    x, y, lo, hi = (_floats(v) for v in (x, y, lo, hi))
    keep = np.isfinite(x) & np.isfinite(y)
    x, y, lo, hi = x[keep], y[keep], lo[keep], hi[keep]
    lo = np.where(np.isnan(lo), y, np.minimum(lo, y))
    hi = np.where(np.isnan(hi), y, np.maximum(hi, y))
    open_lo = np.isneginf(lo) | (positive & (lo <= 0))
    open_hi = np.isposinf(hi)
    yerr = np.vstack([np.where(open_lo, 0.0, y - lo), np.where(open_hi, 0.0, hi - y)])
    ax.errorbar(x, y, yerr=yerr, capsize=capsize, **kw)
    for mask, dy in ((open_hi, 16), (open_lo, -16)):
        for xi, yi in zip(x[mask], y[mask], strict=True):
            ax.annotate("", xy=(xi, yi), xytext=(0, dy), textcoords="offset points",
                        arrowprops={"arrowstyle": "<-", "color": kw.get("color", "0.3"), "lw": 1})


def plot_sb_eb(sb_eb: pd.DataFrame, cbs_fit: pd.DataFrame, title: str = "",
               batch_col: str = "total_batch") -> Figure:
    """S(B) and E(B) per threshold: measured points, censored runs as lower bounds (open
    triangles), the chosen fit (McCandlish, or S_min (1 + (B_noise/B)^alpha) where the data
    reject alpha = 1) with its 95% band over B_noise, and B_noise marked (diamond: there
    S = 2 S_min)."""
    fig = Figure(figsize=(10.5, 4.6))
    ax_s, ax_e = fig.subplots(1, 2)
    sb = _frame(sb_eb, [batch_col, "threshold", "S_B", "E_B", "censored"])
    fits = unbounded_as_open(_usable_fits(cbs_fit)).drop_duplicates("threshold").set_index("threshold")
    colors = threshold_colors(sb["threshold"].dropna().unique())
    lo, hi = _batch_limits(sb[batch_col])
    grid = np.geomspace(lo, hi, 200)
    for t, rows in sb.groupby("threshold"):
        c = colors[t]
        cen = rows["censored"].fillna(False).astype(bool)
        for ax, col in ((ax_s, "S_B"), (ax_e, "E_B")):
            ax.scatter(_floats(rows.loc[~cen, batch_col]), _floats(rows.loc[~cen, col]), color=c, s=22, zorder=3)
            ax.scatter(_floats(rows.loc[cen, batch_col]), _floats(rows.loc[cen, col]), marker="^",
                       facecolors="none", edgecolors=c, s=30, zorder=3)
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
            label += f": B_noise = {format_ci(f['B_noise'], f['B_noise_lo'], f['B_noise_hi'])}"
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
    fig.legend(handles, labels, loc="outside lower center", ncol=3)
    if title:
        fig.suptitle(title)
    return fig


def _accuracy_xlim(ax, x) -> None:
    """An accuracy axis at least 0.12 wide: one target (or a few close ones) alone would get
    ticks every 0.0005 around it."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) and x.max() - x.min() < 0.1:
        mid = (x.max() + x.min()) / 2
        ax.set_xlim(mid - 0.06, mid + 0.06)


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
        set_log2_axis(ax, "y")
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
    ax.set_xlabel("target validation accuracy")
    ax.set_ylabel("B_noise (samples per step)")
    ax.set_title(title or (trend_title(trend) if trend else b_noise_trend(cbs_fit)["claim"]))
    return fig


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
        set_log_axis(ax, "x")
        set_log_axis(ax, "y")
        ax.legend(loc="upper right", fontsize=8)
    else:
        _no_data(ax, "no run with both excesses positive at a target with a usable fit")
    ax.set_xlabel("E/E_min − 1 (extra samples)")
    ax.set_ylabel("S/S_min − 1 (extra steps)")
    ax.set_title(title or "steps-samples trade-off")
    return fig


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
        set_log2_axis(ax, "y")
        fig.legend(loc="outside right center", fontsize=8)
    else:
        _no_data(ax, "no phase has a target with a usable fit")
    ax.set_xlabel("target validation accuracy")
    ax.set_ylabel("B_noise (samples per step)")
    ax.set_title(title or "B_noise (the batch where S = 2 S_min) by phase and target")
    return fig


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
            from .fit.crossaxis import effective_log_batch

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
        set_log2_axis(ax, "y")
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
        set_log2_axis(ax, "y")
        fig.legend(loc="outside lower center", fontsize=8, ncol=2)  # never over the points
        _accuracy_xlim(ax, _floats(c["threshold"]))
    else:
        _no_data(ax, "neither a fitted B_noise nor a noise scale at any target")
    ax.set_xlabel("target validation accuracy")
    ax.set_ylabel("batch size (samples per step)")
    ax.set_title(title or "noise scale B_simple vs fitted B_noise")
    return fig


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
