"""A model of every evaluation of a phase, not only the crossings: one progress curve shared by
all runs, each run on its own clock.

The model (McCandlish et al. 2018, section 2.3 and appendix D, made explicit). Training makes
progress tau, counted in large-batch steps; the validation accuracy is a function of progress
alone, acc = g(tau), the same for every run of a phase. A step at batch B makes
1 / (1 + (b(tau) / B)^alpha) of a large-batch step's progress, where b(tau), the local noise
scale, changes as training goes. A run's own pace is a speed e^{u_r} (its seed: u_r ~ N(0,
sigma_u^2)). The steps run r needs to reach accuracy a are then

    S_r(a) = e^{-u_r} int_0^{tau(a)} (1 + (b(t) / B_r)^alpha) dt
           = e^{-u_r} tau(a) (1 + (Bbar(a) / B_r)^alpha),   Bbar(a)^alpha = mean of b^alpha over [0, tau(a)],

which is the general form of S(B) at every target (tau(a) = S_min and Bbar(a) = B_noise of that
target; alpha = 1 gives McCandlish) with B_noise a running power mean of the local noise scale.
So the model nests the crossing fit's description at each target and adds what the crossings
throw away: every evaluation of every run, including the levels between the targets and where a
running run stands now. That is why it is chosen over a generic learning-curve family (power
laws in the step, per-run sigmoids): it predicts a run's future from the same law the decision
uses, with no extra shape to extrapolate.

In numbers: accuracy levels a_0 < ... < a_K (the targets among them, a_0 the lowest start, a_K the
highest accuracy any run reached); tau increases by E_k = e^{d_k} from a_{k-1} to a_k, with the
local noise scale b_k constant there, log b_k a polynomial in the level (degree 2 with 4 batch
sizes or more, as the crossing fit's log B_noise); accuracy linear in the step between levels.
Evaluations are Binomial(n_val, p) / n_val, the likelihood divided by a dispersion phi >= 1
estimated from the Pearson residuals (without n_val: n = 1 and phi estimated, a quasi-binomial);
_progress.py has the solver. The intervals come from a Bayesian bootstrap over the batch points
and the runs within them (Dirichlet weights), every draw a refit from the point fit: the points'
lack of fit and the seeds' scatter, which eval noise alone would hide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ._progress import ALPHA_RANGE, EvalData, curve, project, solve
from .interval import bootstrap_interval

#: levels between the lowest start and the highest accuracy reached (targets among them)
N_LEVELS = 16
#: a bend within this factor of alpha = 1 is McCandlish's form (fit/forms.py's ALPHA_EQUIVALENT)
ALPHA_EQUIVALENT = 1.15
#: the speeds' spread the fit starts from (then estimated): seeds differ by a few percent in pace
SIGMA_U_START = 0.05
#: evaluations x refit iterations the bootstrap may spend (fewer draws beyond it, at least MIN_DRAWS)
DRAW_BUDGET = 6e7
MIN_DRAWS = 8
PROGRESS_COLUMNS = ["threshold", "S_min", "S_min_lo", "S_min_hi", "B_noise", "B_noise_lo", "B_noise_hi", "alpha",
                    "alpha_lo", "alpha_hi", "n_runs_reached", "n_batch_reached", "status", "reason"]


@dataclass
class ProgressFit:
    """The progress model of one phase (module docstring). theta = (d_1..d_K, beta, alpha); u (R,)
    the runs' log speeds; crossed (R, K) each run's isotonic crossing step of the levels a_1..a_K
    (NaN where not reached); draws (M, P) and u_draws (M, R) the bootstrap refits."""
    levels: np.ndarray
    theta: np.ndarray
    u: np.ndarray
    data: EvalData
    run_id: np.ndarray
    run_name: np.ndarray
    B: np.ndarray
    groups: np.ndarray
    thresholds: np.ndarray
    form: str
    sigma_u: float
    phi: float
    u_var: np.ndarray
    loglik: float
    converged: bool
    crossed: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    draws: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    u_draws: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    table: pd.DataFrame = field(default_factory=pd.DataFrame)
    notes: list = field(default_factory=list)

    @property
    def top(self) -> float:
        return float(self.levels[-1])

    def _position(self, level: float):
        """(k, frac): level in interval k (0-based) at fraction frac, or None beyond the levels."""
        a = self.levels
        if not (a[0] <= level <= a[-1]):
            return None
        k = int(min(np.searchsorted(a, level, side="right") - 1, len(a) - 2))
        return k, (level - a[k]) / (a[k + 1] - a[k])

    def params(self, level: float, theta=None) -> dict:
        """S_min (= tau(level)), B_noise (the running power mean of the local noise scale) and
        alpha at an accuracy level, for theta (default: the point fit); NaN beyond the levels."""
        pos = self._position(level)
        if pos is None:
            return {"S_min": np.nan, "B_noise": np.nan, "alpha": np.nan}
        th = self.theta if theta is None else theta
        cv = curve(th, self.data, x=np.zeros(1))
        k, frac = pos
        w = np.r_[cv.E[:k], cv.E[k] * frac]
        tau = float(w.sum())
        al = cv.alpha
        if not (tau > 0 and al > 0):  # a target at the lowest level: no progress to it yet
            return {"S_min": tau, "B_noise": np.nan, "alpha": al}
        mean_pow = float((w * np.exp(al * cv.logb[:k + 1])).sum()) / tau
        return {"S_min": tau, "B_noise": mean_pow ** (1.0 / al), "alpha": al}

    def log_steps(self, level: float, B, u=0.0, theta=None) -> np.ndarray:
        """log S to reach `level` at batch sizes B for a run of log speed u (NaN beyond the levels)."""
        B = np.atleast_1d(np.asarray(B, dtype=float))
        pos = self._position(level)
        if pos is None:
            return np.full(np.broadcast(B, np.asarray(u)).shape, np.nan)
        k, frac = pos
        cv = curve(self.theta if theta is None else theta, self.data, x=np.log(B))
        return np.log(cv.T[:, k] + cv.c[:, k] * frac) - np.asarray(u)

    def level_steps_all(self, theta=None) -> np.ndarray:
        """(R, K + 1) the steps at speed 1 at which every run passes every level."""
        return curve(self.theta if theta is None else theta, self.data).T

    def target_log_steps(self, levels, theta=None) -> np.ndarray:
        """(R, n) log of the steps at speed 1 at which every run reaches each of `levels` (NaN
        beyond the levels the runs reached)."""
        T = self.level_steps_all(theta)
        out = np.full((T.shape[0], len(levels)), np.nan)
        for j, level in enumerate(levels):
            pos = self._position(float(level))
            if pos is not None:
                k, frac = pos
                steps = T[:, k] + (T[:, k + 1] - T[:, k]) * frac
                # a target at the lowest level (the runs start there): no steps to forecast
                out[:, j] = np.log(np.where(steps > 0, steps, np.nan))
        return out

    def level_steps(self, B: float, theta=None) -> np.ndarray:
        """(K + 1,) the steps at speed 1 at which a run at batch B passes every level."""
        return curve(self.theta if theta is None else theta, self.data, x=np.log([float(B)])).T[0]


# ------------------------------------------------------------------------------------------------
# The data: every evaluation, and the levels
# ------------------------------------------------------------------------------------------------
def smoothed(series) -> list[np.ndarray]:
    """Each run's isotonic (non-decreasing) fit of its accuracies: what the crossings measure."""
    from scipy import optimize

    return [optimize.isotonic_regression(a).x if len(a) else np.zeros(0) for _, a in series]


