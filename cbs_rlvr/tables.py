"""Result tables for the paper: the cross-phase summary, CI formatting, CSV and LaTeX output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

#: Column order of outputs/<phase>/tables/sb_eb.csv: design.md's contract first, extras last.
SB_EB_CSV_COLUMNS = ["run_name", "n_prompts", "n_rollouts", "total_batch", "threshold", "S_B",
                     "E_B", "censored", "run_id", "replicate", "n_eval", "n_nonfinite"]

# ---------------------------------------------------------------------------------------------
# What statuses, states and flags mean, in plain language (shown beside every table that has them)
# ---------------------------------------------------------------------------------------------
#: Status of a fit (cbs_fit.csv, two_axis_fit.csv, the post-hoc B_simple): one of these four.
STATUS_MEANINGS = {
    "ok": "fitted: the value and its interval can be used",
    "extrapolated": "fitted, but B_noise rests on the fitted form beyond the runs (it lies outside the "
                    "batch sizes that reached the target, or S_min was not approached: S at the largest "
                    "batch is still 1.5 S_min or more); to be confirmed by runs at batch sizes around it",
    "insufficient": "not fitted: too few batch sizes (or configurations) reach the target; more "
                    "batch sizes, or longer runs, are needed",
    "failed": "not fitted: the runs do not determine the value (S flat in B, or S falling like "
              "1/B throughout, or a fit that did not converge); the reason says which",
}
#: Run states (runs.parquet `state`), as the sources report them.
STATE_MEANINGS = {
    "finished": "the run ended normally",
    "failed": "the run ended with an error (non-zero exit code); its history up to then is used",
    "crashed": "the run stopped without an end record (killed, out of memory, or a W&B offline "
               "file still being written); its history up to then is used",
    "running": "the run was still running when the data were read; its history so far is used",
    "killed": "the run was stopped from outside (or preempted); its history up to then is used",
    "unknown": "the source gave no state",
}
#: Run flags (runs.parquet `flags`: ';'-separated, some as `name:count`). {n} is the count.
FLAG_MEANINGS = {
    "config_name_mismatch": "the run config's batch sizes differ from its name; the config's are used",
    "nonfinite": "{n} logged value(s) were not finite numbers and are ignored",
    "non_numeric": "{n} logged value(s) were not numbers (text) and are ignored",
    "duplicate_steps": "{n} logged row(s) repeated an earlier step (a resumed run); the last value "
                       "of each step is kept",
    "rows_without_step": "{n} logged row(s) had no step number and are ignored",
    "step_restart": "the step counter went back (a restart from a checkpoint); where steps overlap "
                    "the later values are kept",
    "percent_accuracy": "accuracy was logged in percent (0-100) as a whole series and is "
                        "divided by 100",
    "fractional_steps": "{n} logged row(s) had a fractional step number (e.g. 1.5) and are ignored",
    "negative_steps": "{n} logged row(s) had a negative step number and are ignored (steps count "
                      "from 0)",
    "accuracy_below_0": "{n} accuracy value(s) below 0 are impossible and are ignored",
    "accuracy_above_1": "{n} accuracy value(s) above 1 (in a series not logged in percent) are "
                        "impossible and are ignored",
    "segments": "the run was resumed: {n} offline files are stitched into one run",
    "truncated": "the offline file ends inside a record (a job killed while writing); it is read "
                 "up to its last whole record",
    "bad_records": "{n} record(s) of the offline file could not be decoded and are skipped",
    "stale": "the W&B server could not serve this run; the previous snapshot's data are kept",
    "history_incomplete": "the W&B server sampled this run's history: {n} logged value(s) could not "
                          "be fetched; the values fetched are used",
    "name_whitespace": "the run name had spaces or a line break around it, removed",
    "name_unprintable": "the run name held line breaks or control characters, shown as \\n, \\x..",
    "resumed": "the run crashed and was resumed from a checkpoint {n} time(s) as new W&B runs of the "
               "same name; they are stitched into this one run at the checkpoint steps",
    "resume_gap": "{n} step(s) are missing between a crashed run's last logged step and the "
                  "checkpoint its restart resumed from",
    "resume_config_changed": "{n} config value(s) (other than batch size, learning rate and updates "
                             "per step) differ between the stitched pieces of this run",
}


def explain_status(status: str) -> str:
    """The plain-language meaning of a fit status (STATUS_MEANINGS)."""
    return STATUS_MEANINGS.get(str(status), f"undocumented status {status!r}")


def explain_flags(flags) -> str:
    """'nonfinite:3;percent_accuracy' -> '3 logged value(s) were not finite numbers and are
    ignored; accuracy was logged in percent (0-100) and is divided by 100'. '' for no flags."""
    if flags is None or (not isinstance(flags, str) and pd.isna(flags)):
        return ""
    parts = []
    for flag in filter(None, (f.strip() for f in str(flags).split(";"))):
        name, _, count = flag.partition(":")
        meaning = FLAG_MEANINGS.get(name)
        parts.append(meaning.format(n=count or "some") if meaning else f"{flag} (undocumented flag)")
    return "; ".join(parts)


