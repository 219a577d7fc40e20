"""The next runs of a phase, ranked by what they are worth to the decision: the expected reduction
in decision regret (hours lost by training at the recommended configuration instead of the truly
fastest one) per GPU-hour (per hour where GPU counts are unknown).

The sweep as it stands is the plan's K draws of every candidate's hours at the decision target
(plan/predict.py: the fit's bootstrap, forms mixed, each configuration's own deviation, step
times). Under draw k the regret of training at d is H_k(d) - min_c H_k(c); today's decision d0 (the
fewest expected hours among the candidates a recommendation may rest on) has expected regret
R0 = mean_k [H_k(d0) - min_c H_k(c)].

A candidate run (a new run at any candidate configuration, a repeat of a measured one, the
extension of a run that stopped before the target, a split off the sampled axes) would show its
log S; under draw k that is N(m_k, sigma_run^2) (m_k the draw's log S there, sigma_run a run's own
scatter), censored where the run stops (a new run at the phase's step budget, an extension at the
step it is extended to). For each of `n_outcomes` outcomes drawn from that predictive, the draws
are reweighted by the outcome's likelihood (the posterior after the run), the decision is made
again among the recommendable candidates and the run's own configuration (it is then measured),
and its expected regret under the reweighted draws is R(y). The run's value is R0 - E_y[R(y)] (the
expected value of sample information); its band the 10th-90th percentiles over the outcomes.

A run is suggested only if it reaches the target with at least 50% chance. Its cost counts the
steps it must run: to its crossing, or to where it stops (an extension from its last step), times
the step time, times the GPU count. A configuration a recommendation may not rest on (a split off
the sampled axes under an unchecked model, or a batch size beyond the runs that reached the target)
that could be faster than the decision (30% chance or more) is "worth testing": the best-valued run
that tests it comes first, since it is the run that would prove the recommendation wrong.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .predict import RECOMMENDABLE, Prediction

NEXT_RUNS_COLUMNS = ["threshold", "rank", "action", "run_name", "run_id", "n_prompts", "n_rollouts", "total_batch",
                     "from_step", "to_step", "p_reach", "regret_now_h", "expected_reduction_h", "reduction_lo_h",
                     "reduction_hi_h", "p_change", "predicted_steps", "predicted_hours", "predicted_gpu_hours",
                     "cost", "cost_unit", "value_per_cost", "basis", "why", "n_outcomes", "note"]
#: a split off the sampled axes with at least this chance of beating the decision is worth testing
WORTH_TESTING = 0.3
#: a suggested run reaches the target with at least this chance
MIN_P_REACH = 0.5


def _regret(H: np.ndarray, d: int, best: np.ndarray, w=None) -> float:
    r = H[:, d] - best
    ok = np.isfinite(r)
    if w is None:
        return float(r[ok].mean()) if ok.any() else np.nan
    ww = w[ok]
    return float((ww * r[ok]).sum() / ww.sum()) if ww.sum() > 0 else np.nan


def decision_value(H: np.ndarray, allowed: np.ndarray, m: np.ndarray, sd: float, stop: float, col: int,
                   z: np.ndarray, k_pick: np.ndarray, floor: float = -np.inf) -> dict:
    """The value of one run at candidate column `col`: H (K, n) hours draws; allowed (n,) the
    candidates a recommendation may rest on; m (K,) each draw's log S at the run's configuration;
    sd the run's own scatter; stop the log step where it stops; z, k_pick: the outcomes' normal
    quantiles and the draws they come from (common to every run scored); floor: the log step the
    run has already passed (an extension), or -inf."""
    K, n = H.shape
    Hf = np.where(np.isfinite(H), H, np.inf)
    best = Hf.min(axis=1)
    seen = np.isfinite(H).any(axis=0)
    exp_h = np.full(n, np.nan)
    exp_h[seen] = np.nanmean(H[:, seen], axis=0)
    cand = np.flatnonzero(allowed & np.isfinite(exp_h))
    out = {"regret_now": np.nan, "value": np.nan, "lo": np.nan, "hi": np.nan, "p_change": np.nan,
           "p_reach": np.nan, "steps": np.nan}
    if not cand.size or not np.isfinite(m).any():
        return out
    d0 = int(cand[np.argmin(exp_h[cand])])
    finite_best = np.isfinite(best)
    R0 = _regret(np.where(finite_best[:, None], H, np.nan), d0, best)
    out["regret_now"] = R0
    # the outcomes: a draw's log S plus the run's scatter, truncated above the floor (an extension)
    from scipy import special, stats

    finite = np.flatnonzero(np.isfinite(m))
    mk = m[finite[k_pick % finite.size]]  # the outcomes come from draws that predict the run
    lo = stats.norm.cdf((floor - mk) / sd) if np.isfinite(floor) else np.zeros_like(mk)
    u = lo + (1.0 - lo) * stats.norm.cdf(z)
    y = mk + sd * stats.norm.ppf(np.clip(u, 1e-12, 1 - 1e-12))
    reached = y < stop
    # likelihood of each outcome under every draw: (O, K)
    with np.errstate(all="ignore"):
        zz = (np.where(reached, y, stop)[:, None] - m[None, :]) / sd
        logl = np.where(reached[:, None], -0.5 * zz * zz, special.log_ndtr(zz))
        if np.isfinite(floor):
            logl = logl - special.log_ndtr((m[None, :] - floor) / sd)
    logl = np.where(np.isfinite(logl), logl, -np.inf)
    logl -= logl.max(axis=1, keepdims=True)
    w = np.exp(logl) * finite_best[None, :]
    w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-300)
    allowed_after = allowed.copy()
    allowed_after[col] = True
    choices = np.flatnonzero(allowed_after & np.isfinite(exp_h))
    Hz = np.where(np.isfinite(H), H, 0.0)
    post_h = w @ Hz[:, choices]  # (O, n_choices)
    d_after = choices[np.argmin(post_h, axis=1)]
    reg = Hz[np.arange(K)[None, :], d_after[:, None]] - np.where(finite_best, best, 0.0)[None, :]
    R_after = (w * reg).sum(axis=1)
    gain = R0 - R_after
    out.update(value=float(gain.mean()), lo=float(np.quantile(gain, 0.1)), hi=float(np.quantile(gain, 0.9)),
               p_change=float((d_after != d0).mean()))
    # the chance to reach, and the steps run (to the crossing or the stop), from the point predictive
    p_above_floor = stats.norm.sf((floor - m) / sd) if np.isfinite(floor) else np.ones(K)
    p_reach_k = (stats.norm.cdf((stop - m) / sd) - (1 - p_above_floor)) / np.maximum(p_above_floor, 1e-12)
    out["p_reach"] = float(np.nanmean(np.clip(p_reach_k, 0, 1)))
    out["steps"] = float(np.nanmean(np.exp(np.minimum(y, stop))))
    out["d0"] = d0
    return out


def _run_scatter(fits: dict, t: float) -> float:
    """A run's own sd of log S at target t, over the fits the plan priced (their median)."""
    sds = []
    for f in fits.values():
        j = f.target_index(t)
        if f.scatter is not None and j is not None:
            sds.append(float(max(f.scatter.sigma_run[j], 0.5 * f.scatter.sigma[j])))
    return float(np.median(sds)) if sds else 0.1


