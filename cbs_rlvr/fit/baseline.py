"""The original notebook's method, kept to compare against: first raw eval crossing, runs that
never reach the target dropped, curve_fit in linear space, no uncertainty."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..measure.crossings import sb_eb_table
from .curves import mccandlish_steps
from .phase import CBS_FIT_COLUMNS, _empty_row


# ------------------------------------------------------------------------------------------
# The seed notebook's method, for comparison
# ------------------------------------------------------------------------------------------
def seed_method_fit(runs: pd.DataFrame, history: pd.DataFrame, metric: str, thresholds,
                    dedupe_names: bool = True) -> pd.DataFrame:
    """The seed notebook's estimate: S = first raw eval step with acc >= target, runs that
    never reach it dropped, S(B) = S_min (1 + B_noise/B) fitted by curve_fit in linear space
    (p0 = [min S, middle B], bounds >= 0), >= 3 points required, no uncertainty.
    dedupe_names=True mimics its dict keyed by run name: one run per name survives (the
    first started, replicate 0, which a newest-first W&B listing writes last).
    Returns the cbs_fit columns (CI columns NaN) plus R2_linear."""
    from scipy import optimize

    thr = [float(t) for t in np.atleast_1d(thresholds)]
    r = runs
    if dedupe_names and "replicate" in runs.columns:
        r = runs.sort_values("replicate").drop_duplicates("name", keep="first")
    sb = sb_eb_table(r, history, metric, thr, method="first_crossing")
    out = []
    for t in thr:
        sub = sb[(sb["threshold"] == t) & ~sb["censored"] & sb["S_B"].notna()]
        sub = sub.sort_values("total_batch")
        B = sub["total_batch"].to_numpy(dtype=float)
        S = sub["S_B"].to_numpy(dtype=float)
        res = {k: v for k, v in _empty_row(t, len(B), 0, "insufficient", "").items() if k in CBS_FIT_COLUMNS}
        res.update({"threshold": t, "R2_linear": np.nan})
        if len(B) < 3:
            res["reason"] = f"{len(B)} run(s) reach the target, the seed needs 3"
            out.append(res)
            continue
        try:
            popt, _ = optimize.curve_fit(mccandlish_steps, B, S, p0=[S.min(), B[len(B) // 2]],
                                         bounds=([0, 0], [np.inf, np.inf]), maxfev=10000)
        except (RuntimeError, ValueError) as exc:
            res["status"], res["reason"] = "failed", f"curve_fit: {exc}"
            out.append(res)
            continue
        S_min, B_noise = (float(v) for v in popt)
        pred = mccandlish_steps(B, S_min, B_noise)
        ss_tot = float(((S - S.mean()) ** 2).sum())
        res.update({"B_noise": B_noise, "S_min": S_min, "E_min": S_min * B_noise,
                    "B_crit_20pct": 0.2 * B_noise,
                    "R2_linear": 1 - float(((S - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else 0.0,
                    "status": "ok" if B.min() <= B_noise <= B.max() else "extrapolated"})
        with np.errstate(divide="ignore", invalid="ignore"):
            yl = np.log(S)
            fl = np.log(pred)
            tl = float(((yl - yl.mean()) ** 2).sum())
            res["r2_log"] = 1 - float(((yl - fl) ** 2).sum()) / tl if tl > 0 else np.nan
        out.append(res)
    df = pd.DataFrame(out)
    extra = [c for c in df.columns if c not in CBS_FIT_COLUMNS]
    return df[CBS_FIT_COLUMNS + extra]