def _legend(present, meanings: dict, key: str) -> pd.DataFrame:
    names = []
    for item in present:
        name = str(item).partition(":")[0] if key == "flag" else str(item)
        if name and name not in names:
            names.append(name)
    order = [k for k in meanings if k in names] + [n for n in names if n not in meanings]
    return pd.DataFrame({key: order, "meaning": [
        meanings.get(n, f"undocumented {key}").replace("{n}", "N") for n in order]})


def legend_markdown(legend: pd.DataFrame) -> str:
    """A legend table (status_legend, state_legend, flag_legend) as a Markdown list (after a
    blank line, so 'Status:' + legend_markdown(...) renders as a heading line and a list), for
    a notebook to display beside the table it explains ('' when there is nothing to explain)."""
    if legend is None or legend.empty:
        return ""
    key = legend.columns[0]
    return "\n\n" + "\n".join(f"- `{row[key]}`: {row['meaning']}" for _, row in legend.iterrows())


def status_legend(statuses) -> pd.DataFrame:
    """(status, meaning) for the fit statuses present, in the documented order."""
    return _legend(pd.Series(list(statuses), dtype=object).dropna(), STATUS_MEANINGS, "status")


def state_legend(states) -> pd.DataFrame:
    """(state, meaning) for the run states present."""
    return _legend(pd.Series(list(states), dtype=object).dropna(), STATE_MEANINGS, "state")


def flag_legend(flags) -> pd.DataFrame:
    """(flag, meaning) for every flag present in a column of ';'-separated flag strings."""
    present = [f.strip() for v in pd.Series(list(flags), dtype=object).dropna()
               for f in str(v).split(";") if f.strip()]
    return _legend(present, FLAG_MEANINGS, "flag")


# ---------------------------------------------------------------------------------------------
# Claims a heading or title may make: computed from the results, never assumed
# ---------------------------------------------------------------------------------------------
def _floats(values) -> np.ndarray:
    """1-D float array of any sequence; pandas nullable values (pd.NA) and text become NaN."""
    return pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(dtype=float)


#: What `trend_claim` can conclude.
TRENDS = ("grows", "falls", "flat", "not monotone", "unclear", "undetermined")


def _ordered_points(x, estimate, lo, hi):
    """The points with an x and an estimate, in order of x, and whether intervals were given."""
    x, e = _floats(x), _floats(estimate)
    ci_given = lo is not None and hi is not None
    lo = np.full(e.shape, np.nan) if lo is None else _floats(lo)
    hi = np.full(e.shape, np.nan) if hi is None else _floats(hi)
    keep = np.isfinite(x) & np.isfinite(e)
    order = np.argsort(x[keep], kind="stable")
    x, e, lo, hi = (v[keep][order] for v in (x, e, lo, hi))
    return x, e, lo, hi, ci_given