def _budget(fits: dict, budget_steps: float | None) -> float:
    """Where a new run stops: `budget_steps`, else the last evaluated step of the longest run."""
    if budget_steps is not None and np.isfinite(budget_steps):
        return float(budget_steps)
    bounds = [np.exp(f.data.bounds[np.isfinite(f.data.bounds)]).max() for f in fits.values()
              if f.data is not None and np.isfinite(f.data.bounds).any()]
    return max(bounds) if bounds else np.nan


def _actions(pred: Prediction, fits: dict, t: float, sd: float, budget: float, max_extensions: int) -> list[dict]:
    """The runs to weigh: a new run at every candidate the plan predicts, and the extension of each
    configuration's furthest run that stopped before the target (to where it crosses with 80%
    chance, at least a quarter further)."""
    from scipy import stats

    tab = pred.table
    stop_new = math.log(budget) if budget and np.isfinite(budget) else np.inf
    actions = []
    for i in range(len(tab)):
        if np.isfinite(pred.log_steps[:, i]).any():
            basis = tab.at[i, "basis"]
            actions.append({"action": "new", "run_name": "", "run_id": "", "col": i, "floor": -np.inf,
                            "stop": stop_new, "from": 0.0, "to": budget, "basis": basis,
                            "why": "repeat" if basis == "measured" else ""})
    for f in fits.values():
        for ext in _extensions(f, t, max_extensions):
            match = np.flatnonzero(np.isclose(tab["n_prompts"], ext["n_prompts"])
                                   & np.isclose(tab["n_rollouts"], ext["n_rollouts"]))
            if not match.size:
                continue
            i, last = int(match[0]), ext["last"]
            m_pt = float(np.nanmedian(pred.log_steps[:, i]))
            lo_z = (math.log(last) - m_pt) / sd
            q = stats.norm.ppf(stats.norm.cdf(lo_z) + 0.8 * stats.norm.sf(lo_z))
            to = _round_up(max(1.25 * last, math.exp(m_pt + sd * q)))
            actions.append({"action": f"extend {ext['run_name']}", "run_name": ext["run_name"], "run_id": ext["run_id"],
                            "col": i, "floor": math.log(last), "stop": math.log(to), "from": last, "to": to,
                            "basis": tab.at[i, "basis"], "why": ""})
    return actions


