"""The next runs of a phase: which run, new or extended, narrows the decision's B_noise interval
most per GPU-hour (per hour where GPU counts are unknown), and what it is likely to give.

One ranked list per phase, at its decision target (at most three actions):
- a new run at a batch size along the phase's axis (the sampled ones, which repeats them, and
  powers of two up to one octave beyond the sweep);
- "extend run X to step N" for each run that stopped before reaching the target (censored).

How an action is scored. The sweep as it stands is fit_phase's M bootstrap tables (the tables
that gave the reported interval). The run's outcome is drawn R times from the predictive
distribution: the fitted curve S = S_min (1 + (B_noise / B)^alpha) of a random bootstrap draw,
plus the phase's measured scatter about the fit (the residual sd of log S, df-corrected, never
less than the eval noise), at stratified quantiles. A new run that would need more steps than
the phase's step budget (its longest run) is censored there; an extended run's outcome is drawn
given that it has not reached the target by its last step, and is censored at N. Each outcome
enters every table (with the eval-noise spread of a run of that length, as the bootstrap would
re-measure it; a repeat of a sampled batch size makes it replicated, and its runs are then
resampled as fit_phase does) and the tables (resampled with replacement per outcome: a fresh bootstrap after the run spreads by
chance too) are refitted: the 95% spread of log B_noise after, over the spread now (on other
resamples: today's width carries chance as well), gives the narrowing of that outcome. Expected narrowing = mean over the outcomes; its 80%
band = their 10th and 90th percentiles. Cost: a new run stops at the target or the budget
(expected steps), an extension runs from its last step to N; times the predicted step time,
times the GPU count where every run's config gives it. Ranked by expected narrowing per cost.

The refits are McCandlish (alpha = 1) refits of the tables: with a general-form fit the outcome
is drawn from its curve, but the interval's response is the alpha = 1 fit's.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .fit import _b_bounds, _Model, _n_distinct_reached, _tobit_em
from .plan import _floats, candidate_configs, gpu_counts
from .wallclock import predict_step_time

#: outputs/<phase>/tables/next_runs.csv (one ranked list per phase, rank 1 first).
NEXT_RUNS_COLUMNS = ["threshold", "rank", "action", "run_name", "n_prompts", "n_rollouts", "total_batch",
                     "from_step", "to_step", "p_reach", "B_noise", "B_noise_lo", "B_noise_hi",
                     "expected_lo_after", "expected_hi_after", "expected_narrowing", "narrowing_lo",
                     "narrowing_hi", "predicted_steps", "predicted_hours", "predicted_gpu_hours", "cost",
                     "cost_unit", "narrowing_per_cost", "basis", "noise_sd_log", "n_simulations", "note"]
_USABLE = ("ok", "extrapolated")


def decision_target(cbs_fit: pd.DataFrame, sb_eb: pd.DataFrame, requested: float | None = None) -> float | None:
    """The target a phase's decision is made at: `requested` (params `decision_target`) when
    given; else the highest target reached by the most configurations (batch sizes) among
    targets with a usable fit. None when no target has one."""
    if requested is not None:
        return float(requested)
    usable = cbs_fit[cbs_fit["status"].isin(_USABLE)]["threshold"].astype(float).tolist()
    if not usable:
        return None
    reached = sb_eb[~sb_eb["censored"].astype(bool) & sb_eb["S_B"].notna()]
    counts = {t: reached[reached["threshold"] == t].groupby(["n_prompts", "n_rollouts"]).ngroups for t in usable}
    most = max(counts.values())
    return max(t for t, n in counts.items() if n == most)


def step_budget(history: pd.DataFrame, runs: pd.DataFrame | None = None) -> float:
    """The phase's step budget: the last logged step of its longest run."""
    if history is None or not len(history) or "step" not in history:
        return np.nan
    h = history if runs is None else history[history["run_id"].isin(runs["run_id"])]
    return float(h.groupby("run_id")["step"].max().max()) if len(h) else np.nan


def _curve(log_S_min, log_B_noise, alpha, B):
    return log_S_min + np.log1p(np.exp(alpha * (log_B_noise - np.log(B))))


def _spread(b: np.ndarray) -> float:
    """Width of the central 95% of refitted log B_noise (NaN when fewer than half are finite)."""
    n = b.size
    b = b[np.isfinite(b)]
    if b.size < max(10, 0.5 * n):
        return np.nan
    lo, hi = np.quantile(b, [0.025, 0.975])
    return float(hi - lo)


