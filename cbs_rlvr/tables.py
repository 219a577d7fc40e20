"""Result tables for the paper: the cross-phase summary, CI formatting, CSV and LaTeX output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

#: Column order of outputs/<phase>/tables/sb_eb.csv: design.md's contract first, extras last.
SB_EB_CSV_COLUMNS = ["run_name", "n_prompts", "n_rollouts", "total_batch", "threshold", "S_B",
                     "E_B", "censored", "run_id", "replicate", "n_eval", "n_nonfinite"]

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