def _scored(pred: Prediction, act: dict, v: dict, t: float, n_out: int) -> dict:
    """next_runs.csv's row of one weighed run: its value, cost, and whether it is worth testing."""
    tab, H, i = pred.table, pred.hours, act["col"]
    T, gpus = float(tab.at[i, "step_time_s"]), tab["n_gpus"].to_numpy(dtype=float)
    all_known = bool(np.isfinite(gpus).all())
    hours = (v["steps"] - act["from"]) * T / 3600.0 if np.isfinite(T) else np.nan
    cost = hours * gpus[i] if all_known else hours
    both = np.isfinite(H[:, i]) & np.isfinite(H[:, v["d0"]])
    p_faster = float(np.mean(H[both, i] < H[both, v["d0"]])) if both.any() else np.nan
    untested = act["basis"] not in RECOMMENDABLE
    why = "worth testing" if untested and p_faster >= WORTH_TESTING else act["why"]
    return {"threshold": t, "action": act["action"], "run_name": act["run_name"], "run_id": act["run_id"],
            "n_prompts": int(tab.at[i, "n_prompts"]), "n_rollouts": int(tab.at[i, "n_rollouts"]),
            "total_batch": int(tab.at[i, "total_batch"]), "from_step": act["from"], "to_step": act["to"],
            "p_reach": v["p_reach"], "regret_now_h": v["regret_now"], "expected_reduction_h": v["value"],
            "reduction_lo_h": v["lo"], "reduction_hi_h": v["hi"], "p_change": v["p_change"],
            "predicted_steps": float(np.exp(np.nanmedian(pred.log_steps[:, i]))), "predicted_hours": hours,
            "predicted_gpu_hours": hours * gpus[i] if np.isfinite(gpus[i]) else np.nan, "cost": cost,
            "cost_unit": "GPU-hours" if all_known else "hours",
            "value_per_cost": v["value"] / cost if cost and np.isfinite(cost) and cost > 0 else np.nan,
            "basis": act["basis"], "why": why, "n_outcomes": n_out,
            "note": (f"{p_faster:.0%} chance to be faster than the decision, from a prediction no run has checked"
                     if untested and np.isfinite(p_faster) else "")}


