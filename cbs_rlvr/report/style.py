"""The one figure style and the one save function (PDF + PNG + CSV), the palette, readable log
axes, and the small helpers every plot shares (missing data said on the axes, intervals that
never break an error bar, fits drawn as curves).

Every plot in the report layer is built on these, without pyplot: nothing global stays open.
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

    def to_png_with_alt(fig: Figure):
        # the image's alt text rides in the output's metadata to the report's <img alt>
        w, h = fig.get_size_inches()
        return to_png(fig), {"alt": describe_figure(fig), "wide": bool(w / max(h, 1e-9) > 1.8)}

    shell.display_formatter.formatters["image/png"].for_type(Figure, to_png_with_alt)


def describe_figure(fig: Figure) -> str:
    """The alt text of a figure (words.sentences.figure_alt) from its title and each panel's
    title, axis labels and scales: what each panel plots against what."""
    from ..words.sentences import figure_alt

    title = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) is not None else ""
    panels = [(ax.get_title(), ax.get_xlabel(), ax.get_ylabel(), ax.get_xscale() == "log", ax.get_yscale() == "log")
              for ax in fig.axes if ax.get_visible() and ax.axison]
    return figure_alt(title, panels, getattr(fig, "_cbs_alt_notes", ()))


def forecasts_to_draw(forecast: pd.DataFrame | None, threshold: float | None = None) -> pd.DataFrame:
    """The rows of forecast.csv a figure draws: running runs' crossings to come (not observed, with
    a forecast step), at one threshold where given."""
    if forecast is None or not len(forecast):
        return pd.DataFrame(columns=["run_id", "threshold", "n_prompts", "n_rollouts", "observed", "state", "step",
                                     "step_lo", "step_hi"])
    f = forecast[~forecast["observed"].astype(bool) & np.isfinite(_floats(forecast["step"]))]
    if "state" in f:
        f = f[f["state"].astype(str) == "running"]
    return f if threshold is None else f[np.isclose(_floats(f["threshold"]), float(threshold))]


def draw_forecasts(ax, x, y, lo, hi, color) -> np.ndarray:
    """Forecast crossings, never to be taken for measured ones: an open circle at the forecast and
    a bar over its 90% interval, under the measured points. Returns which it drew (a mask)."""
    x, y, lo, hi = (np.asarray(v, dtype=float) for v in (x, y, lo, hi))
    ok = np.isfinite(x) & np.isfinite(y) & (y > 0)
    if ok.any():
        ax.vlines(x[ok], np.where(np.isfinite(lo[ok]), lo[ok], y[ok]), np.where(np.isfinite(hi[ok]), hi[ok], y[ok]),
                  colors=[color], lw=3.5, alpha=0.45, zorder=2)
        ax.scatter(x[ok], y[ok], marker="o", facecolors="white", edgecolors=[color], linewidths=1.3, s=30, zorder=3)
    return ok


def forecast_legend_handle():
    """The legend's entry for draw_forecasts' marks (bar and open circle together)."""
    return (matplotlib.lines.Line2D([], [], ls="", marker="|", ms=11, mew=3.5, color="0.3", alpha=0.45),
            matplotlib.lines.Line2D([], [], ls="", marker="o", mfc="white", mec="0.3", mew=1.3, ms=5.5))


def mark_forecasts(fig: Figure, drawn_run_ids) -> bool:
    """Name the drawn forecasts (the run id of each) in the figure's alt text (describe_figure reads
    it); whether there were any."""
    from ..words.early import forecast_alt

    ids = [str(i) for i in drawn_run_ids]
    if ids:
        fig._cbs_alt_notes = [forecast_alt(len(set(ids)), len(ids))]
    return bool(ids)


def finish_legend(fig: Figure, handles: list, labels: list, drawn_run_ids, title: str | None = None) -> Figure:
    """The figure's one legend below its axes (three columns), with the forecasts' entry where any
    was drawn (mark_forecasts), and its title."""
    from ..words.early import FORECAST_LABEL

    if mark_forecasts(fig, drawn_run_ids):
        handles, labels = [*handles, forecast_legend_handle()], [*labels, FORECAST_LABEL]
    fig.legend(handles, labels, loc="outside lower center", ncol=3)
    if title:
        fig.suptitle(title)
    return fig


def fan_out(x, k: int, n: int, step: float = 0.07):
    """x (on a log axis) moved by a small factor for the k-th of n series, so that markers of a
    run that never reached several targets (one lower bound per target, all at its last step) sit
    side by side instead of on top of each other: x · 2^(step · (k - (n - 1) / 2))."""
    return np.asarray(x, dtype=float) * 2.0 ** (step * (k - (n - 1) / 2))


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
    up). binary=True (batch sizes) writes 16384 as 16K (x 1024) where it divides exactly, below
    2^20 only: 2^20 is '1.05M', never '1024K' (a reader reads K and M as powers of ten).
    `digits` significant digits at least (more for integers below 10^4)."""
    if not np.isfinite(x) or x <= 0:
        return ""
    if binary and 8192 <= x < 2 ** 20 and float(x).is_integer() and int(x) % 1024 == 0:
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


def _accuracy_xlim(ax, x) -> None:
    """An accuracy axis at least 0.12 wide: one target (or a few close ones) alone would get
    ticks every 0.0005 around it."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) and x.max() - x.min() < 0.1:
        mid = (x.max() + x.min()) / 2
        ax.set_xlim(mid - 0.06, mid + 0.06)


def label_axes(ax, xlabel: str, ylabel: str, title: str) -> Figure:
    """A plot's axis labels and title, in one call; returns the plot's figure."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return ax.figure

