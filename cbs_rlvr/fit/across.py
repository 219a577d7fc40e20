"""Across a phase's targets: B_noise against the target, and McCandlish's Pareto check."""

from __future__ import annotations

import numpy as np
import pandas as pd

_USABLE = ("ok", "extrapolated")


def b_noise_vs_target(cbs_fit: pd.DataFrame) -> pd.DataFrame:
    """B_noise (with CI), B_crit_20pct, S_min, E_min by target accuracy, and the growth of B_noise
    relative to the easiest target with a usable fit. An empty or partial cbs_fit gives the same
    columns (missing values NaN)."""
    cols = ["threshold", "B_noise", "B_noise_lo", "B_noise_hi", "B_crit_20pct", "S_min", "E_min", "status"]
    out = cbs_fit.reindex(columns=cols).sort_values("threshold").reset_index(drop=True)
    usable = out["status"].isin(_USABLE) & out["B_noise"].notna()
    ref = out.loc[usable, "B_noise"].iloc[0] if usable.any() else np.nan
    out["growth_vs_easiest"] = np.where(usable, out["B_noise"] / ref, np.nan)
    return out


def pareto_table(sb_eb: pd.DataFrame, cbs_fit: pd.DataFrame) -> pd.DataFrame:
    """Per run and threshold: S/S_min - 1, E/E_min - 1 (E_min = S_min B_noise) and their product,
    which the McCandlish model puts at exactly 1, and the chosen form's alpha (1 for McCandlish).
    Only thresholds with a usable fit; censored rows are kept (their excesses are lower bounds)."""
    cbs_fit = cbs_fit.reindex(columns=list(dict.fromkeys([*cbs_fit.columns, "threshold", "S_min", "B_noise",
                                                         "status", "model", "alpha"])))
    fit = cbs_fit.loc[cbs_fit["status"].isin(_USABLE), ["threshold", "S_min", "B_noise"]].copy()
    fit["E_min"] = fit["S_min"] * fit["B_noise"]
    gen = cbs_fit.loc[fit.index, "model"].eq("general")
    fit["alpha"] = np.where(gen, pd.to_numeric(cbs_fit.loc[fit.index, "alpha"], errors="coerce"), 1.0)
    keep = ["run_id", "run_name", "n_prompts", "n_rollouts", "total_batch", "threshold", "S_B", "E_B", "censored"]
    sb = sb_eb.reindex(columns=keep)
    sb["threshold"] = pd.to_numeric(sb["threshold"], errors="coerce").astype(float)
    fit = fit.assign(threshold=pd.to_numeric(fit["threshold"], errors="coerce").astype(float))
    out = sb.merge(fit, on="threshold", how="inner")
    out["S_excess"] = out["S_B"].astype(float) / out["S_min"] - 1.0
    out["E_excess"] = out["E_B"].astype(float) / out["E_min"] - 1.0
    out["pareto_product"] = out["S_excess"] * out["E_excess"]
    return out.reset_index(drop=True)
