"""fit_phase: a phase's S(B) table and its fit, pooled over the targets, the form chosen by what
predicts, intervals from the pooled parametric bootstrap (forms.py, resample.py, _tobit.py).

The steps: measure S and E per run and target (measure.py, the envelope of a learning-rate sweep);
put every run's log S at every target with at least 3 batch sizes reaching it into one fit; fit
each form; weigh the forms by leave-one-batch-size-out prediction; draw K tables from the best
description with the phase's pooled scatter and refit every form on them; mix the forms' draws in
proportion to their weights. cbs_fit.csv gives, per target, the chosen form's point values (the
form of highest weight) with the model-averaged 95% intervals.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..data.select import DEFAULT_METAPARAMETERS
from ..measure.crossings import eval_series, run_meta, sb_eb_from_series
from ._tobit import Cells, Layout, predict
from .curves import overhead_batch, samples_minimum
from .evalnoise import eval_noise_sd
from .forms import (
    FORMS,
    cross_validate,
    fit_form,
    folds,
    form_weights,
    forms_for,
    free_mask,
    merge_equivalent,
    refit,
)
from .interval import bootstrap_interval, ci_shortfall
from .resample import estimate_scatter, parametric_tables
from .result import FitData, PhaseFit

FIT_STATUSES = ("ok", "extrapolated", "insufficient", "failed")
CBS_FIT_COLUMNS = [
    "threshold", "B_noise", "B_noise_lo", "B_noise_hi", "S_min", "E_min", "B_crit_20pct",
    "r2_log", "n_points", "n_censored", "status", "reason",
    "alpha", "alpha_lo", "alpha_hi", "model", "B_noise_mccandlish",
]
CBS_FIT_EXTRA_COLUMNS = [
    "S_min_lo", "S_min_hi", "B_noise_mccandlish_lo", "B_noise_mccandlish_hi", "weight_mccandlish",
    "weight_general", "form", "sigma_log", "n_batch_sizes", "n_reached", "B_reached_min", "B_reached_max",
    "ci_method", "n_bootstrap_ok", "E_min_note", "units", "n_envelope_dropped",
]
#: S at the largest batch that reached a target above this multiple of S_min: S_min was not
#: approached, and B_noise (defined by S(B_noise) = 2 S_min) rests on an extrapolated S_min
S_MIN_APPROACHED = 1.5
#: an interval end beyond this multiple of the largest batch reached is no bound in practice
UNBOUNDED_FACTOR = 100.0
_SEARCH_DECADES = 3.0
_BOUND_TOL = 1e-3
#: runs whose eval noise is measured (its median over runs is the scatter's floor)
MAX_EVAL_NOISE_RUNS = 100
#: bootstrap cells (tables x runs x targets) refitted at once
_BLOCK_CELLS = 1 << 20


def target_coordinates(thresholds) -> np.ndarray:
    """z_j = t_j - mean(t), in accuracy: beta1 is the slope of log B_noise in the target accuracy,
    bounded (BETA1_MAX per unit of accuracy), so targets close together share their B_noise."""
    t = np.asarray(thresholds, dtype=float)
    return t - t.mean() if t.size else t


def _distinct_reached(B, reached) -> np.ndarray:
    """Per table (row of `reached` (K, R)), how many distinct batch sizes have a reached row."""
    _, inv = np.unique(B, return_inverse=True)
    counts = np.zeros((reached.shape[0], inv.max() + 1), dtype=np.int32)
    for g in range(inv.max() + 1):
        counts[:, g] = reached[:, inv == g].any(axis=1)
    return counts.sum(axis=1)


def _empty_row(t: float, n_points: int, n_censored: int, status: str, reason: str) -> dict:
    row = dict.fromkeys(CBS_FIT_COLUMNS + CBS_FIT_EXTRA_COLUMNS, np.nan)
    row.update({"threshold": float(t), "n_points": int(n_points), "n_censored": int(n_censored),
                "status": status, "reason": reason, "model": "", "form": "", "ci_method": "",
                "E_min_note": "", "n_bootstrap_ok": 0})
    return row


def fit_arrays(B, Y, C, W, groups, bounds, thresholds, n_bootstrap: int = 1000, seed: int = 0,
               eval_sd_rows=None, notes=(), run_id=None, run_name=None, forms=None,
               sb_eb: pd.DataFrame | None = None) -> PhaseFit:
    """The fit of one phase from arrays: B (R,) batch per run (in the fit's units), Y (R, T) log S
    at each threshold, C (R, T) censored, W (R, T) weights (0: not used), groups (R,) batch-point
    codes (replicates share one), bounds (R,) log of each run's last evaluated step. Every target
    with 3 or more batch sizes reaching it enters one pooled fit; the others are `insufficient`."""
    B = np.asarray(B, dtype=float)
    thr = np.asarray(thresholds, dtype=float)
    R, T = len(B), len(thr)
    groups = np.asarray(groups)
    notes = [n for n in notes if n]
    reached = (W > 0) & ~C
    n_sizes = np.array([len(np.unique(B[W[:, j] > 0])) for j in range(T)])
    n_reached = np.array([len(np.unique(B[reached[:, j]])) for j in range(T)])
    fitted = np.flatnonzero(n_reached >= 3)
    rows = {}
    for j in range(T):
        if n_reached[j] < 3:
            rows[j] = _empty_row(thr[j], (W[:, j] > 0).sum(), ((W[:, j] > 0) & C[:, j]).sum(), "insufficient",
                                 "; ".join([f"{n_reached[j]} batch size(s) reach the target, 3 needed", *notes]))
    result = PhaseFit(sb_eb=sb_eb if sb_eb is not None else pd.DataFrame(), table=pd.DataFrame(),
                      thresholds=thr, fitted=fitted, z=target_coordinates(thr[fitted]))
    if not len(fitted):
        result.table = _table(rows, T)
        result.table["n_batch_sizes"] = n_sizes
        result.table["n_reached"] = n_reached
        return result
    x = np.log(B)
    bb = (float(x.min() - _SEARCH_DECADES * math.log(10)), float(x.max() + _SEARCH_DECADES * math.log(10)))
    cells = Cells(x, result.z, Y[None][:, :, fitted], W[None][:, :, fitted], C[None][:, :, fitted], bb)
    lay = Layout(result.z)
    result.layout = lay
    result.data = FitData(run_id=np.asarray(run_id if run_id is not None else np.arange(R)).astype(str),
                          run_name=np.asarray(run_name if run_name is not None else np.arange(R)).astype(str),
                          group=groups, B=B, x=x, Y=Y[:, fitted], C=C[:, fitted], W=W[:, fitted],
                          bounds=np.asarray(bounds, dtype=float))
    names = [f for f in forms_for(len(fitted), int(n_reached[fitted].max())) if forms is None or f in forms]
    fits = {}
    with np.errstate(all="ignore"):
        for name in names:
            fit = fit_form(cells, lay, name, mc=fits.get("mccandlish") if name == "general" else fits.get("general"))
            if fit.ok:
                fits[name] = fit
        names = list(fits)
        b_codes = np.unique(B, return_inverse=True)[1]
        fold_rows = folds(b_codes, x)
        elpd = cross_validate(cells, lay, fits, fold_rows) if len(fits) > 1 else {n: np.zeros(1) for n in fits}
    # the scatter about the richest form fitted (it nests McCandlish)
    rich = "general" if "general" in fits else names[0]
    f_hat, sig = predict(cells, lay, fits[rich].theta[None])
    eval_sd = None if eval_sd_rows is None else eval_sd_rows[:, fitted]
    scatter = estimate_scatter(cells.Y[0], cells.C[0], cells.W[0], f_hat[0], sig[0, 0], groups,
                               int(free_mask(rich, lay).sum()), eval_sd)
    # a run's deviations at its targets go together: the held-out evidence counts its effective cells
    weights = merge_equivalent(form_weights({n: v * scatter.design_effect() for n, v in elpd.items()}, seed=seed),
                               fits, lay)
    result.forms, result.elpd, result.weights = fits, elpd, weights
    result.chosen = max(names, key=lambda n: (weights[n], -FORMS.index(n)))
    # the bootstrap's truth: the best-weighted form that bends (it nests alpha = 1), else McCandlish
    general = [n for n in names if n != "mccandlish"]
    gen = max(general, key=lambda n: weights[n]) if general else "mccandlish"
    if gen != rich:
        f_hat, sig = predict(cells, lay, fits[gen].theta[None])
        scatter = estimate_scatter(cells.Y[0], cells.C[0], cells.W[0], f_hat[0], sig[0, 0], groups,
                                   int(free_mask(gen, lay).sum()), eval_sd)
    result.scatter = scatter
    K = int(n_bootstrap or 0)
    if K > 0:
        _bootstrap(result, cells, lay, f_hat[0], scatter, K, seed)
    for i, j in enumerate(fitted):
        rows[j] = _target_row(result, i, j, n_sizes[j], n_reached[j], notes, K)
    result.table = _table(rows, T)
    result.table["n_batch_sizes"] = n_sizes
    result.table["n_reached"] = n_reached
    return result


def _bootstrap(result: PhaseFit, cells: Cells, lay: Layout, f_hat, scatter, K: int, seed: int) -> None:
    """Refit every form on K parametric tables (in blocks), and assign each draw a form in
    proportion to the weights (forms below 0.5% weight are not refitted and take no draws)."""
    rng = np.random.default_rng(seed)
    d = result.data
    Y, W, C = parametric_tables(f_hat, cells.W[0], d.bounds, d.group, scatter, K, rng)
    # forms of no weight are not refitted (but the bent form's alpha and the 1/B B_noise keep an interval
    # unless they carry no weight at all)
    names = [n for n in result.forms if result.weights[n] >= 0.005 or (n == "general" and "general_trend" not in
                                                                        result.weights)]
    R, J = Y.shape[1], Y.shape[2]
    step = max(1, _BLOCK_CELLS // max(R * J, 1))
    draws = {n: np.empty((K, lay.P)) for n in names}
    with np.errstate(all="ignore"):
        for k0 in range(0, K, step):
            block = Cells(cells.x, cells.z, Y[k0:k0 + step], W[k0:k0 + step], C[k0:k0 + step], cells.b_bounds)
            for n in names:
                draws[n][k0:k0 + step] = refit(block, lay, result.forms[n])[0]
    reached = (W > 0) & ~C
    bad = np.stack([_distinct_reached(d.B, reached[:, :, j]) < 3 for j in range(J)], axis=1)
    span = cells.b_bounds[1] - cells.b_bounds[0]
    for n in names:
        b = lay.local(draws[n])[:, :, 1]
        result.at_bound[n] = ((b - cells.b_bounds[0]) < _BOUND_TOL * span) | ((cells.b_bounds[1] - b) < _BOUND_TOL * span)
        result.bad[n] = bad
    result.draws = draws
    # the model average: each draw taken from one form, the forms in proportion to their weights
    w = np.array([result.weights[n] if n in names else 0.0 for n in result.forms])
    w = w / w.sum()
    counts = np.floor(w * K).astype(int)
    counts[np.argsort(-(w * K - counts))[: K - counts.sum()]] += 1
    order = list(result.forms)
    assign = np.repeat(np.arange(len(order)), counts)
    result.assign = rng.permutation(assign)


def _target_row(res: PhaseFit, i: int, j: int, n_sizes: int, n_reached: int, notes, K: int) -> dict:
    """cbs_fit.csv's row of fitted target i (threshold index j)."""
    d = res.data
    t = float(res.thresholds[j])
    used = d.W[:, i] > 0
    row = _empty_row(t, used.sum(), (used & d.C[:, i]).sum(), "ok", "")
    row.update({"n_batch_sizes": int(n_sizes), "n_reached": int(n_reached), "form": res.chosen,
                "model": "mccandlish" if res.chosen == "mccandlish" else "general",
                "weight_mccandlish": res.weights.get("mccandlish", 0.0),
                "weight_general": sum(v for n, v in res.weights.items() if n != "mccandlish")})
    p = res.params(t)
    reach = used & ~d.C[:, i]
    B_lo, B_hi = float(d.B[reach].min()), float(d.B[reach].max())
    row.update({"B_noise": p["B_noise"], "S_min": p["S_min"], "sigma_log": p["sigma"],
                "B_reached_min": B_lo, "B_reached_max": B_hi})
    alpha_used = p["alpha"] if res.chosen != "mccandlish" else 1.0
    _, row["E_min"] = samples_minimum(p["S_min"], p["B_noise"], alpha_used)
    row["B_crit_20pct"] = overhead_batch(p["S_min"], p["B_noise"], alpha_used)
    if alpha_used < 1.0:
        row["E_min_note"] = ("no samples minimum: with alpha < 1 smaller batches always need fewer samples "
                             "(no 20%-overhead batch)")
    # r2 of log S over the runs that reached the target
    f = res.log_steps(t, d.B)
    w, y = d.W[reach, i], d.Y[reach, i]
    ybar = np.average(y, weights=w)
    tss = float((w * (y - ybar) ** 2).sum())
    row["r2_log"] = 1.0 - float((w * (y - f[reach]) ** 2).sum()) / tss if tss > 0 else np.nan
    reasons = []
    if np.isfinite(row["r2_log"]) and row["r2_log"] < 0:
        reasons.append(f"poor fit: the curve explains less of the spread of log S than their mean "
                       f"(R² = {row['r2_log']:.2f}); read the estimate with care")
    # the general family's alpha, the 1/B form's B_noise, whichever form is chosen
    gen = [n for n in res.forms if n != "mccandlish" and (n in res.draws or not K)]
    g = max(gen, key=lambda n: res.weights[n]) if gen else None
    if g is not None:
        row["alpha"] = res.params(t, g)["alpha"]
    if "mccandlish" in res.forms:
        row["B_noise_mccandlish"] = res.params(t, "mccandlish")["B_noise"]
    b_bounds = (d.x.min() - _SEARCH_DECADES * math.log(10), d.x.max() + _SEARCH_DECADES * math.log(10))
    span = b_bounds[1] - b_bounds[0]
    b = math.log(p["B_noise"])
    if (b - b_bounds[0]) < _BOUND_TOL * span or (b_bounds[1] - b) < _BOUND_TOL * span:
        row["status"] = "failed"
        row["reason"] = "; ".join(["B_noise runs to a search bound (S flat in B, or like 1/B throughout): "
                                   "not identifiable from these runs", *notes])
        return row
    approach = (p["B_noise"] / B_hi) ** alpha_used
    if p["B_noise"] < B_lo or p["B_noise"] > B_hi:
        row["status"] = "extrapolated"
        reasons.append(f"B_noise = {p['B_noise']:,.0f} lies outside the batch sizes that reached the target "
                       f"({B_lo:,.0f} to {B_hi:,.0f})")
    elif approach > S_MIN_APPROACHED - 1.0:
        row["status"] = "extrapolated"
        reasons.append(f"S_min is not approached: at the largest batch that reached the target (B = {B_hi:,.0f}) "
                       f"S is still {1 + approach:.1f} x S_min, so S_min and B_noise rest on the fitted form "
                       "beyond the runs")
    if K:
        reasons += _intervals(res, row, t, i, b, g, B_hi, K)
    row["reason"] = "; ".join(filter(None, [*reasons, *notes]))
    return row


def _intervals(res: PhaseFit, row: dict, t: float, i: int, b: float, g, B_hi: float, K: int) -> list:
    """Fill row's bootstrap intervals (B_noise, S_min, alpha, the 1/B form's B_noise) of fitted
    target i; returns the notes they leave for the reader."""
    lay = res.layout
    dr = res.param_draws(t)
    ok = dr["ok"]
    at = np.zeros(K, dtype=bool)
    for m, n in enumerate(res.form_names):
        rows = np.flatnonzero(res.assign == m)
        if rows.size:
            at[rows] = res.at_bound[n][rows, i]
    bn = np.where(ok, np.where(at & (dr["log_B_noise"] < b), 0.0, np.where(at, np.inf, np.exp(dr["log_B_noise"]))), np.nan)
    sm = np.where(ok, np.exp(dr["log_S_min"]), np.nan)
    row["n_bootstrap_ok"] = int(ok.sum())
    row["B_noise_lo"], row["B_noise_hi"], b_note = bootstrap_interval(row["B_noise"], bn, "B_noise")
    row["S_min_lo"], row["S_min_hi"], s_note = bootstrap_interval(row["S_min"], sm, "S_min")
    if g is not None:
        row["alpha_lo"], row["alpha_hi"], a_note = bootstrap_interval(
            row["alpha"], np.where(~res.bad[g][:, i], lay.local(res.draws[g])[:, i, 2], np.nan), "alpha")
    else:
        a_note = ""
    if "mccandlish" in res.draws:
        bm = lay.local(res.draws["mccandlish"])[:, i, 1]
        row["B_noise_mccandlish_lo"], row["B_noise_mccandlish_hi"], _ = bootstrap_interval(
            row["B_noise_mccandlish"], np.where(~res.bad["mccandlish"][:, i], np.exp(bm), np.nan))
    row["ci_method"] = "parametric, pooled scatter" + ("" if len(res.forms) == 1 else ", forms mixed")
    short = ci_shortfall(K, row["n_bootstrap_ok"])
    reasons = [short] if short else [b_note, s_note, a_note]
    if np.isfinite(row["B_noise_hi"]) and row["B_noise_hi"] > UNBOUNDED_FACTOR * B_hi or row["B_noise_hi"] == np.inf:
        reasons.append(f"no upper bound from these runs: B_noise could exceed {UNBOUNDED_FACTOR:g} x the largest "
                       "batch that reached the target")
    return reasons


def _table(rows: dict, T: int) -> pd.DataFrame:
    out = pd.DataFrame([rows[j] for j in range(T)], columns=CBS_FIT_COLUMNS + CBS_FIT_EXTRA_COLUMNS)
    return out.astype({"n_points": int, "n_censored": int, "n_bootstrap_ok": int})


def sb_arrays(sb: pd.DataFrame, run_ids: list, thr: list, groups, scale=None, B=None) -> dict:
    """The S(B) table of one or more phases as the arrays a fit takes, one row per run of `run_ids`:
    Y (R, T) log S (in `scale` units per step), C censored, W weights (the envelope's runs only,
    each batch point of `groups` weighing 1 at a target), bounds (log of each run's last evaluated
    step), and notes on what was left out."""
    R, T = len(run_ids), len(thr)
    scale = np.ones(R) if scale is None else np.asarray(scale, dtype=float)
    key = sb.set_index(["run_id", "threshold"])
    idx = pd.MultiIndex.from_product([list(run_ids), thr])
    S = key["S_B"].reindex(idx).to_numpy(dtype=float).reshape(R, T) * scale[:, None]
    C = key["censored"].reindex(idx).fillna(False).to_numpy(dtype=bool).reshape(R, T)
    env = key["in_envelope"].reindex(idx).fillna(False).to_numpy(dtype=bool).reshape(R, T) \
        if "in_envelope" in key.columns else np.ones((R, T), dtype=bool)
    last = key["last_eval_step"].reindex(idx).to_numpy(dtype=float).reshape(R, T)[:, 0] * scale
    B = np.ones(R) if B is None else np.asarray(B, dtype=float)
    valid = np.isfinite(S) & (S > 0) & np.isfinite(B)[:, None] & (B > 0)[:, None]
    notes = []
    n_bad = int((np.isfinite(S) & (S <= 0)).any(axis=1).sum())
    if n_bad:
        notes.append(f"{n_bad} run(s) with S = 0 at some target (met at step 0) left out there")
    n_dropped = int((valid & ~env).sum(axis=0).max()) if T else 0
    if n_dropped:
        notes.append(f"{n_dropped} run(s) of a losing configuration left out (envelope)")
    use = valid & env
    groups = np.asarray(groups)
    W = np.zeros((R, T))
    for j in range(T):
        g = pd.Series(groups[use[:, j]])
        W[use[:, j], j] = 1.0 / g.map(g.value_counts()).to_numpy(dtype=float)
    Y = np.log(np.where(use, S, 1.0))
    bounds = np.log(np.where(np.isfinite(last) & (last > 0), last, np.inf))
    return {"Y": Y, "C": C & use, "W": W, "groups": groups, "bounds": bounds, "notes": notes, "n_dropped": n_dropped}


def fit_phase(runs: pd.DataFrame, history: pd.DataFrame, metric: str, thresholds, n_val: int,
              n_bootstrap: int = 1000, seed: int = 0, method: str = "isotonic",
              metaparameters=DEFAULT_METAPARAMETERS, units: str = "steps", forms=None) -> PhaseFit:
    """The S(B)/E(B) table of one phase's runs and its pooled fit over the targets (module
    docstring). Metaparameter sweeps: at each batch size and target only the best configuration
    (the envelope, `in_envelope` in the S(B) table) enters the fit. units: 'steps' fits S in rollout
    steps against B = n_prompts x n_rollouts samples; 'updates' fits S in optimizer updates against
    the samples per update, leaving out runs whose updates per step are unknown. n_val (the
    validation set's size) sets the eval-noise floor of the scatter. Returns a PhaseFit (result.py):
    `.sb_eb` the S(B) table, `.table` cbs_fit.csv."""
    if units not in ("steps", "updates"):
        raise ValueError(f"units must be 'steps' or 'updates', not {units!r}")
    thr = [float(t) for t in np.atleast_1d(thresholds)]
    meta = run_meta(runs, metaparameters)
    series_all = eval_series(history, metric)
    sb = sb_eb_from_series(meta, series_all, thr, method)
    R = len(meta)
    B_run = meta["total_batch"].to_numpy(dtype=float)
    scale = meta["updates_per_step"].to_numpy(dtype=float) if units == "updates" else np.ones(R)
    notes = []
    if units == "updates" and (~np.isfinite(scale)).any():
        notes.append(f"{int((~np.isfinite(scale)).sum())} run(s) without updates per step (no "
                     "ppo_mini_batch_size in the config) left out")
    B_fit = B_run / scale
    arr = sb_arrays(sb, meta["run_id"].tolist(), thr, groups=[f"{p}x{r}|{c}" for p, r, c in zip(
        meta["n_prompts"], meta["n_rollouts"], meta["configuration"], strict=True)], scale=scale, B=B_fit)
    notes += arr["notes"]
    n_dropped = arr["n_dropped"]
    Y, C, W, groups, bounds = arr["Y"], arr["C"], arr["W"], arr["groups"], arr["bounds"]
    keep = np.isfinite(B_fit) & (B_fit > 0)
    series = [series_all.get(rid, (np.array([]), np.array([]), 0))[:2] for rid in meta["run_id"]]
    # the eval-noise floor is a median over runs: a hundred runs spread over the batch sizes tell it
    idx = np.flatnonzero(keep)
    idx_by_b = idx[np.argsort(B_fit[idx], kind="stable")]
    probe = idx_by_b[np.unique(np.linspace(0, len(idx) - 1, min(len(idx), MAX_EVAL_NOISE_RUNS)).astype(int))] \
        if len(idx) else idx
    eval_sd = np.full((len(idx), len(thr)), np.nan)
    eval_sd[np.searchsorted(idx, probe)] = eval_noise_sd([series[i] for i in probe], thr, n_val, seed=seed,
                                                         method=method)
    res = fit_arrays(B_fit[keep], Y[keep], C[keep], W[keep], groups[keep], bounds[keep], thr,
                     n_bootstrap=n_bootstrap, seed=seed, eval_sd_rows=eval_sd, notes=notes,
                     run_id=meta["run_id"].to_numpy()[keep], run_name=meta["run_name"].to_numpy()[keep],
                     forms=forms, sb_eb=sb)
    if res.data is not None:
        res.data.n_prompts = meta["n_prompts"].to_numpy(dtype=float)[keep]
        res.data.n_rollouts = meta["n_rollouts"].to_numpy(dtype=float)[keep]
    res.units = "optimizer updates" if units == "updates" else "rollout steps"
    res.table["units"] = res.units
    res.table["n_envelope_dropped"] = n_dropped
    return res
