"""Measurement: the validation series of each run -> S(B) and E(B) at each target accuracy.

The eval series is smoothed monotonically (isotonic regression) and the crossing of the target
interpolated between evaluations; a run that never reaches the target is right-censored at its
last evaluation. The original notebook's first-crossing rule is kept as `method="first_crossing"`.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from ..data.history import is_accuracy_key
from ..data.runs import LR_KEY
from ..data.select import (
    DEFAULT_METAPARAMETERS,
    configuration_labels,
    metaparameter_values,
    select_runs,
)
from ..params import load_phase_params
from .envelope import in_envelope

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


def _int_or_nan(values) -> np.ndarray:
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def run_meta(runs: pd.DataFrame, metaparameters=DEFAULT_METAPARAMETERS) -> pd.DataFrame:
    """Per-run columns the tables need, with defaults for optional ones.

    configuration: the run's metaparameter values (`metaparameters`, by default the learning
    rate) as a label; runs at one (n_prompts, n_rollouts) with different labels are different
    configurations (the envelope picks the best), with the same label replicates.
    updates_per_step: optimizer updates per rollout step (NaN when unknown).
    """
    meta = pd.DataFrame({"run_id": runs["run_id"].astype(str).to_numpy()})
    meta["run_name"] = (runs["name"] if "name" in runs else runs["run_id"]).astype(str).to_numpy()
    for col, default in (("replicate", 0), ("phase", None), ("n_gpus", None)):
        meta[col] = runs[col].to_numpy() if col in runs else default
    for col in ("n_prompts", "n_rollouts", "total_batch", "updates_per_step", "gen_batch_size", "lr"):
        meta[col] = _int_or_nan(runs[col]) if col in runs else np.nan
    missing = meta["total_batch"].isna()
    meta.loc[missing, "total_batch"] = meta.loc[missing, "n_prompts"] * meta.loc[missing, "n_rollouts"]
    labels = configuration_labels(runs.reset_index(drop=True), list(metaparameters or ()))
    meta["configuration"] = labels.to_numpy()
    if "lr" not in runs and len(runs):  # an analysis frame without the snapshot's lr column
        values = metaparameter_values(runs.reset_index(drop=True), [LR_KEY])["lr"]
        meta["lr"] = _int_or_nan(values)
    return meta


def sb_eb_table(runs: pd.DataFrame, history: pd.DataFrame, metric: str, thresholds,
                method: str = "isotonic", metaparameters=DEFAULT_METAPARAMETERS) -> pd.DataFrame:
    """S(B) and E(B) = B S(B) per run and threshold; replicates stay separate rows.

    Columns: run_id, run_name, replicate, n_prompts, n_rollouts, total_batch, threshold, S_B,
    E_B, censored, n_eval, n_nonfinite, then phase, last_eval_step, method, configuration, lr,
    updates_per_step, S_updates (S in optimizer updates: S_B x updates_per_step), in_envelope
    (the run belongs to the best configuration at its batch size and target, see envelope.py).
    S_B counts rollout steps (verl's global steps); E_B trained samples (B per rollout step).
    Censored rows hold the last eval step (a lower bound). A run without any finite eval of
    `metric` gets S_B = NaN (the fit ignores it).
    """
    thr = [float(t) for t in np.atleast_1d(thresholds)]
    return sb_eb_from_series(run_meta(runs, metaparameters), eval_series(history, metric), thr, method)


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
                         m.phase, s[-1] if len(s) else np.nan, method, m.configuration, m.lr,
                         m.updates_per_step, sv * m.updates_per_step))
    cols = SB_EB_COLUMNS + ["phase", "last_eval_step", "method", "configuration", "lr",
                            "updates_per_step", "S_updates"]
    out = pd.DataFrame(rows, columns=cols)
    out = int_columns(out, ("n_prompts", "n_rollouts", "total_batch", "updates_per_step"))
    out["censored"] = out["censored"].astype(bool)
    out["in_envelope"] = in_envelope(out)
    return out


# ------------------------------------------------------------------------------------------
# Quantities summed over the steps up to the crossing (wall clock, generated samples)
# ------------------------------------------------------------------------------------------
def per_step_values(steps, values, last_step: int) -> tuple[np.ndarray, np.ndarray]:
    """(values of steps 1..last_step, missing mask): index i holds step i + 1. Steps without a
    finite value get the median of the others (NaN when there is none)."""
    st = np.asarray(steps, dtype=float)
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v) & np.isfinite(st) & (st >= 1) & (st <= last_step)
    out = np.full(max(int(last_step), 0), np.nan)
    out[st[ok].astype(int) - 1] = v[ok]
    missing = np.isnan(out)
    if missing.any() and (~missing).any():
        out[missing] = float(np.median(out[~missing]))
    return out, missing


def cumulative_at(per_step: np.ndarray, missing: np.ndarray, S) -> tuple[np.ndarray, np.ndarray]:
    """(sum of a per-step quantity over steps 1..S, steps imputed among them) for each S.

    A fractional S (an interpolated crossing) adds that fraction of step ceil(S); S beyond the
    last step counts up to the last step."""
    S = np.atleast_1d(np.asarray(S, dtype=float))
    cum = np.concatenate([[0.0], np.cumsum(per_step)])
    n = len(per_step)
    total = np.full(S.shape, np.nan)
    imputed = np.zeros(S.shape, dtype=int)
    for j, sv in enumerate(S):
        if not np.isfinite(sv) or sv < 0:
            continue
        k = min(int(math.floor(sv)), n)
        frac = sv - k if k < n else 0.0
        total[j] = cum[k] + (frac * per_step[k] if frac > 0 else 0.0)
        imputed[j] = int(missing[: min(int(math.ceil(sv)), n)].sum())
    return total, imputed


#: DAPO-style dynamic sampling logs how many generation batches each training step needed.
GEN_BATCHES_KEY = "train/num_gen_batches"


def generated_samples_table(runs: pd.DataFrame, history: pd.DataFrame, sb_eb: pd.DataFrame) -> pd.DataFrame:
    """E(B) in generated samples, for the runs that log `train/num_gen_batches` (DAPO's dynamic
    sampling: prompts whose rollouts all get the same reward are dropped and more batches are
    generated until train_batch_size prompts remain).

    Per rollout step a run generates num_gen_batches x gen_batch_size prompts x n_rollouts
    samples (gen_batch_size: the config's data.gen_batch_size, else n_prompts); E_generated
    sums them over steps 1..S (steps without the key get the run's median; counted in
    n_steps_imputed). E_trained = E_B = B x S. Empty when no run logs the key.
    """
    cols = ["run_id", "run_name", "n_prompts", "n_rollouts", "total_batch", "configuration",
            "threshold", "S_B", "censored", "E_B", "E_generated", "generated_per_trained",
            "mean_gen_batches", "n_steps_imputed", "in_envelope"]
    if GEN_BATCHES_KEY not in history.columns or not history[GEN_BATCHES_KEY].notna().any():
        return pd.DataFrame(columns=cols)
    meta = run_meta(runs).set_index("run_id")
    rows = []
    for run_id, h in history[history[GEN_BATCHES_KEY].notna()].groupby("run_id", sort=False):
        run_id = str(run_id)
        if run_id not in meta.index:
            continue
        m = meta.loc[run_id]
        sub = sb_eb[sb_eb["run_id"].astype(str) == run_id]
        gen_prompts = m["gen_batch_size"] if np.isfinite(m["gen_batch_size"]) else m["n_prompts"]
        last = int(max(h["step"].max(), np.nanmax(sub["S_B"].to_numpy(dtype=float), initial=0.0)) + 1)
        hist_run = history[history["run_id"].astype(str) == run_id]
        per_step, missing = per_step_values(hist_run["step"], hist_run[GEN_BATCHES_KEY], last)
        E_gen, n_imp = cumulative_at(per_step * gen_prompts * m["n_rollouts"], missing, sub["S_B"])
        for r, e, k in zip(sub.itertuples(index=False), E_gen, n_imp, strict=True):
            rows.append((run_id, r.run_name, r.n_prompts, r.n_rollouts, r.total_batch, r.configuration,
                         r.threshold, r.S_B, r.censored, r.E_B, e, e / r.E_B if r.E_B else np.nan,
                         float(np.nanmean(h[GEN_BATCHES_KEY])), int(k), r.in_envelope))
    return int_columns(pd.DataFrame(rows, columns=cols), ("n_prompts", "n_rollouts", "total_batch"))


def phase_runs(runs_all: pd.DataFrame, history_all, params: dict, columns: Iterable[str] | None = None):
    """(runs, history, metric) of one phase: the runs its params select in the snapshot (by
    name, or by the params' `select`: tags, group, name pattern, config), their history, and
    the validation-accuracy key its params select among the columns those runs logged.
    history_all: the snapshot's history frame, or its `SnapshotHistory` (open_snapshot(...,
    lazy=True)), from which only these runs are read. columns: the other history keys the
    caller reads (e.g. wallclock.WALL_CLOCK_KEYS); the history then holds run_id, step, the
    metric and those only (default: every column).
    A phase with one or two batch sizes is returned as it is (the fits then say
    `insufficient`); a phase with no runs raises ValueError naming the phases present."""
    phase = params["phase"]
    runs = runs_all[select_runs(runs_all, params).to_numpy()]
    if runs.empty:
        present = sorted(runs_all["phase"].dropna().astype(str).unique()) if "phase" in runs_all else []
        how = (f" (params select: {params['select']})" if params.get("select") else "")
        raise ValueError(f"no runs of phase {phase!r} in the snapshot{how}; phases present: {present}")
    if hasattr(history_all, "read"):  # a SnapshotHistory: read this phase's rows only
        accuracy = [c for c in history_all.columns if _may_be_accuracy(c, params["metric"])]
        history = history_all.read(runs["run_id"], None if columns is None else [*accuracy, *columns])
    else:
        history = history_all[history_all["run_id"].isin(runs["run_id"])]
    logged = [c for c in history.columns if history[c].notna().any()]
    try:
        metric = select_accuracy_metric(logged, params["metric"], params.get("prefer_source"))
    except ValueError:
        # The phase's runs never logged its task's accuracy as a number (NaN evals, or another
        # task only): take the key among every column of the snapshot, so the sections say the
        # phase has no evaluation of it instead of stopping. A pattern that matches no column
        # at all is a params error and still raises.
        metric = select_accuracy_metric(list(history.columns), params["metric"],
                                        params.get("prefer_source"))
    if columns is not None:
        history = history[list(dict.fromkeys(c for c in ("run_id", "step", metric, *columns) if c in history.columns))]
    return runs, history, metric


def _may_be_accuracy(column: str, metric: str | None) -> bool:
    """A column the choice of a phase's metric looks at (or names in its message)."""
    return (column.startswith("val-core/") or is_accuracy_key(column) or column == metric
            or fnmatch.fnmatchcase(column, metric or "val-core/*mean@*"))


def joint_phase_runs(runs_all: pd.DataFrame, history_all, params: dict,
                     params_dir, columns: Iterable[str] | None = None) -> tuple[list[dict], list[str]]:
    """The phases a joint two-axis fit pools (the params' `two_axis_phases`, else the phase
    alone): a list of {phase, params, runs, history, metric}, and the phases left out, each as
    "name (reason)": no runs selected, params that do not load, or another accuracy key than
    this phase's (steps to one target compare only within one task)."""
    def select(name: str) -> tuple:
        p_params = params if name == params["phase"] else load_phase_params(params_dir, name)
        return p_params, *phase_runs(runs_all, history_all, p_params, columns)

    try:
        own = select(params["phase"])  # its metric is the one the joint fit measures
    except ValueError:
        own = None
    own_metric = own[3] if own else None
    members, left_out = [], []
    for name in dict.fromkeys(params.get("two_axis_phases") or [params["phase"]]):
        try:
            p_params, p_runs, p_history, p_metric = (own if own and name == params["phase"]
                                                     else select(name))
        except ValueError as exc:  # ParamsError too: that phase's own notebooks report it
            left_out.append(f"{name} ({str(exc).splitlines()[0]})")
            continue
        own_metric = own_metric or p_metric
        if p_metric != own_metric:
            # steps to one target compare only within one task
            left_out.append(f"{name} (another task: {p_metric}, not {own_metric})")
            continue
        members.append({"phase": name, "params": p_params, "runs": p_runs, "history": p_history,
                        "metric": p_metric})
    return members, left_out
