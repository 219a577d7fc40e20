"""Learning-rate (metaparameter) sweeps: the best configuration at each batch size and target.

Batch-size studies tune the learning rate per batch size: Shallue et al. (2018) take the best
trial at each B, and with Adam the rate is often scaled with sqrt(B). Runs at one
(n_prompts, n_rollouts) that differ in a metaparameter are therefore not replicates: S(B) is
the envelope, the fewest steps any configuration needs at that batch size and target, and the
McCandlish fit uses only the configuration that wins there. The choice is made on the measured S
and held fixed in the bootstrap (the interval does not include the luck of which rate won).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..words.numbers import scientific

_POINT = ["threshold", "n_prompts", "n_rollouts"]


def configuration_table(sb_eb: pd.DataFrame) -> pd.DataFrame:
    """One row per (threshold, n_prompts, n_rollouts, configuration) with the configuration's S.

    S: the median over its replicates of S_B (a censored replicate counts with its bound, a
    lower bound); censored: every replicate censored. chosen: this configuration is the
    envelope at this batch size and target: the smallest S among the configurations that reach
    it, else (none reaches it) the smallest bound, the only valid lower bound of the envelope.
    undetermined: another configuration stopped before the target with fewer steps than the
    winner needed, so it might have been faster. n_configs: configurations tried there.
    """
    df = sb_eb.copy()
    if "configuration" not in df.columns:
        df["configuration"] = ""
    df["configuration"] = df["configuration"].fillna("").astype(str)
    df["_S"] = pd.to_numeric(df["S_B"], errors="coerce").astype(float)
    keys = _POINT + ["configuration"]
    agg = {"S_B": ("_S", "median"), "censored": ("censored", "all"), "n_runs": ("run_id", "nunique")}
    if "total_batch" in df.columns:
        agg["total_batch"] = ("total_batch", "first")
    if "lr" in df.columns:
        agg["lr"] = ("lr", "first")
    table = df.groupby(keys, sort=True, dropna=False).agg(**agg).reset_index()
    table["censored"] = table["censored"].astype(bool)
    # the choice, vectorised over the (threshold, batch size) groups (a phase may hold thousands)
    gid = table.groupby(_POINT, dropna=False, sort=False).ngroup().to_numpy()
    S = table["S_B"].to_numpy(dtype=float)
    cens = table["censored"].to_numpy(dtype=bool)
    finite = np.isfinite(S)
    reached = finite & ~cens

    def group_reduce(values, how):
        return pd.Series(values).groupby(gid).transform(how).to_numpy()

    has_reached = group_reduce(reached, "any").astype(bool)
    candidate = np.where(has_reached, reached, finite)
    S_cand = np.where(candidate, S, np.inf)
    best = candidate & (S_cand == group_reduce(S_cand, "min"))
    first_best = best & (group_reduce(best.astype(int), "cumsum") == 1)
    no_finite = ~group_reduce(finite, "any").astype(bool)
    first_row = pd.Series(gid).groupby(gid).cumcount().to_numpy() == 0
    table["chosen"] = first_best | (no_finite & first_row)
    stopped = np.where(finite & cens, S, np.inf)
    table["undetermined"] = table["chosen"].to_numpy() & has_reached & (group_reduce(stopped, "min") < S)
    table["n_configs"] = pd.Series(gid).map(pd.Series(gid).value_counts()).to_numpy()
    return table


def in_envelope(sb_eb: pd.DataFrame) -> pd.Series:
    """For every row of an S(B) table: does its run belong to the envelope configuration at its
    batch size and target (see configuration_table)? True everywhere when each batch size has
    one configuration."""
    if len(sb_eb) == 0:
        return pd.Series([], dtype=bool)
    configs = configuration_table(sb_eb)
    chosen = configs.loc[configs["chosen"], _POINT + ["configuration"]].assign(_in=True)
    labels = sb_eb.get("configuration", pd.Series("", index=sb_eb.index)).fillna("").astype(str)
    keyed = sb_eb[_POINT].assign(configuration=labels.to_numpy())
    merged = keyed.merge(chosen, on=_POINT + ["configuration"], how="left")
    return pd.Series(merged["_in"].fillna(False).astype(bool).to_numpy(), index=sb_eb.index)


def envelope_winners(configs: pd.DataFrame) -> pd.DataFrame:
    """Per batch size (n_prompts, n_rollouts): the configuration that won at each target, the
    configurations tried, and the rate that won most often over the targets it reached
    (`lr_won`; NaN where no configuration reached any target: nothing won there)."""
    rows = []
    for (n_p, n_r), sub in configs.groupby(["n_prompts", "n_rollouts"], sort=True):
        won = sub[sub["chosen"]].sort_values("threshold")
        # a target no configuration reached has a lower bound there, not a winner
        reached = ~won["censored"].astype(bool) & np.isfinite(won["S_B"].to_numpy(dtype=float))
        tried = sorted(sub["configuration"].unique())
        counts = won.loc[reached, "configuration"].value_counts()
        top = counts.index[0] if len(counts) else None
        lr = won.loc[won["configuration"] == top, "lr"].iloc[0] if top is not None and "lr" in won else np.nan
        rows.append({"n_prompts": n_p, "n_rollouts": n_r,
                     "total_batch": sub["total_batch"].iloc[0] if "total_batch" in sub else n_p * n_r,
                     "n_configs": len(tried), "tried": "; ".join(tried), "won_most": top,
                     "lr_won": lr, "won_by_target": "; ".join(
                         f"{t:g}: {c if ok else 'none reached'}"
                         for t, c, ok in zip(won["threshold"], won["configuration"], reached, strict=True)),
                     "undetermined": bool(won["undetermined"].any())})
    return pd.DataFrame(rows)


def lr_policy(batch_sizes, lrs, tol: float = 0.2) -> dict:
    """How a learning rate follows the batch size: fit log lr = c + k log B over one rate per
    batch size. policy: `constant` (one rate, or |k| <= tol), `sqrt(B)` (|k - 0.5| <= tol),
    `linear` (|k - 1| <= tol), `mixed` (another slope, or points off a power law by more than
    a factor 1.5), `undetermined` (fewer than two batch sizes with a known rate).
    Returns policy, slope, n_batch_sizes and `describe`, the policy in words (it reads after
    learning-rate policy is ..."."""
    B = np.asarray(batch_sizes, dtype=float)
    lr = np.asarray(pd.to_numeric(pd.Series(lrs), errors="coerce"), dtype=float)
    ok = np.isfinite(B) & np.isfinite(lr) & (B > 0) & (lr > 0)
    B, lr = B[ok], lr[ok]
    n = int(len(np.unique(B)))
    out = {"policy": "undetermined", "slope": np.nan, "n_batch_sizes": n}
    if n < 2:
        out["describe"] = "too few batch sizes with a known learning rate to tell a policy"
        return out
    if np.allclose(lr, lr[0], rtol=1e-9):
        out.update(policy="constant", slope=0.0, lr=float(lr[0]),
                   describe=f"constant, learning rate {scientific(lr[0], 3)} at every batch size")
        return out
    slope, intercept = np.polyfit(np.log(B), np.log(lr), 1)
    resid = np.log(lr) - (intercept + slope * np.log(B))
    out["slope"] = float(slope)
    policy = "mixed"
    if np.abs(resid).max() <= math.log(1.5):
        for name, target in (("constant", 0.0), ("sqrt(B)", 0.5), ("linear", 1.0)):
            if abs(slope - target) <= tol:
                policy = name
                break
    out["policy"] = policy
    rates = ", ".join(scientific(v, 3) for v in sorted(set(lr)))
    fit = f"log learning rate against log B: slope {slope:.2f} over {n} batch sizes; rates {rates}"
    out["describe"] = {"constant": f"constant within noise ({fit})",
                       "sqrt(B)": f"the learning rate grows like sqrt(B) ({fit})",
                       "linear": f"the learning rate grows in proportion to B ({fit})",
                       "mixed": f"no single power law ({fit})"}[policy]
    return out


def sweep_lr_policy(sb_eb: pd.DataFrame) -> tuple[dict, bool]:
    """A sweep's learning-rate context from its S(B) table: (lr_policy over one row per run, whether
    several rates were tried at one batch size, i.e. tuned)."""
    tried = sb_eb.drop_duplicates("run_id") if "run_id" in sb_eb else sb_eb
    if not len(tried) or "lr" not in tried:
        return lr_policy([], []), False
    tuned = bool((tried.groupby("total_batch")["lr"].nunique() > 1).any())
    return lr_policy(tried["total_batch"], tried["lr"]), tuned
