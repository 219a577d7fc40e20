"""The crossing fit of a running sweep with its running runs' forecasts: multiple imputation.

A running run below a target enters fit_phase as a lower bound (its last evaluated step). Its
evaluations say more than that: where it stands and how fast it goes, which the progress model
turns into a forecast of the step it will cross at (fit/runpath.py). Here each such cell is
imputed M times from that forecast (draws of the predictive, above the bound; a draw beyond the
run's step budget is a lower bound at the budget, where the run will stop), the phase refitted on
each completed table with its share of the bootstrap, and the bootstrap draws of the M fits
pooled: the intervals carry both the sampling scatter and the forecasts' own uncertainty (Rubin's
rules, done by mixing draws). The point values are those of the fit on the table completed with
the forecasts' medians. A run imputed this way continues, in the bootstrap's tables, to its
budget. Runs that stopped keep their lower bounds, so a finished sweep's answers do not change.

`targets='fitted'` (the report's answer) imputes only at targets the crossings already fit (3
batch sizes or more reached them), so the targets a report answers are those its runs reached;
`targets='all'` imputes wherever a forecast exists: the sweep as it will stand if every run goes
on (what the stop list weighs), its n_reached counting the crossings forecast within budget.

The fit's `data` keeps the measured table (imputed cells censored at their bound, as measured):
what a configuration's runs reached is what the plan calls measured.
"""

from __future__ import annotations

import numpy as np

from .phase import CBS_FIT_COLUMNS, CBS_FIT_EXTRA_COLUMNS, _target_row, fit_arrays, sb_arrays
from .result import PhaseFit

#: completed tables (each with its share of the bootstrap)
N_IMPUTATIONS = 5
#: cbs_fit.csv columns the measured table decides (not the imputed refit)
_KEPT = ("units", "n_envelope_dropped", "n_batch_sizes", "n_reached")


def _measured(fit: PhaseFit) -> dict:
    """Y, C, W (R, T) at every threshold of the fit's runs (fit_phase's arrays, rollout steps)."""
    d = fit.data
    arr = sb_arrays(fit.sb_eb, list(d.run_id), [float(t) for t in fit.thresholds], d.group, B=d.B)
    return {"Y": arr["Y"], "C": arr["C"], "W": arr["W"], "bounds": d.bounds.copy()}


def _completed(fit: PhaseFit, base: dict, cells: dict, m: int | None, allowed: np.ndarray):
    """Y, C, bounds with the imputed cells (draw m of each, or the median where m is None) at the
    thresholds `allowed`; the imputed mask; a run all of whose censored cells are imputed runs on
    to its budget."""
    d = fit.data
    Y, C, bounds = base["Y"].copy(), base["C"].copy(), base["bounds"].copy()
    rows = {rid: i for i, rid in enumerate(d.run_id)}
    cols = {float(t): j for j, t in enumerate(fit.thresholds)}
    imputed = np.zeros(Y.shape, dtype=bool)
    budgets = {}
    for (rid, t), (draws, log_budget) in cells.items():
        r, j = rows.get(str(rid)), cols.get(float(t))
        if r is None or j is None or not allowed[j] or not C[r, j] or base["W"][r, j] <= 0 or not len(draws):
            continue
        y = float(np.median(draws)) if m is None else float(draws[m % len(draws)])
        Y[r, j], C[r, j] = min(y, log_budget), y >= log_budget
        imputed[r, j] = True
        budgets[r] = log_budget
    for r, log_budget in budgets.items():
        if imputed[r][base["C"][r] & (base["W"][r] > 0)].all():
            bounds[r] = max(bounds[r], log_budget)
    return Y, C, bounds, imputed


def _fit(fit: PhaseFit, base: dict, Y, C, bounds, n_bootstrap: int, seed: int) -> PhaseFit:
    d = fit.data
    eval_sd = None
    if fit.scatter is not None and np.isfinite(fit.scatter.eval_sd).any():
        sd = np.full(len(fit.thresholds), np.nan)
        sd[fit.fitted] = fit.scatter.eval_sd
        eval_sd = np.tile(sd, (len(d.B), 1))
    return fit_arrays(d.B, Y, C, base["W"], d.group, bounds, fit.thresholds, n_bootstrap=n_bootstrap, seed=seed,
                      eval_sd_rows=eval_sd, run_id=d.run_id, run_name=d.run_name, sb_eb=fit.sb_eb)