def _ends(smooth) -> tuple[np.ndarray, np.ndarray]:
    has = [f for f in smooth if len(f)]
    return np.array([f[0] for f in has]), np.array([f[-1] for f in has])


def smoothed_crossings(series, smooth, levels) -> np.ndarray:
    """(R, n) every run's crossing step of each level on its isotonic fit, interpolated between
    evaluations as measure.crossings does (NaN where not reached)."""
    out = np.full((len(series), len(levels)), np.nan)
    for r, ((steps, _), fit) in enumerate(zip(series, smooth, strict=True)):
        if not len(fit):
            continue
        idx = np.searchsorted(fit, levels, side="left")
        ok = idx < len(fit)
        i = np.minimum(idx, len(fit) - 1)
        prev = np.maximum(i - 1, 0)
        with np.errstate(all="ignore"):
            frac = np.where(i > 0, (levels - fit[prev]) / (fit[i] - fit[prev]), 0.0)
        out[r] = np.where(ok, steps[prev] + frac * (steps[i] - steps[prev]), np.nan)
        out[r, ok & (i == 0)] = steps[0]
    return out


def choose_levels(smooth, thresholds, n_levels: int = N_LEVELS) -> np.ndarray:
    """The accuracy levels: from the lowest start of any run (its smoothed first evaluation) to
    the highest accuracy any run reached (its smoothed last), capped half a target spacing above
    the highest target (a curve near its plateau, where progress per unit of accuracy diverges, is
    not what the targets ask about, and no smooth noise scale spans it), the targets inside among
    them, the rest evenly spaced."""
    first, last = _ends(smooth)
    thr = np.sort(np.asarray(thresholds, dtype=float))
    if not len(first):
        return np.zeros(0)
    margin = 0.5 * float(np.median(np.diff(thr))) if thr.size > 1 else 0.05
    lo = float(max(first.min(), 0.0))
    hi = float(min(last.max(), 1.0, thr.max() + max(margin, 0.02) if thr.size else 1.0))
    if hi - lo < 1e-3:
        return np.zeros(0)
    inside = [float(t) for t in thr if lo < t < hi]
    grid = np.linspace(lo, hi, n_levels + 1)
    spacing = (hi - lo) / n_levels
    keep = [g for g in grid[1:-1] if all(abs(g - t) > 0.5 * spacing for t in inside)]
    return np.unique(np.r_[lo, keep, inside, hi])


