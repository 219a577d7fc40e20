"""Measurement: the validation series of each run -> S(B) and E(B) at each target accuracy.

The eval series is smoothed monotonically (isotonic regression) and the crossing of the target
interpolated between evaluations; a run that never reaches the target is right-censored at its
last evaluation. The original notebook's first-crossing rule is kept as `method="first_crossing"`.
"""

from __future__ import annotations

import fnmatch

import numpy as np
import pandas as pd

SB_EB_COLUMNS = [
    "run_id", "run_name", "replicate", "n_prompts", "n_rollouts", "total_batch", "threshold",
    "S_B", "E_B", "censored", "n_eval", "n_nonfinite",
]



# ------------------------------------------------------------------------------------------
# Metric selection and eval series
# ------------------------------------------------------------------------------------------


def select_accuracy_metric(columns, metric: str | None = None, prefer: str | None = None) -> str:
    """The validation-accuracy key to analyse.

    metric: an exact key, or an fnmatch pattern such as 'val-core/*/reward/mean@*'
    (default: any 'val-core/*mean@*' key). prefer: a substring of the data source that picks
    one of several matches (case-insensitive, e.g. 'gsm8k', 'math'). Ambiguity is an error
    rather than a silent pick, because analysing the wrong task looks plausible.
    Raises ValueError listing the val-core columns present when nothing (unique) matches.
    """
    cols = [str(c) for c in (columns.columns if isinstance(columns, pd.DataFrame) else columns)]
    val_cols = sorted(c for c in cols if c.startswith("val-core/"))
    if metric is not None and metric in cols:
        return metric
    pattern = metric if metric is not None else "val-core/*mean@*"
    matches = sorted(c for c in cols if fnmatch.fnmatchcase(c, pattern))
    listing = ", ".join(val_cols) if val_cols else "(none)"
    if not matches:
        raise ValueError(f"no column matches {pattern!r}; val-core columns present: {listing}")
    if prefer:
        preferred = [c for c in matches if prefer.lower() in c.lower()]
        if not preferred:
            raise ValueError(
                f"no column matching {pattern!r} contains {prefer!r}; matches: "
                f"{', '.join(matches)}; val-core columns present: {listing}")
        matches = preferred
    if len(matches) > 1:
        raise ValueError(
            f"{len(matches)} columns match {pattern!r}"
            + (f" and {prefer!r}" if prefer else "")
            + f": {', '.join(matches)}; pass an exact key or a `prefer` substring")
    return matches[0]


def _clean_series(steps, acc) -> tuple[np.ndarray, np.ndarray, int]:
    """Finite (step, acc) pairs sorted by step, and how many pairs were non-finite."""
    s = np.asarray(steps, dtype=float).ravel()
    a = np.asarray(acc, dtype=float).ravel()
    if s.shape != a.shape:
        raise ValueError(f"steps and acc differ in length ({s.size} vs {a.size})")
    ok = np.isfinite(s) & np.isfinite(a)
    n_bad = int((~ok).sum())
    s, a = s[ok], a[ok]
    order = np.argsort(s, kind="stable")
    return s[order], a[order], n_bad


def eval_series(history: pd.DataFrame, metric: str) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """run_id -> (eval steps, accuracies, n_nonfinite) for one metric.

    A NaN in the wide history means "not logged at this step" (or a non-finite value the data
    layer already counted in the run's flags); +-inf values are counted here and ignored.
    """
    if metric not in history.columns or len(history) == 0:
        return {}
    acc = history[metric].to_numpy(dtype=float)
    logged = ~np.isnan(acc)
    codes, uniq = pd.factorize(history["run_id"])
    codes = codes[logged]
    steps = history["step"].to_numpy(dtype=float)[logged]
    acc = acc[logged]
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniq) + 1))
    out = {}
    for k, rid in enumerate(uniq):
        sel = order[bounds[k]:bounds[k + 1]]
        out[str(rid)] = _clean_series(steps[sel], acc[sel])
    return out


# ------------------------------------------------------------------------------------------
# Steps to target
# ------------------------------------------------------------------------------------------
def crossings(steps: np.ndarray, acc: np.ndarray, thresholds, method: str):
    """(S, censored) arrays over thresholds for one clean, step-sorted eval series."""
    from scipy import optimize

    thr = np.atleast_1d(np.asarray(thresholds, dtype=float))
    S = np.full(thr.shape, np.nan)
    cens = np.zeros(thr.shape, dtype=bool)
    n = len(steps)
    if n == 0:
        cens[:] = True
        return S, cens
    if method == "isotonic":
        fit = optimize.isotonic_regression(acc, increasing=True).x
        idx = np.searchsorted(fit, thr, side="left")  # first eval with smoothed acc >= thr
    elif method == "first_crossing":
        fit = acc
        above = acc[None, :] >= thr[:, None]
        idx = np.where(above.any(axis=1), above.argmax(axis=1), n)
    else:
        raise ValueError(f"method must be 'isotonic' or 'first_crossing', not {method!r}")
    for j, i in enumerate(idx):
        if i >= n:
            S[j], cens[j] = steps[-1], True
        elif i == 0 or method == "first_crossing":
            S[j] = steps[i]
        else:
            y0, y1 = fit[i - 1], fit[i]
            S[j] = steps[i - 1] + (thr[j] - y0) / (y1 - y0) * (steps[i] - steps[i - 1])
    return S, cens