def _pool(point: PhaseFit, parts: list[PhaseFit]) -> None:
    """The bootstrap draws of `parts` (those fitting the same targets), each form's refits stacked,
    into `point`."""
    names = point.form_names
    draws, bad, at = {n: [] for n in names}, {n: [] for n in names}, {n: [] for n in names}
    assign = []
    J = len(point.fitted)
    for p in parts:
        if p.assign is None or not np.array_equal(p.fitted, point.fitted):
            continue
        keep = np.array([p.form_names[a] in names and p.form_names[a] in p.draws for a in p.assign])
        k = int(keep.sum())
        for n in names:
            draws[n].append(p.draws[n][keep] if n in p.draws else np.full((k, point.layout.P), np.nan))
            bad[n].append(p.bad[n][keep] if n in p.bad else np.ones((k, J), bool))
            at[n].append(p.at_bound[n][keep] if n in p.at_bound else np.zeros((k, J), bool))
        assign.append(np.array([names.index(p.form_names[a]) for a in p.assign[keep]], dtype=int))
    if not assign:
        return
    point.draws = {n: np.concatenate(v) for n, v in draws.items()}
    point.bad = {n: np.concatenate(v) for n, v in bad.items()}
    point.at_bound = {n: np.concatenate(v) for n, v in at.items()}
    point.assign = np.concatenate(assign)


def fit_with_forecasts(fit: PhaseFit, cells: dict, n_bootstrap: int = 1000, n_imputations: int = N_IMPUTATIONS,
                       seed: int = 0, targets: str = "fitted") -> PhaseFit:
    """The phase's fit with the running runs' cells imputed (module docstring). cells: (run_id,
    threshold) -> (log-step draws of its crossing, log of the run's step budget). Returns `fit`
    itself when no cell is imputed (a sweep with no running run below a target)."""
    if fit.data is None or not len(fit.fitted) or not cells or fit.units != "rollout steps":
        return fit
    base = _measured(fit)
    allowed = np.zeros(len(fit.thresholds), dtype=bool)
    allowed[fit.fitted if targets == "fitted" else slice(None)] = True
    Y0, C0, b0, imputed = _completed(fit, base, cells, None, allowed)
    if not imputed.any():
        return fit
    point = _fit(fit, base, Y0, C0, b0, 0, seed)
    if not len(point.fitted):
        return fit
    k_each = int(np.ceil(n_bootstrap / max(n_imputations, 1))) if n_bootstrap else 0
    parts = [_fit(fit, base, *_completed(fit, base, cells, m, allowed)[:3], k_each, seed + 1 + m)
             for m in range(n_imputations if k_each else 0)]
    _pool(point, parts)
    reached = ((base["W"] > 0) & ~C0)
    # the measured table again: imputed cells are lower bounds, as measured
    d, cols = point.data, point.fitted
    d.Y, d.C, d.bounds = base["Y"][:, cols], base["C"][:, cols] & (base["W"][:, cols] > 0), base["bounds"].copy()
    d.n_prompts, d.n_rollouts = fit.data.n_prompts, fit.data.n_rollouts
    point.units = fit.units
    point.table = _rows(point, fit, imputed, reached if targets == "all" else None)
    return point


def _rows(point: PhaseFit, fit: PhaseFit, imputed: np.ndarray, reached: np.ndarray | None):
    """cbs_fit.csv of the imputed fit: the fitted targets' rows recomputed from the pooled draws,
    the others as they were; n_forecast counts the imputed cells per target; with `reached`
    (targets='all'), n_reached counts the batch sizes measured or forecast to reach each target."""
    table = fit.table.copy()
    K = point.n_draws
    n_sizes = table["n_batch_sizes"].to_numpy()
    B = fit.data.B
    if reached is not None:
        table["n_reached"] = [len(np.unique(B[reached[:, j]])) for j in range(len(table))]
    n_reached = table["n_reached"].to_numpy()
    n_runs = int(imputed.any(axis=1).sum())
    note = f"{n_runs} running run(s) imputed from their crossing forecasts"
    table["n_forecast"] = imputed.sum(axis=0).astype(int)
    for i, j in enumerate(point.fitted):
        row = _target_row(point, i, j, n_sizes[j], n_reached[j], [note], K)
        for col in CBS_FIT_COLUMNS + CBS_FIT_EXTRA_COLUMNS:
            if col in row and col in table.columns and col not in _KEPT:
                table.at[j, col] = row[col]
    return table