def _refit_spreads(B, Y, W, C, bb, blocks: int) -> np.ndarray:
    """Refit `blocks` stacks of M tables at once; the 95% spread of log B_noise in each."""
    with np.errstate(all="ignore"):
        _, b, _, _ = _tobit_em(_Model(B=B), np.where(W > 0, Y, 0.0), W, C, bb, (0.0, 0.0))
    lo, hi = bb
    b = np.where(_n_distinct_reached(B, (W > 0) & ~C) < 3, np.nan, b)
    b = np.where((b - lo < 1e-3 * (hi - lo)) | (hi - b < 1e-3 * (hi - lo)), np.nan, b)
    M = len(b) // blocks
    return np.array([_spread(b[k * M:(k + 1) * M]) for k in range(blocks)])


def _censored_rows(sb_eb: pd.DataFrame, d: dict, t: float) -> list[tuple[int, str, float]]:
    """(row of the fit, run name, last step) of each censored row of the fit at target t."""
    rows = sb_eb[(sb_eb["threshold"] == t) & sb_eb["censored"].astype(bool) & sb_eb["S_B"].notna()]
    out, used = [], set()
    for i in np.flatnonzero(d["censored"]):
        S, B = math.exp(d["log_S"][i]), d["B"][i]
        m = rows[np.isclose(rows["total_batch"].astype(float), B) & np.isclose(rows["S_B"].astype(float), S)]
        m = m[~m["run_name"].isin(used)]
        if len(m):
            used.add(m["run_name"].iloc[0])
            out.append((int(i), str(m["run_name"].iloc[0]), float(S)))
    return out


def _extension_rows(rows: list[tuple[int, str, float]], B: np.ndarray, log_b_noise: float,
                    limit: int) -> list[tuple[int, str, float]]:
    """The censored rows worth extending: at each batch size the run that came furthest (its
    seeds' runs tell the same), at the `limit` batch sizes nearest B_noise (where a crossing
    moves the fit most), in the fit's row order. A sweep of thousands of runs then costs a few
    refits, not one per censored run."""
    furthest: dict[float, tuple[int, str, float]] = {}
    for row in rows:
        b = float(B[row[0]])
        if b not in furthest or row[2] > furthest[b][2]:
            furthest[b] = row
    nearest = sorted(furthest, key=lambda b: (abs(math.log(b) - log_b_noise), b))[:max(int(limit), 0)]
    return sorted((furthest[b] for b in nearest), key=lambda row: row[0])


def _remeasure_sd(d: dict, log_S_new: float, default: float) -> float:
    """How far the bootstrap's re-measurement would move a new run's log S: the eval-noise sd
    of the phase's re-measured runs scaled by S^-1/2 (more evaluations around a later
    crossing), median over them; `default` without re-measured runs."""
    sd, log_S = d.get("eval_sd_rows", np.array([])), d["log_S"]
    ok = np.isfinite(sd) & (sd > 0) & ~d["censored"]
    if not ok.any():
        return default
    return float(np.exp(np.median(np.log(sd[ok]) - 0.5 * (log_S_new - log_S[ok]))))


def _round_up(x: float) -> int:
    """Up to two significant digits (1234 -> 1300), so 'extend to step N' reads as a plan."""
    if not np.isfinite(x) or x <= 0:
        return 0
    q = 10 ** max(math.floor(math.log10(x)) - 1, 0)
    return int(math.ceil(x / q) * q)


# runs x simulated tables per refit, beyond which the tables are thinned (200 tables up to 100 runs)
MAX_TABLE_CELLS = 20_000