def eval_data(series, B, levels, n_val, thresholds) -> EvalData:
    """The EvalData of runs' (steps, accuracies) `series` at batch sizes B."""
    R = len(series)
    lengths = np.array([len(s) for s, _ in series], dtype=int)
    ri = np.repeat(np.arange(R), lengths)
    s = np.concatenate([np.asarray(st, float) for st, _ in series]) if R else np.zeros(0)
    y = np.concatenate([np.asarray(a, float) for _, a in series]) if R else np.zeros(0)
    n = np.full(len(y), float(n_val) if n_val and n_val > 0 else 1.0)
    x = np.log(np.asarray(B, dtype=float))
    thr = np.asarray(thresholds, dtype=float)
    mid = 0.5 * (levels[1:] + levels[:-1])
    z = mid - (thr.mean() if thr.size else mid.mean())
    n_sizes = len(np.unique(np.round(x, 9)))
    cols = [np.ones_like(z), z, z * z - np.mean(z * z)][: 3 if n_sizes >= 4 else 2 if n_sizes == 3 else 1]
    Phi = np.column_stack(cols)
    decades = 3.0 * math.log(10)
    bounds = (float(x.min() - decades), float(x.max() + decades)) if R else (0.0, 1.0)
    return EvalData(ri, s, np.clip(y, 0.0, 1.0), n, x, np.asarray(levels, float), Phi, bounds)


def _start(data: EvalData, crossed: np.ndarray) -> np.ndarray:
    """Starting theta from the crossings: at each level two batch sizes passed, the McCandlish law
    S = tau (1 + Bbar / B) fitted in log space to the runs' (isotonic) crossing steps (Bbar on a
    grid, tau in closed form); log b the polynomial closest to those log Bbar; tau at each level
    the median over the runs that passed it of their crossing step / (1 + b / B); alpha = 1.
    A start near the answer matters: from b at the median batch (a 4-4,096 prompt grid puts it 20x
    above the truth) the ascent follows the ridge where the speeds stand in for the batch's effect
    and stops on it (B_noise 2-10x the truth on long sweeps with one run per batch size)."""
    grid = np.linspace(*data.x_bounds, 121)
    log_bbar = np.full(data.K, np.nan)
    for k in range(data.K):
        ok = np.isfinite(crossed[:, k]) & (crossed[:, k] >= 1.0)
        if len(np.unique(np.round(data.x[ok], 9))) >= 2:
            resid = np.log(crossed[ok, k])[None, :] - np.logaddexp(0.0, grid[:, None] - data.x[ok][None, :])
            log_bbar[k] = grid[int(np.argmin(resid.var(axis=1)))]
    has = np.isfinite(log_bbar)
    m = min(int(has.sum()), data.Phi.shape[1])
    beta = np.zeros(data.Phi.shape[1])
    if m:
        beta[:m] = np.linalg.lstsq(data.Phi[has][:, :m], log_bbar[has], rcond=None)[0]
    else:  # no level two batch sizes passed: b at the median batch
        beta[0] = float(np.median(data.x))
    b = np.exp(data.Phi @ beta)
    with np.errstate(all="ignore"):
        tau = np.nanmedian(crossed / (1.0 + b[None, :] / np.exp(data.x)[:, None]), axis=0)
    top = np.nanmax(tau) if np.isfinite(tau).any() else 100.0
    tau = np.maximum.accumulate(np.where(np.isfinite(tau), tau, top))
    inc = np.maximum(np.diff(np.r_[0.0, tau]), 1e-3 * max(top, 1.0))
    return np.r_[np.log(inc), beta, 1.0]