def next_runs(pred: Prediction, fits: dict, step_model: dict | None = None, budget_steps: float | None = None,
              n_outcomes: int = 64, max_runs: int = 3, min_value_h: float | None = None, seed: int = 0,
              max_extensions: int = 6) -> pd.DataFrame:
    """next_runs.csv at one target: up to `max_runs` runs, ranked by expected regret reduction per
    GPU-hour (module docstring). pred: the plan's Prediction at the target; fits: {phase: PhaseFit}
    of the axes the plan priced (for the runs that can be extended and each run's scatter);
    budget_steps: where a new run stops (default: the longest run). Runs worth less than
    `min_value_h` hours of expected regret (default 1% of the decision's hours) are left out; a run
    worth testing comes first whatever its value."""
    from scipy import stats

    t = float(pred.threshold)
    empty = pd.DataFrame(columns=NEXT_RUNS_COLUMNS)
    H, K = pred.hours, pred.hours.shape[0]
    allowed = pred.table["basis"].isin(RECOMMENDABLE).to_numpy()
    if not K or not len(pred.table) or not allowed.any() or not np.isfinite(H).any():
        return empty
    pred = Prediction(pred.threshold, pred.table.reset_index(drop=True), pred.log_steps, H, pred.gpu_hours)
    rng = np.random.default_rng(seed)
    n_out = int(n_outcomes)
    z = stats.norm.ppf((rng.permutation(n_out) + 0.5) / n_out)
    k_pick = rng.integers(0, K, size=n_out)
    sd = _run_scatter(fits, t)
    rows = []
    for act in _actions(pred, fits, t, sd, _budget(fits, budget_steps), max_extensions):
        v = decision_value(H, allowed, pred.log_steps[:, act["col"]], sd, act["stop"], act["col"], z, k_pick,
                           act["floor"])
        if np.isfinite(v["value"]) and v["p_reach"] >= MIN_P_REACH:
            rows.append(_scored(pred, act, v, t, n_out))
    if not rows:
        return empty
    out = pd.DataFrame(rows)
    expected = H[:, allowed]
    seen = np.isfinite(expected).any(axis=0)
    hours_d0 = float(np.min(np.nanmean(expected[:, seen], axis=0))) if seen.any() else np.nan
    floor_v = (0.01 * hours_d0 if np.isfinite(hours_d0) else 0.0) if min_value_h is None else float(min_value_h)
    test = out[out["why"] == "worth testing"].sort_values("value_per_cost", ascending=False).head(1)
    rest = out[(out["expected_reduction_h"] > floor_v) & ~out.index.isin(test.index)]
    rest = rest.sort_values(["value_per_cost", "expected_reduction_h"], ascending=False)
    out = pd.concat([test, rest]).head(max_runs).reset_index(drop=True)
    out["rank"] = np.arange(1, len(out) + 1)
    return out.reindex(columns=NEXT_RUNS_COLUMNS).astype({"rank": "Int64", "n_prompts": "Int64",
                                                         "n_rollouts": "Int64", "total_batch": "Int64"})


def _extensions(fit, t: float, limit: int) -> list[dict]:
    """The runs of a fit that stopped before target t, one per configuration (the one that came
    furthest), at most `limit` of them (the furthest first)."""
    j = fit.target_index(t)
    d = fit.data
    if j is None or d is None or d.n_prompts is None:
        return []
    rows = np.flatnonzero((d.W[:, j] > 0) & d.C[:, j])
    best: dict[tuple, dict] = {}
    for r in rows:
        key = (float(d.n_prompts[r]), float(d.n_rollouts[r]))
        last = float(math.exp(d.bounds[r]))
        if key not in best or last > best[key]["last"]:
            best[key] = {"run_name": str(d.run_name[r]), "run_id": str(d.run_id[r]), "n_prompts": key[0],
                         "n_rollouts": key[1], "last": last}
    return sorted(best.values(), key=lambda e: -e["last"])[:limit]


def _round_up(x: float) -> int:
    """Up to two significant digits (1234 -> 1300), so 'extend to step N' reads as a plan."""
    if not np.isfinite(x) or x <= 0:
        return 0
    q = 10 ** max(math.floor(math.log10(x)) - 1, 0)
    return int(math.ceil(x / q) * q)
