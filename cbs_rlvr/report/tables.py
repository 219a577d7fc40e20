"""Result tables for the paper and the reports: the cross-phase summary, estimates with their
intervals, censored values marked in pivots, the legends of statuses, states and flags, CSV and
LaTeX output. The words and number formats come from `cbs_rlvr.words`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..words.numbers import header, interval, mark_censored, reader_index, shape_label

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


def cbs_summary_table(summary_long: pd.DataFrame) -> pd.DataFrame:
    """The paper's cross-phase table: one row per (phase, target), B_noise with its 95% CI."""
    rows = summary_long.reindex(columns=SUMMARY_LONG_COLUMNS)
    num = {c: pd.to_numeric(rows[c], errors="coerce") for c in
           ("threshold", "B_noise", "B_noise_lo", "B_noise_hi", "S_min", "B_crit_20pct", "r2_log")}
    return pd.DataFrame({
        "phase": rows["phase"], "axis": rows["axis"], "task": rows["task"],
        "target accuracy": num["threshold"].map(lambda t: f"{t:g}"),
        "B_noise (samples) [95% interval]": [interval(b, lo, hi, decimals=0) for b, lo, hi in
                                             zip(num["B_noise"], num["B_noise_lo"], num["B_noise_hi"], strict=True)],
        "shape of S(B)": [shape_label(m, a) for m, a in zip(rows["model"], pd.to_numeric(rows["alpha"], errors="coerce"),
                                                            strict=True)],
        "fewest steps S_min": [interval(v, None, None, decimals=0) for v in num["S_min"]],
        # where it exists (alpha >= 1): the batch at which E(B) is 20% above its minimum
        "batch at 20% extra samples": [interval(v, None, None, decimals=0) for v in num["B_crit_20pct"]],
        "R² of log S": [interval(v, None, None, decimals=2) for v in num["r2_log"]],
        "runs (stopped early)": [f"{n} ({c})" for n, c in zip(rows["n_points"], rows["n_censored"], strict=True)],
        "fit": rows["status"],
    })


def with_intervals(table: pd.DataFrame, intervals: dict, keep=()) -> pd.DataFrame:
    """A table for reading: each estimate named in `intervals` (name -> decimals) shown as one
    column 'name [95% CI]' = 'v [lo, hi]' (words.interval) from its name, name_lo, name_hi columns.
    `keep`: columns shown as they are, the first before the intervals (the row's label, e.g.
    threshold), the rest after. Missing columns are empty, never an error."""
    t = table.reindex(columns=list(dict.fromkeys([*table.columns, *keep, *intervals,
                                                  *(f"{n}_{e}" for n in intervals for e in ("lo", "hi"))])))
    out = {}
    for col in keep[:1]:
        out[col] = t[col]
    for name, digits in intervals.items():
        v, lo, hi = (pd.to_numeric(t[c], errors="coerce") for c in (name, f"{name}_lo", f"{name}_hi"))
        out[f"{name} [95% CI]"] = [interval(a, b, c, decimals=digits) for a, b, c in zip(v, lo, hi, strict=True)]
    for col in keep[1:]:
        out[col] = t[col]
    return pd.DataFrame(out, index=t.index)


# ---------------------------------------------------------------------------------------------
# Censored values: lower bounds must not look like measurements
# ---------------------------------------------------------------------------------------------
def with_censored_marks(table: pd.DataFrame, columns, digits: int = 2, by: str = "censored") -> pd.DataFrame:
    """A per-run table with `columns` as text, a lower bound marked '≥' where the run never reached
    the target (`by`): the same value as in the pivot above it ('≥3.45'), never a bare 3.45."""
    out = table.copy()
    cens = out[by].astype(bool) if by in out else pd.Series(False, index=out.index)
    for col in columns:
        if col in out:
            out[col] = [mark_censored(v, c, digits) for v, c in zip(out[col], cens, strict=True)]
    return out


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

    shown = out.pivot(index=index, columns=columns, values=value).fillna("–")
    shown.index = reader_index(shown.index)
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