def next_runs(draws: dict, cbs_fit: pd.DataFrame, sb_eb: pd.DataFrame, step_model: dict | None = None,
              step_times: pd.DataFrame | None = None, target: float | None = None,
              budget_steps: float | None = None, n_simulations: int = 200, n_outcomes: int = 10,
              max_runs: int = 3, min_gain: float = 0.05, octaves: int = 1, max_extensions: int = 6,
              seed: int = 0) -> pd.DataFrame:
    """next_runs.csv: up to `max_runs` actions at the decision target (decision_target unless
    given), ranked by expected narrowing of the B_noise interval per GPU-hour (per hour without
    GPU counts, per million samples without step times). See the module docstring for how each
    is simulated. Actions expected to narrow it by less than `min_gain` are left out.
    Extensions are weighed for at most `max_extensions` batch sizes, those nearest B_noise, and
    at each for its censored run that came furthest.
    Cost: one vectorised refit of (n_outcomes x n_simulations) tables per action; about 0.5 s
    at the defaults on a sweep of ten runs. Beyond 100 runs, fewer tables are simulated
    (MAX_TABLE_CELLS): about 35 s on 2,000 runs."""
    from scipy import stats  # here: importing cbs_helpers loads no scipy

    empty = pd.DataFrame(columns=NEXT_RUNS_COLUMNS)
    t = decision_target(cbs_fit, sb_eb) if target is None else float(target)
    fits = cbs_fit[cbs_fit["threshold"].astype(float) == t] if t is not None else cbs_fit.iloc[:0]
    if not len(fits):
        return empty
    fit = fits.iloc[0]
    d = draws.get(t) or {}
    if fit["status"] not in _USABLE or d.get("tables") is None or d.get("log_B_noise") is None:
        return empty
    rng = np.random.default_rng(seed)
    # a refit's cost grows with tables x runs: a sweep of thousands of runs is simulated on
    # fewer tables (at least 10), where one more run narrows its interval little anyway
    n_rows = max(np.asarray(d["tables"][0]).shape[1], 1)
    Y0, W0, C0 = (np.asarray(x)[:min(n_simulations, max(10, MAX_TABLE_CELLS // n_rows))] for x in d["tables"])
    M, n = Y0.shape
    B, log_S, cens = d["B"], d["log_S"], d["censored"]
    alpha = float(fit["alpha"]) if "alpha" in fit and np.isfinite(fit.get("alpha", np.nan)) else 1.0
    if fit.get("model", "mccandlish") != "general":
        alpha = 1.0
    a_hat, b_hat = math.log(fit["S_min"]), math.log(fit["B_noise"])
    draw_ok = np.isfinite(d["log_S_min"]) & np.isfinite(d["log_B_noise"])
    if not draw_ok.any():
        return empty
    a_draws, b_draws = d["log_S_min"][draw_ok], d["log_B_noise"][draw_ok]
    n_u = int((~cens).sum())
    resid = log_S[~cens] - _curve(a_hat, b_hat, alpha, B[~cens])
    sigma = float(np.sqrt((resid**2).sum() / (n_u - 2))) if n_u > 2 else np.nan
    eval_sd = d.get("eval_sd_log", np.nan)
    sd = float(np.nanmax([sigma, eval_sd, 0.02]))  # the measured scatter (eval + seed noise)
    eval_new = float(np.nanmax([eval_sd, 0.005])) if np.isfinite(eval_sd) else 0.5 * sd
    budget = float(budget_steps) if budget_steps and np.isfinite(budget_steps) else float(np.exp(log_S.max()))
    bb = _b_bounds(B)

    # the actions: new runs along the axis, extensions of censored runs
    configs = sb_eb[["n_prompts", "n_rollouts"]].drop_duplicates()
    cand = candidate_configs(configs, both_axes=False, octaves=octaves)
    actions = [{"action": "new", "run_name": "", "n_prompts": int(r.n_prompts), "n_rollouts": int(r.n_rollouts),
                "B": float(r.total_batch), "row": None, "from": 0.0} for r in cand.itertuples()]
    by_B = sb_eb.drop_duplicates("total_batch").set_index("total_batch")
    for i, name, last in _extension_rows(_censored_rows(sb_eb, d, t), B, b_hat, max_extensions):
        ref = by_B.loc[int(B[i])] if int(B[i]) in by_B.index else None
        n_p = int(ref["n_prompts"]) if ref is not None else int(B[i])
        actions.append({"action": f"extend {name}", "run_name": name, "n_prompts": n_p,
                        "n_rollouts": int(B[i] // max(n_p, 1)), "B": float(B[i]), "row": i, "from": last})
    if not actions:
        return empty
    R = int(n_outcomes)
    q = (np.arange(R) + 0.5) / R
    k_draw = rng.integers(0, len(a_draws), size=R)
    e = rng.standard_normal((M, 1))
    # each outcome on its own resample of the M tables: a fresh bootstrap of the sweep after the
    # run spreads by chance too, and the realised narrowing carries that chance
    pick = rng.integers(0, M, size=(R, M))
    rows_B = np.r_[B, np.nan]  # the sweep's batch sizes and the action's
    after, info = [], []  # per action: the R outcomes' spreads after it
    for act in actions:
        mu = _curve(a_draws[k_draw], b_draws[k_draw], alpha, act["B"])  # (R,)
        mu_hat = float(_curve(a_hat, b_hat, alpha, act["B"]))
        if act["row"] is None:
            z = stats.norm.ppf(q)
            out = mu + sd * z
            stop = math.log(budget)
            p_reach = float(stats.norm.cdf((stop - mu_hat) / sd))
            to = budget
        else:
            lo_z = (math.log(act["from"]) - mu) / sd
            z = stats.norm.ppf(stats.norm.cdf(lo_z) + (1 - stats.norm.cdf(lo_z)) * q)
            z = np.where(np.isfinite(z), z, lo_z + 0.1)
            out = mu + sd * z
            lo1 = (math.log(act["from"]) - mu_hat) / sd
            to = float(_round_up(max(1.25 * act["from"], math.exp(mu_hat + sd * max(lo1, 0.0) + 1.28 * sd))))
            stop = math.log(to)
            p_reach = float((stats.norm.cdf((stop - mu_hat) / sd) - stats.norm.cdf(lo1)) / max(1 - stats.norm.cdf(lo1), 1e-12))
        reached = out < stop
        spread = _remeasure_sd(d, mu_hat, eval_new)
        blocks_Y, blocks_W, blocks_C = [], [], []
        for r in range(R):
            Y, W, C = (x[pick[r]] for x in (Y0, W0, C0))
            col_y = np.where(reached[r], out[r] + spread * e[:, 0], stop)
            col_c = np.full(M, not reached[r])
            if act["row"] is None:
                same = np.flatnonzero(B == act["B"])
                w_new = np.ones(M)
                if same.size:
                    # a repeat makes its configuration replicated: as fit_phase does, its runs are
                    # then resampled (weights summing to 1), not re-measured with eval noise
                    k = same.size + 1
                    cnt = rng.multinomial(k, np.full(k, 1.0 / k), size=M) / k
                    Y[:, same], C[:, same], W[:, same] = log_S[same], cens[same], cnt[:, :-1]
                    w_new = cnt[:, -1]
                    col_y = np.full(M, out[r] if reached[r] else stop)
                Y, W, C = np.column_stack([Y, col_y]), np.column_stack([W, w_new]), np.column_stack([C, col_c])
            else:
                Y[:, act["row"]], C[:, act["row"]] = col_y, col_c
                Y, W, C = np.column_stack([Y, np.zeros(M)]), np.column_stack([W, np.zeros(M)]), \
                    np.column_stack([C, np.zeros(M, bool)])
            blocks_Y.append(Y)
            blocks_W.append(W)
            blocks_C.append(C)
        rows_B[-1] = act["B"]  # refit now: only one action's R x M tables are ever held
        after.append(_refit_spreads(rows_B, np.concatenate(blocks_Y), np.concatenate(blocks_W),
                                    np.concatenate(blocks_C), bb, R))
        steps_used = np.where(reached, np.exp(out), math.exp(stop)) - act["from"]
        info.append({"p_reach": p_reach, "to": to, "steps": float(np.mean(steps_used)), "mu_hat": mu_hat})
    base = _refit_spreads(B, Y0, W0, C0, bb, 1)[0]
    if not np.isfinite(base) or base <= 0:
        return empty
    # the spread now, on resamples independent of the ones after: the reported interval's width
    # carries chance too (a width that is wide by chance narrows more), so the band must
    pick0 = rng.integers(0, M, size=(R, M))
    base_r = _refit_spreads(B, *(np.concatenate([x[p] for p in pick0]) for x in (Y0, W0, C0)), bb, R)
    base_r = np.where(np.isfinite(base_r) & (base_r > 0), base_r, base)
    nar = 1 - np.array(after) / base_r
    T, _ = predict_step_time(step_model or {}, np.array([a["n_prompts"] for a in actions], dtype=float),
                             np.array([a["n_rollouts"] for a in actions], dtype=float))
    Bs = np.array([a["B"] for a in actions])
    gpus, _ = gpu_counts(step_times, Bs) if step_times is not None and len(step_times) else (np.full(len(Bs), np.nan), "")
    all_known = step_times is not None and len(step_times) and step_times["n_gpus"].notna().all()
    steps = np.array([i["steps"] for i in info])
    hours = steps * T / 3600.0
    if np.isfinite(hours).any() and all_known:
        cost, unit = hours * gpus, "GPU-hours"
    elif np.isfinite(hours).any():
        cost, unit = hours, "hours"
    else:
        cost, unit = steps * Bs / 1e6, "million samples"
    mean_nar = np.nanmean(np.where(np.isfinite(nar), nar, np.nan), axis=1)
    score = mean_nar / cost
    order = [j for j in np.argsort(-np.nan_to_num(score, nan=-np.inf)) if np.isfinite(score[j])
             and mean_nar[j] >= min_gain][:max_runs]
    reached_B = B[~cens]
    rows = []
    for rank, j in enumerate(order, start=1):
        act, inf = actions[j], info[j]
        ratio = 1 - mean_nar[j]
        lo_after = math.exp(b_hat + (math.log(fit["B_noise_lo"]) - b_hat) * ratio) if fit["B_noise_lo"] > 0 else np.nan
        hi_after = math.exp(b_hat + (math.log(fit["B_noise_hi"]) - b_hat) * ratio) if fit["B_noise_hi"] > 0 else np.nan
        inside = len(reached_B) and reached_B.min() <= act["B"] <= reached_B.max()
        note = [f"{R} outcomes x {M} bootstrap tables; noise sd of log S {sd:.3f} (scatter about the fit)"]
        if act["row"] is None and act["B"] in B:
            note.append("repeats a sampled batch size")
        if not inside:
            note.append("beyond the batch sizes that reached the target: the outcome extrapolates the fit")
        rows.append({"threshold": t, "rank": rank, "action": act["action"], "run_name": act["run_name"],
                     "n_prompts": act["n_prompts"], "n_rollouts": act["n_rollouts"], "total_batch": int(act["B"]),
                     "from_step": act["from"], "to_step": inf["to"], "p_reach": inf["p_reach"],
                     "B_noise": float(fit["B_noise"]), "B_noise_lo": float(fit["B_noise_lo"]),
                     "B_noise_hi": float(fit["B_noise_hi"]), "expected_lo_after": lo_after,
                     "expected_hi_after": hi_after, "expected_narrowing": float(mean_nar[j]),
                     "narrowing_lo": float(np.nanquantile(nar[j], 0.1)), "narrowing_hi": float(np.nanquantile(nar[j], 0.9)),
                     "predicted_steps": math.exp(inf["mu_hat"]), "predicted_hours": float(hours[j]),
                     "predicted_gpu_hours": float(hours[j] * gpus[j]) if all_known else np.nan,
                     "cost": float(cost[j]), "cost_unit": unit, "narrowing_per_cost": float(score[j]),
                     "basis": "interpolated" if inside and fit["status"] == "ok" else "extrapolated",
                     "noise_sd_log": sd, "n_simulations": M, "note": "; ".join(note)})
    out = pd.DataFrame(rows, columns=NEXT_RUNS_COLUMNS)
    return out.astype({"rank": "Int64", "n_prompts": "Int64", "n_rollouts": "Int64", "total_batch": "Int64"})


def fixed_rule_actions(sb_eb: pd.DataFrame, draws: dict, cbs_fit: pd.DataFrame, target: float) -> dict:
    """The baselines the ranking must beat (the issue's fixed rules), as (n_prompts, n_rollouts,
    extend run name or ''): repeat the sampled batch size nearest B_noise; extend the longest
    censored run; one octave beyond the largest sampled batch size."""
    fit = cbs_fit[cbs_fit["threshold"].astype(float) == target].iloc[0]
    sub = sb_eb[sb_eb["threshold"] == target]
    configs = sub.drop_duplicates(["n_prompts", "n_rollouts"])
    Bs = _floats(configs["total_batch"])
    near = configs.iloc[int(np.argmin(np.abs(np.log(Bs) - math.log(fit["B_noise"]))))]
    big = configs.iloc[int(np.argmax(Bs))]
    out = {"repeat": (int(near["n_prompts"]), int(near["n_rollouts"]), ""),
           "octave_beyond": (int(big["n_prompts"]) * 2, int(big["n_rollouts"]), "")}
    cens = sub[sub["censored"].astype(bool) & sub["S_B"].notna()]
    if len(cens):
        longest = cens.loc[cens["S_B"].astype(float).idxmax()]
        out["extend_longest"] = (int(longest["n_prompts"]), int(longest["n_rollouts"]), str(longest["run_name"]))
    return out