def _too_few_or_flat(x, e, quantity: str, along: str) -> dict:
    """trend_claim's answer when there is no direction to speak of ({} otherwise)."""
    if len(x) < 2:
        return {"claim": f"too few usable points to tell how {quantity} changes with {along}",
                "evidence": (f"{len(x)} usable point(s); two or more needed" if len(x) == 0 else
                             f"one usable point: {quantity} = {e[0]:.3g} at {x[0]:g}")}
    if (np.diff(e) == 0).all():
        return {"trend": "flat", "claim": f"{quantity} is the same at every point along {along}",
                "evidence": f"{quantity} = {e[0]:.3g} at all {len(x)} points from {x[0]:g} to {x[-1]:g}"}
    return {}


def trend_claim(x, estimate, lo=None, hi=None, quantity: str = "B_noise",
                along: str = "the target accuracy") -> dict:
    """What the data say about how `quantity` changes along `x`, as a claim with its evidence.

    For headings and titles that must not state more than the data show. Points with a
    missing x or estimate are left out; the rest are taken in order of x.
    - 'grows' / 'falls': the estimate never moves against that direction from one point to the
      next, or (with intervals) only within the uncertainty (the two points' 95% intervals
      overlap) while the ends differ beyond it. With intervals, `significant` is True when the
      intervals at the two ends do not overlap, else the claim says the change is within the
      uncertainty; without intervals the claim is about the values.
    - 'flat': the same value everywhere.
    - 'not monotone': it moves against the overall direction somewhere, beyond the uncertainty
      where intervals are given (the evidence names the first such step).
    - 'unclear': with intervals, it moves both ways, every move within the uncertainty.
    - 'undetermined': fewer than two usable points.
    Returns {trend, significant, claim (a sentence for a heading), evidence (numbers),
    n_points, first, last}.
    """
    x, e, lo, hi, ci_given = _ordered_points(x, estimate, lo, hi)
    out = {"trend": "undetermined", "significant": False, "n_points": int(len(x)),
           "first": float(e[0]) if len(e) else np.nan, "last": float(e[-1]) if len(e) else np.nan}
    early = _too_few_or_flat(x, e, quantity, along)
    if early:
        out.update(early)
        return out
    d = np.diff(e)

    def apart(i: int, j: int) -> bool:
        """The 95% intervals of points i and j do not overlap (False when unknown)."""
        if not np.isfinite([lo[i], hi[i], lo[j], hi[j]]).all():
            return False
        return bool(lo[j] > hi[i] or hi[j] < lo[i])

    up = e[-1] >= e[0]
    verb = "grows" if up else "falls"
    against = np.flatnonzero(d < 0 if up else d > 0)
    firm = [k for k in against if apart(k, k + 1)] if ci_given else list(against)
    ratio = e[-1] / e[0] if e[0] > 0 and e[-1] > 0 else np.nan
    span = f"from {e[0]:.3g} at {x[0]:g} to {e[-1]:.3g} at {x[-1]:g}" + (
        f" ({ratio:.2g}x)" if np.isfinite(ratio) else "")
    ends_apart = apart(0, len(e) - 1)
    ends = ("the 95% intervals at the two ends do not overlap" if ends_apart else
            "the 95% intervals at the two ends overlap"
            if np.isfinite([lo[0], hi[0], lo[-1], hi[-1]]).all() else "no intervals to tell it from noise")

    def step(k: int) -> str:
        return f"from {e[k]:.3g} at {x[k]:g} to {e[k + 1]:.3g} at {x[k + 1]:g}"

    if firm:
        out["trend"] = "not monotone"
        out["claim"] = f"{quantity} does not change monotonically with {along}"
        out["evidence"] = (f"{quantity} goes {span} but {'dips' if up else 'rises'} {step(firm[0])}"
                           + (", beyond the uncertainty" if ci_given else "")
                           + f"; it rises at {int((d > 0).sum())} and falls at "
                             f"{int((d < 0).sum())} of {len(d)} steps")
        return out
    if len(against) and not ends_apart:
        out["trend"] = "unclear"
        out["claim"] = f"no clear trend of {quantity} with {along}"
        out["evidence"] = (f"{quantity} goes {span}, rising at {int((d > 0).sum())} and falling at "
                           f"{int((d < 0).sum())} of {len(d)} steps, every change within the "
                           f"uncertainty; {ends}")
        return out
    out["trend"] = "grows" if up else "falls"
    out["significant"] = bool(ends_apart)
    if ends_apart or not ci_given:
        out["claim"] = f"{quantity} {verb} with {along}" + (" overall" if len(against) else "")
    else:
        out["claim"] = f"{quantity} {verb} with {along}, within its uncertainty"
    how = ("between the two points" if len(x) == 2 else "at every step" if (d != 0).all() and not len(against)
           else f"never {'falling' if up else 'rising'} from one point to the next" if not len(against)
           else f"with {_count(len(against), 'dip' if up else 'rise')} within the uncertainty "
                f"({step(int(against[0]))}{', ...' if len(against) > 1 else ''})")
    out["evidence"] = f"{quantity} {verb} {span}, {how}" + (f"; {ends}" if ci_given else "")
    return out