def _free(data: EvalData, form: str) -> np.ndarray:
    free = np.ones(data.P, dtype=bool)
    if form == "mccandlish":
        free[-1] = False
    return free


def thinned(data: EvalData, crossed: np.ndarray, max_evals: int = 200_000) -> EvalData:
    """A stratified subsample of at most about `max_evals` evaluations (all of them below), each
    weighted by how many it stands for: the data of the first iterations and of the bootstrap.

    The strata are (run, interval between the levels its isotonic fit crossed), thinned evenly
    within each to the same cap. Thinning each run's evaluations evenly instead loses the curve: a
    large batch passes every level within its first few evaluations and then sits on its plateau
    (in a 300-run x 1,000-evaluation sweep, 2% of the evaluations lie below the top level), so
    every 15th evaluation leaves no large-batch run below it, S_min unidentified and B_noise 10x."""
    n = len(data.y)
    if n <= max_evals:
        return data
    # how many levels each evaluation's run had crossed by its step: one search of every evaluation
    # in every run's crossings (run index + step as a fraction of the longest, both sorted)
    scale = 1.0 / ((max(float(data.s.max()), float(np.nanmax(crossed, initial=0.0))) + 1.0) * (1.0 + 1e-9))
    reached = np.maximum.accumulate(np.where(np.isfinite(crossed), crossed * scale, 1.0 - 1e-12), axis=1)
    keys = (np.arange(data.R)[:, None] + np.minimum(reached, 1.0 - 1e-12)).ravel()
    k = np.searchsorted(keys, data.ri + data.s * scale, side="right") - data.ri.astype(np.int64) * data.K
    cell = data.ri.astype(np.int64) * (data.K + 1) + k  # sorted: by run, then step
    _, first, size = np.unique(cell, return_index=True, return_counts=True)
    cap = _cell_cap(size, max_evals)
    every = -(-size // cap)  # keep every m-th, the middle one of each m
    rank = np.arange(n) - np.repeat(first, size)
    m = np.repeat(every, size)
    keep = rank % m == m // 2
    kept = np.bincount(np.repeat(np.arange(len(size)), size), weights=keep, minlength=len(size))
    return data.take(keep).scaled(np.repeat(size / kept, size)[keep])


def _cell_cap(size: np.ndarray, max_evals: int) -> int:
    """The largest per-stratum cap (at least 1) whose sum of min(size, cap) is within max_evals."""
    srt = np.sort(size)
    below = np.r_[0, np.cumsum(srt)[:-1]]
    total = below + srt * (len(srt) - np.arange(len(srt)))  # sum of min(size, cap) at cap = srt[i]
    i = int(np.searchsorted(total, max_evals, side="right"))
    if i >= len(srt):
        return int(srt[-1])
    base = below[i]
    return max(int((max_evals - base) // (len(srt) - i)), 1)


def dispersion(theta, u, data: EvalData, known_n: bool) -> float:
    """Pearson's chi-square over its degrees of freedom (at least 1 where n_val is known), a
    subsample's evaluations each counted as the evaluations it stands for."""
    from ._progress import expected_accuracy

    p, k, *_ = expected_accuracy(curve(theta, data), u, data)
    inside = k < data.K  # beyond the top level the curve says nothing (a run past the highest level)
    chi2 = float((data.n * (data.y - p) ** 2 / (p * (1.0 - p)))[inside].sum())
    dof = max(float(data.weight[inside].sum()) - data.P - data.R, 1.0)
    phi = chi2 / dof
    return max(phi, 1.0) if known_n else max(phi, 1e-6)


def _point(data: EvalData, crossed: np.ndarray, form: str, known_n: bool):
    """The point fit, coarse to fine: on a stratified subsample (`thinned`) of about 20,000
    evaluations from the start values, with the dispersion and the speeds' spread estimated there
    and the fit repeated (random effects: sigma_u^2 = mean u^2 + mean var u); then on about
    200,000; then polished on every evaluation."""
    from ._progress import speed_information

    theta, free = _start(data, crossed), _free(data, form)
    u = np.zeros(data.R)
    # the speeds start tight: with one run per batch size they could otherwise take up the batch's
    # own effect (a speed is independent of the batch: that is what identifies the curve in B)
    sigma_u, phi = SIGMA_U_START, 1.0
    small = thinned(data, crossed, 20_000)
    theta, u, obj, _, conv = solve(small, theta, u, free, sigma_u, phi, n_iter=80, tol=1e-4)
    for _ in range(2):
        phi = dispersion(theta, u, small, known_n)
        F_uu = speed_information(theta, u, small, sigma_u, phi)[1]
        sigma_u = float(math.sqrt(max(np.mean(u * u) + np.mean(1.0 / F_uu), 1e-6)))
        theta, u, obj, _, conv = solve(small, theta, u, free, sigma_u, phi, n_iter=40, tol=1e-4)
    for sub, n_iter in ((thinned(data, crossed), 15), (data, 10)):
        if sub is not small and len(sub.y) > len(small.y):
            theta, u, obj, _, conv = solve(sub, theta, u, free, sigma_u, phi, n_iter=n_iter, tol=1e-4)
            small = sub
    u_var = 1.0 / speed_information(theta, u, data, sigma_u, phi)[1]
    return theta, u, obj, conv, sigma_u, phi, u_var


def _weights(fit: ProgressFit, M: int, seed: int) -> np.ndarray:
    """(M, R) Bayesian-bootstrap weights: Dirichlet over the batch points (times their number), and
    over the runs within each point (times theirs)."""
    rng = np.random.default_rng(seed)
    codes, inv = np.unique(fit.groups, return_inverse=True)
    G, size = len(codes), np.bincount(inv, minlength=len(codes))
    out = np.empty((M, len(fit.groups)))
    for m in range(M):
        wg = rng.dirichlet(np.ones(G)) * G
        wr = rng.exponential(size=len(inv))
        out[m] = wg[inv] * wr / np.bincount(inv, weights=wr, minlength=G)[inv] * size[inv]
    return out


def _bootstrap(fit: ProgressFit, n_draws: int, seed: int, free: np.ndarray):
    """(M, P) theta and (M, R) speeds under Bayesian-bootstrap weights (on the subsample of
    thinned): each a refit from the point fit where the evaluations allow, else (beyond DRAW_BUDGET)
    one Newton step from it, every draw at once (each run's share of the score and information)."""
    from ._progress import per_run

    data = thinned(fit.data, fit.crossed)
    M = int(n_draws)
    refits = M * 15 * len(data.y) <= DRAW_BUDGET
    W = _weights(fit, M, seed)
    thetas, us = np.empty((M, data.P)), np.empty((M, data.R))
    if refits:
        for m in range(M):
            w = W[m]
            wd = data.scaled(w[data.ri])
            # a run is resampled whole: its evaluations and its speed's prior term, both weighted
            sig_w = fit.sigma_u / np.sqrt(np.maximum(w, 1e-9))
            thetas[m], us[m], *_ = solve(wd, fit.theta, fit.u, free, sig_w, fit.phi, n_iter=15, tol=1e-3)
        return thetas, us
    g, S, c, F_uu = per_run(fit.theta, fit.u, data, fit.sigma_u, fit.phi, free)
    idx = np.flatnonzero(free)
    F = np.einsum("mr,rpq->mpq", W, S[:, idx][:, :, idx])
    rhs = (W - 1.0) @ g[:, idx]
    step = np.linalg.solve(F + 1e-9 * np.eye(len(idx))[None], rhs[:, :, None])[:, :, 0]
    thetas[:] = fit.theta
    thetas[:, idx] += step
    thetas = np.array([project(th, data) for th in thetas])
    us[:] = fit.u[None, :] - ((thetas - fit.theta)[:, idx] @ c[:, idx].T) / F_uu[None, :]
    return thetas, us


def _table(fit: ProgressFit, smooth) -> pd.DataFrame:
    """One row per threshold: S_min, B_noise, alpha with 95% intervals from the draws."""
    _, last = _ends(smooth)
    has = np.array([len(f) > 0 for f in smooth])
    B_has = fit.B[has]
    rows = []
    for t in fit.thresholds:
        p = fit.params(t)
        reached = last >= t
        row = {"threshold": float(t), **p, "n_runs_reached": int(reached.sum()),
               "n_batch_reached": len(np.unique(B_has[reached])), "status": "ok", "reason": ""}
        for key in ("S_min", "B_noise", "alpha"):
            row[f"{key}_lo"] = row[f"{key}_hi"] = np.nan
        if not np.isfinite(p["S_min"]):
            row.update(status="insufficient", reason="no run has reached this accuracy: beyond the progress curve")
        elif len(fit.draws):
            notes = []
            for key in ("S_min", "B_noise", "alpha"):
                d = np.array([fit.params(t, th)[key] for th in fit.draws])
                row[f"{key}_lo"], row[f"{key}_hi"], note = bootstrap_interval(row[key], d, key)
                notes.append(note)
            row["reason"] = "; ".join(n for n in notes if n)
        if row["status"] == "ok" and row["n_batch_reached"] < 3:
            row.update(status="extrapolated", reason=f"{row['n_batch_reached']} batch size(s) reached it: the "
                       "curve's dependence on the batch there rests on the levels below")
        rows.append(row)
    return pd.DataFrame(rows, columns=PROGRESS_COLUMNS)


def fit_progress(series, B, thresholds, n_val=None, groups=None, run_id=None, run_name=None,
                 form: str = "auto", n_draws: int = 100, seed: int = 0) -> ProgressFit | None:
    """The progress model of runs' (steps, accuracies) `series` at batch sizes B (module
    docstring). form: 'general' (alpha free), 'mccandlish' (alpha = 1) or 'auto' (general, unless
    alpha lies within ALPHA_EQUIVALENT of 1). groups: batch-point codes (replicates share one;
    default: the batch). None where no run has two evaluations or no accuracy rises."""
    series = [(np.asarray(s, float), np.asarray(a, float)) for s, a in series]
    B = np.asarray(B, dtype=float)
    thr = np.asarray(thresholds, dtype=float)
    smooth = smoothed(series)
    levels = choose_levels(smooth, thr)
    if len(levels) < 3 or sum(len(a) >= 2 for _, a in series) < 1:
        return None
    data = eval_data(series, B, levels, n_val, thr)
    crossed = smoothed_crossings(series, smooth, levels[1:])
    known_n = bool(n_val and n_val > 0)
    chosen = "general" if form == "auto" else form
    point = _point(data, crossed, chosen, known_n)
    if form == "auto" and abs(math.log(point[0][-1])) < math.log(ALPHA_EQUIVALENT):
        chosen, point = "mccandlish", _point(data, crossed, "mccandlish", known_n)
    theta, u, obj, conv, sigma_u, phi, u_var = point
    R = len(series)
    fit = ProgressFit(levels, theta, u, data, np.asarray(run_id if run_id is not None else np.arange(R)).astype(str),
                      np.asarray(run_name if run_name is not None else np.arange(R)).astype(str), B,
                      np.asarray(groups if groups is not None else B).astype(str), thr, chosen, sigma_u, phi,
                      u_var, obj, conv, crossed=crossed)
    if not conv:
        fit.notes.append("the progress fit stopped before converging")
    if alpha_at_bound(theta):
        fit.notes.append("alpha at the end of its range: the bend is not identified")
    if n_draws:
        fit.draws, fit.u_draws = _bootstrap(fit, n_draws, seed, _free(data, chosen))
    fit.table = _table(fit, smooth)
    return fit


def alpha_at_bound(theta) -> bool:
    return bool(min(abs(theta[-1] - ALPHA_RANGE[0]), abs(ALPHA_RANGE[1] - theta[-1])) < 1e-3)


def fit_all_evals(runs: pd.DataFrame, history: pd.DataFrame, metric: str, thresholds, n_val=None,
                  form: str = "auto", n_draws: int = 100, seed: int = 0) -> ProgressFit | None:
    """fit_progress over one phase's runs and history (the frames fit_phase takes); replicates
    share a batch point (n_prompts x n_rollouts and configuration)."""
    from ..measure.crossings import eval_series, run_meta

    meta = run_meta(runs)
    ser = eval_series(history, metric)
    B = meta["total_batch"].to_numpy(dtype=float)
    keep = np.isfinite(B) & (B > 0)
    meta = meta[keep].reset_index(drop=True)
    series = [ser.get(rid, (np.zeros(0), np.zeros(0), 0))[:2] for rid in meta["run_id"]]
    groups = [f"{p}x{r}|{c}" for p, r, c in zip(meta["n_prompts"], meta["n_rollouts"], meta["configuration"],
                                                strict=True)]
    return fit_progress(series, B[keep], thresholds, n_val, groups, meta["run_id"], meta["run_name"], form,
                        n_draws, seed)
