"""Fits of a plain S(B) table (batch sizes, steps, censored flags): the same engine as a phase's fit
with one target, for a table that comes from elsewhere (a paper, another tool)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .phase import fit_arrays


def as_float(x) -> np.ndarray:
    """1-D float array; pandas nullable values (pd.NA) become NaN."""
    if isinstance(x, (pd.Series, pd.Index)):
        return pd.to_numeric(x, errors="coerce").to_numpy(dtype=float, na_value=np.nan).ravel()
    return np.asarray(x, dtype=float).ravel()


def prepare(B, S, censored):
    """Arrays, validity mask and a note on what was dropped."""
    B, S = as_float(B), as_float(S)
    if B.shape != S.shape:
        raise ValueError("batch_sizes and steps differ in length")
    c = np.zeros(B.shape, bool) if censored is None else np.asarray(censored, dtype=bool).ravel()
    if c.shape != B.shape:
        raise ValueError("censored differs in length from batch_sizes")
    finite = np.isfinite(B) & np.isfinite(S)
    pos = finite & (B > 0) & (S > 0)
    notes = []
    if (~finite).sum():
        notes.append(f"{int((~finite).sum())} non-finite point(s) ignored")
    if (finite & ~pos).sum():
        notes.append(f"{int((finite & ~pos).sum())} point(s) with B <= 0 or S <= 0 ignored "
                     "(S = 0: target already met at step 0)")
    return B, S, c, pos, notes


def fit_steps(batch_sizes, steps, censored=None, n_bootstrap: int = 1000, seed: int = 0, forms=None) -> dict:
    """Fit a plain S(B) table with every form the data can tell apart (forms.py), weighed by
    leave-one-batch-size-out prediction; B_noise, S_min, alpha with 95% intervals, `model`, E_min and
    B_crit_20pct where they exist, r2_log, status and reason (cbs_fit.csv's columns). Repeated batch
    sizes are replicates (each batch size weighs 1); a censored point (a run that never reached the
    target: S its last step) is a lower bound. Never raises on bad data."""
    from .phase import CBS_FIT_COLUMNS, CBS_FIT_EXTRA_COLUMNS, _empty_row

    try:
        B, S, c, ok, notes = prepare(batch_sizes, steps, censored)
    except (ValueError, TypeError) as exc:
        row = _empty_row(np.nan, 0, 0, "failed", f"bad input: {exc}")
        return {k: row[k] for k in CBS_FIT_COLUMNS + CBS_FIT_EXTRA_COLUMNS}
    B, S, c = B[ok], S[ok], c[ok]
    R = len(B)
    g = pd.Series(B)
    W = (1.0 / g.map(g.value_counts()).to_numpy(dtype=float))[:, None] if R else np.zeros((0, 1))
    bounds = np.where(c, np.log(np.where(S > 0, S, 1.0)), np.inf)
    res = fit_arrays(B, np.log(S)[:, None] if R else np.zeros((0, 1)), c[:, None], W, B.astype(str), bounds, [0.0],
                     n_bootstrap=n_bootstrap, seed=seed, notes=notes, forms=forms)
    out = res.table.iloc[0].to_dict()
    out["threshold"] = np.nan
    return out


def fit_mccandlish(batch_sizes, steps, censored=None, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """fit_steps with McCandlish's form only, S(B) = S_min (1 + B_noise / B): least squares in log
    space on (log S_min, log B_noise), censored points as lower bounds (Tobit), 95% intervals from
    the parametric bootstrap. B_crit_20pct = 0.2 B_noise: Zhang et al. 2024's critical batch size,
    where E(B) exceeds E_min by 20%."""
    return fit_steps(batch_sizes, steps, censored, n_bootstrap, seed, forms=("mccandlish",))