def _count(n: int, noun: str) -> str:
    return f"{'one' if n == 1 else n} {noun}{'' if n == 1 else 's'}"


def b_noise_trend(cbs_fit: pd.DataFrame) -> dict:
    """`trend_claim` of B_noise against the target accuracy over the usable fits (status ok or
    extrapolated): the heading of a B_noise-vs-target section, computed."""
    t = cbs_fit.reindex(columns=["threshold", "B_noise", "B_noise_lo", "B_noise_hi", "status"])
    t = t[t["status"].isin(["ok", "extrapolated"])]
    return trend_claim(t["threshold"], t["B_noise"], t["B_noise_lo"], t["B_noise_hi"])


RHO_PINNED_WIDTH = 0.5  # a rho interval this wide or wider (of the range 0..1) claims nothing


def rho_claim(two_axis_fit: pd.DataFrame) -> list[str]:
    """What the cross-axis fit says of rho (one rho for every target), in sentences, with what a
    second rollout is worth against a new prompt ((1 - rho) / (1 + rho): two rollouts of one prompt
    are worth 2 / (1 + rho) independent prompts); nothing where the interval leaves rho open (wider
    than RHO_PINNED_WIDTH) or the fit is poor. Empty when no target has an `ok` fit."""
    t = two_axis_fit.reindex(columns=["rho", "rho_lo", "rho_hi", "r2_log", "status"])
    ok = t[(t["status"] == "ok") & ~(_floats(t["r2_log"]) < 0)]
    if not len(ok):
        return []
    rho, lo, hi = float(ok["rho"].iloc[0]), float(ok["rho_lo"].min()), float(ok["rho_hi"].max())
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi - lo >= RHO_PINNED_WIDTH:
        return [f"The fit leaves rho open (rho = {rho:.2f}, 95% interval {lo:.2f} to {hi:.2f}): how a rollout "
                "compares to a prompt is not pinned down; runs at more rollout counts would pin it."]
    def worth(r):
        return (1 - r) / (1 + r)
    return [f"rho = {rho:.2f} (95% interval {lo:.2f} to {hi:.2f}): the second rollout of a prompt is worth "
            f"{worth(rho):.2f} of a new prompt ({worth(hi):.2f} to {worth(lo):.2f} within the interval), and each "
            "further rollout less."]


# ---------------------------------------------------------------------------------------------
# Tables for the paper
# ---------------------------------------------------------------------------------------------

SUMMARY_LONG_COLUMNS = ["phase", "axis", "task", "threshold", "B_noise", "B_noise_lo", "B_noise_hi",
                        "S_min", "E_min", "B_crit_20pct", "r2_log", "n_points", "n_censored",
                        "status", "reason", "model", "alpha", "alpha_lo", "alpha_hi",
                        "B_noise_mccandlish", "B_reached_min", "B_reached_max"]


def cbs_summary_long(fits: dict, params: dict) -> pd.DataFrame:
    """All phases' cbs_fit tables stacked, with the phase's axis and task (no phase: an empty
    table with the same columns)."""
    frames = []
    for phase, fit in fits.items():
        p = params[phase]
        task = p.get("prefer_source") or p["metric"]
        frames.append(fit.assign(phase=phase, axis=p["axis"], task=task))
    if not frames:
        return pd.DataFrame(columns=SUMMARY_LONG_COLUMNS)
    return pd.concat(frames, ignore_index=True).reindex(columns=SUMMARY_LONG_COLUMNS)