def steps_to_target(steps, acc, threshold: float, method: str = "isotonic") -> tuple[float, bool]:
    """Optimizer steps for the validation accuracy to reach `threshold`.

    method 'isotonic': fit a non-decreasing curve to the eval series (pool-adjacent-violators,
    scipy.optimize.isotonic_regression), take the first eval whose smoothed accuracy is
    >= threshold and interpolate linearly between it and the previous eval. This removes the
    early bias of taking the first noisy eval above the target and the quantisation to the
    eval interval. method 'first_crossing': the seed notebook's rule (first raw eval step
    with acc >= threshold), kept for comparison.
    A run that never reaches the target is right-censored: S = its last eval step,
    censored=True. NaN/inf points are ignored (sb_eb_table reports how many).
    """
    s, a, _ = _clean_series(steps, acc)
    S, cens = crossings(s, a, [threshold], method)
    return float(S[0]), bool(cens[0])


def int_columns(df: pd.DataFrame, cols) -> pd.DataFrame:
    """Cast integral float columns (batch sizes) to nullable Int64 for readable tables."""
    for c in cols:
        if c in df.columns:
            v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float)
            if len(v) and np.isfinite(v).all() and (v == np.round(v)).all():
                df[c] = df[c].astype("Int64")
    return df


def run_meta(runs: pd.DataFrame) -> pd.DataFrame:
    """Per-run columns the tables need, with defaults for optional ones."""
    meta = pd.DataFrame({"run_id": runs["run_id"].astype(str).to_numpy()})
    meta["run_name"] = (runs["name"] if "name" in runs else runs["run_id"]).astype(str).to_numpy()
    for col, default in (("replicate", 0), ("phase", None), ("n_gpus", None)):
        meta[col] = runs[col].to_numpy() if col in runs else default
    for col in ("n_prompts", "n_rollouts", "total_batch"):
        meta[col] = pd.to_numeric(runs[col], errors="coerce").to_numpy(dtype=float) if col in runs else np.nan
    missing = meta["total_batch"].isna()
    meta.loc[missing, "total_batch"] = meta.loc[missing, "n_prompts"] * meta.loc[missing, "n_rollouts"]
    return meta


def sb_eb_table(runs: pd.DataFrame, history: pd.DataFrame, metric: str, thresholds,
                method: str = "isotonic") -> pd.DataFrame:
    """S(B) and E(B) = B S(B) per run and threshold; replicates stay separate rows.

    Columns: run_id, run_name, replicate, n_prompts, n_rollouts, total_batch, threshold, S_B,
    E_B, censored, n_eval, n_nonfinite, then phase, last_eval_step, method.
    Censored rows hold the last eval step (a lower bound). A run without any finite eval of
    `metric` gets S_B = NaN (the fit ignores it).
    """
    thr = [float(t) for t in np.atleast_1d(thresholds)]
    return sb_eb_from_series(run_meta(runs), eval_series(history, metric), thr, method)


def sb_eb_from_series(meta: pd.DataFrame, series: dict, thr: list, method: str) -> pd.DataFrame:
    """sb_eb_table from already extracted eval series (fit_phase reuses them)."""
    rows = []
    for m in meta.itertuples(index=False):
        s, a, n_bad = series.get(m.run_id, (np.array([]), np.array([]), 0))
        S, cens = crossings(s, a, thr, method)
        if len(s) == 0:
            cens[:] = False
        for t, sv, cv in zip(thr, S, cens, strict=True):
            rows.append((m.run_id, m.run_name, m.replicate, m.n_prompts, m.n_rollouts,
                         m.total_batch, t, sv, sv * m.total_batch, bool(cv), len(s), n_bad,
                         m.phase, s[-1] if len(s) else np.nan, method))
    cols = SB_EB_COLUMNS + ["phase", "last_eval_step", "method"]
    out = pd.DataFrame(rows, columns=cols)
    out = int_columns(out, ("n_prompts", "n_rollouts", "total_batch"))
    out["censored"] = out["censored"].astype(bool)
    return out



def phase_runs(runs_all: pd.DataFrame, history_all: pd.DataFrame, params: dict):
    """(runs, history, metric) of one phase: its runs in the snapshot, their history, and the
    validation-accuracy key its params select among the columns those runs logged."""
    phase = params["phase"]
    runs = runs_all[runs_all["phase"] == phase]
    if runs.empty:
        present = sorted(runs_all["phase"].dropna().astype(str).unique())
        raise ValueError(f"no runs of phase {phase!r} in the snapshot; phases present: {present}")
    history = history_all[history_all["run_id"].isin(runs["run_id"])]
    logged = [c for c in history.columns if history[c].notna().any()]
    metric = select_accuracy_metric(logged, params["metric"], params["prefer_source"])
    return runs, history, metric