def shape_label(model, alpha) -> str:
    """The chosen form of S(B) in a table cell: '1/B (McCandlish)', 'B^-0.62' or '–'."""
    if model == "general" and alpha == alpha:
        return f"B^-{alpha:.2f}"
    if model == "mccandlish":
        return "1/B (McCandlish)"
    return "–"


def cbs_summary_table(summary_long: pd.DataFrame) -> pd.DataFrame:
    """The paper's cross-phase table: one row per (phase, target), B_noise with its 95% CI."""
    rows = summary_long.reindex(columns=SUMMARY_LONG_COLUMNS)
    num = {c: pd.to_numeric(rows[c], errors="coerce") for c in
           ("threshold", "B_noise", "B_noise_lo", "B_noise_hi", "S_min", "B_crit_20pct", "r2_log")}
    return pd.DataFrame({
        "phase": rows["phase"], "axis": rows["axis"], "task": rows["task"],
        "target accuracy": num["threshold"].map(lambda t: f"{t:g}"),
        "B_noise (samples) [95% interval]": [format_ci(b, lo, hi) for b, lo, hi in
                                             zip(num["B_noise"], num["B_noise_lo"], num["B_noise_hi"], strict=True)],
        "shape of S(B)": [shape_label(m, a) for m, a in zip(rows["model"], pd.to_numeric(rows["alpha"], errors="coerce"),
                                                            strict=True)],
        "fewest steps S_min": [format_ci(v, None, None) for v in num["S_min"]],
        # where it exists (alpha >= 1): the batch at which E(B) is 20% above its minimum
        "batch at 20% extra samples": [format_ci(v, None, None) for v in num["B_crit_20pct"]],
        "R² of log S": [format_ci(v, None, None, digits=2) for v in num["r2_log"]],
        "batch sizes (stopped early)": [f"{n} ({c})" for n, c in zip(rows["n_points"], rows["n_censored"], strict=True)],
        "fit": rows["status"],
    })


def format_ci(value: float, lo: float, hi: float, digits: int = 0) -> str:
    """'290 [250, 330]'; an open upper end as '290 [250, ∞)'; an en dash where the value is
    missing, the bare value where the interval is."""
    def num(x: float) -> str:
        return "∞" if np.isposinf(x) else "−∞" if np.isneginf(x) else f"{x:,.{digits}f}"

    if value is None or pd.isna(value) or not np.isfinite(value):
        return "–"
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return num(value)
    close = ")" if np.isposinf(hi) else "]"
    return f"{num(value)} [{num(lo)}, {num(hi)}{close}"


def dash_missing(table: pd.DataFrame) -> pd.DataFrame:
    """The table for reading: an en dash where a value is missing (not 'NaN'), numbers rounded
    with thousands separators (fmt.cell), plain names for the columns and the index
    (fmt.header: 'r2_log' -> 'R² of log S')."""
    from .fmt import cell, header

    out = table.astype(object).where(table.notna(), "–")
    for col in table.columns:  # numbers as a reader reads them: 31,552 not 31552.0, no e-notation
        if pd.api.types.is_numeric_dtype(table[col]) and not pd.api.types.is_bool_dtype(table[col]):
            out[col] = [cell(str(col), v) for v in table[col]]
    out = out.rename(columns=header)
    out.index = out.index.set_names([header(n) for n in out.index.names])
    return out


def with_intervals(table: pd.DataFrame, intervals: dict, keep=()) -> pd.DataFrame:
    """A table for reading: each estimate named in `intervals` (name -> decimals) shown as one
    column 'name [95% CI]' = 'v [lo, hi]' (format_ci) from its name, name_lo, name_hi columns.
    `keep`: columns shown as they are, the first before the intervals (the row's label, e.g.
    threshold), the rest after. Missing columns are empty, never an error."""
    t = table.reindex(columns=list(dict.fromkeys([*table.columns, *keep, *intervals,
                                                  *(f"{n}_{e}" for n in intervals for e in ("lo", "hi"))])))
    out = {}
    for col in keep[:1]:
        out[col] = t[col]
    for name, digits in intervals.items():
        v, lo, hi = (pd.to_numeric(t[c], errors="coerce") for c in (name, f"{name}_lo", f"{name}_hi"))
        out[f"{name} [95% CI]"] = [format_ci(a, b, c, digits) for a, b, c in zip(v, lo, hi, strict=True)]
    for col in keep[1:]:
        out[col] = t[col]
    return pd.DataFrame(out, index=t.index)


# ---------------------------------------------------------------------------------------------
# Censored values: lower bounds must not look like measurements
# ---------------------------------------------------------------------------------------------
def mark_censored(value: float, censored: bool, digits: int = 0) -> str:
    """A measured value as '70', a lower bound (a run that never reached the target: its last
    evaluated step) as '≥70', a missing one as '–'."""
    if value is None or pd.isna(value) or not np.isfinite(value):
        return "–"
    return f"{'≥' if censored else ''}{value:.{digits}f}"


def median_with_censoring(values, censored) -> tuple[float, bool]:
    """Median of replicate values where some are lower bounds, and whether it is one itself.

    Raising a censored value can move the median only if it sits at or below the median's
    rank (ranks floor(n/2)+1 and below, with censored values ranked first among ties); then the
    median is a lower bound. NaN values are ignored; (NaN, False) when none is left."""
    v = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(dtype=float)
    c = np.asarray(list(censored), dtype=bool) if len(v) else np.zeros(0, dtype=bool)
    keep = np.isfinite(v)
    v, c = v[keep], c[keep]
    if v.size == 0:
        return np.nan, False
    order = np.lexsort((~c, v))  # by value, censored first among equal values
    ranks_c = np.flatnonzero(c[order]) + 1
    return float(np.median(v)), bool((ranks_c <= v.size // 2 + 1).any())


def censored_pivot(table: pd.DataFrame, value: str = "S_B",
                   index=("total_batch", "n_prompts", "n_rollouts"), columns: str = "threshold",
                   digits: int = 0) -> pd.DataFrame:
    """A pivot (median over replicates) whose cells are text: '70' measured, '≥70' a lower
    bound (`median_with_censoring`), '–' missing. For the steps-to-target table of a phase
    (value='S_B'), samples ('E_B') or wall-clock hours ('time_to_target_h', digits=2)."""
    index = list(index)
    t = table.reindex(columns=list(dict.fromkeys([*table.columns, *index, columns, value,
                                                  "censored"])))
    t = t.dropna(subset=[*index, columns])
    t = t.assign(censored=t["censored"].astype("boolean").fillna(False).astype(bool))
    cells = []
    for key, sub in t.groupby([*index, columns], sort=True):
        med, lower = median_with_censoring(sub[value], sub["censored"])
        cells.append((*key, mark_censored(med, lower, digits)))
    out = pd.DataFrame(cells, columns=[*index, columns, value])
    if out.empty:
        return pd.DataFrame(index=pd.MultiIndex.from_arrays([[]] * len(index), names=index))
    from .fmt import header

    shown = out.pivot(index=index, columns=columns, values=value).fillna("–")
    shown.index = shown.index.set_names([header(n) for n in shown.index.names])
    shown.columns.name = header(columns)
    return shown


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





def mark_lr_winners(curves: pd.DataFrame, sb_eb: pd.DataFrame, winners: pd.DataFrame) -> pd.DataFrame:
    """The training curves with each run's `lr` and `winner` (its configuration won most often
    at its batch size: envelope.envelope_winners' `won_most`; True where only one was tried)."""
    per_run = sb_eb.drop_duplicates("run_id").set_index("run_id")
    out = curves.copy()
    out["configuration"] = out["run_id"].map(per_run["configuration"]) if "configuration" in per_run else ""
    out["lr"] = out["run_id"].map(per_run["lr"]) if "lr" in per_run else np.nan
    won = {(float(r.n_prompts), float(r.n_rollouts)): r.won_most for r in winners.itertuples()} if len(winners) else {}

    def is_winner(n_p, n_r, configuration) -> bool:
        w = won.get((float(n_p), float(n_r)))
        return not isinstance(w, str) or w == configuration  # nothing won there: every run stays solid

    out["winner"] = [is_winner(p, r, c) for p, r, c in
                     zip(out["n_prompts"], out["n_rollouts"], out["configuration"], strict=True)]
    return out


def lr_sweep_claims(sb_eb: pd.DataFrame, winners: pd.DataFrame) -> list[str]:
    """Caveats of a learning-rate sweep, computed: batch sizes whose best rate is the highest
    or lowest tried there (the optimum may lie beyond the grid), and batch sizes that tried
    one rate only (nothing was tuned there). Empty when no batch size tried two rates."""
    runs = sb_eb.drop_duplicates("run_id")
    if "lr" not in runs or not len(winners):
        return []
    tried = runs.groupby("total_batch")["lr"].apply(lambda v: sorted(set(pd.to_numeric(v, errors="coerce").dropna())))
    if not (tried.map(len) > 1).any():
        return []
    lines, edge_hi, edge_lo = [], [], []
    for w in winners.itertuples():
        rates = tried.get(w.total_batch, [])
        if len(rates) > 1 and np.isfinite(w.lr_won):
            if np.isclose(w.lr_won, rates[-1]):
                edge_hi.append(w.total_batch)
            elif np.isclose(w.lr_won, rates[0]):
                edge_lo.append(w.total_batch)
    one = [int(b) for b, r in tried.items() if len(r) == 1]
    fmt = lambda bs: ", ".join(f"{int(b):,}" for b in sorted(bs))  # noqa: E731
    if edge_hi:
        lines.append(f"At B = {fmt(edge_hi)} the best rate is the highest tried there: a higher one might be "
                     "faster still, so S(B) there is an upper bound on the tuned S(B).")
    if edge_lo:
        lines.append(f"At B = {fmt(edge_lo)} the best rate is the lowest tried there: a lower one might be "
                     "faster still.")
    if one:
        lines.append(f"B = {fmt(one)} tried one rate only: nothing was tuned there.")
    return lines


def noise_scale_answer(comparison: pd.DataFrame) -> str:
    """05's question answered in words: does the post-hoc noise scale B_simple predict the
    fitted B_noise? From the targets where both have an interval: 'yes' where the intervals
    overlap at most targets and the median ratio is within 1.5x, else 'no: about Nx too low
    (high)', with the evidence. '' when no target has both."""
    cols = ["status", "B_simple", "B_simple_lo", "B_simple_hi", "B_noise", "B_noise_lo", "B_noise_hi"]
    if not set(cols) <= set(comparison.columns):
        return ""
    c = comparison[(comparison["status"] == "ok")]
    c = c[np.isfinite(_floats(c["B_noise_lo"])) & np.isfinite(_floats(c["B_simple_lo"]))
          & (_floats(c["B_noise"]) > 0) & (_floats(c["B_simple"]) > 0)]
    if not len(c):
        return ""
    overlap = int(((c["B_simple_lo"] <= c["B_noise_hi"]) & (c["B_noise_lo"] <= c["B_simple_hi"])).sum())
    r = float(np.median(_floats(c["B_simple"]) / _floats(c["B_noise"])))
    evidence = (f"median ratio B_simple / B_noise {r:.2g}; the 95% intervals overlap at {overlap} of "
                f"{len(c)} target(s)")
    if overlap * 2 >= len(c) and 1 / 1.5 <= r <= 1.5:
        return f"Does the noise scale predict B_noise? Yes, within its uncertainty ({evidence})."
    if r < 1:
        size = f"about {1 / r:.2g}x too low" if r <= 1 / 1.5 else f"about {100 * (1 - r):.0f}% too low"
    else:
        size = f"about {r:.2g}x too high" if r >= 1.5 else f"about {100 * (r - 1):.0f}% too high"
    return f"Does the noise scale predict B_noise? No: it is {size} ({evidence})."
