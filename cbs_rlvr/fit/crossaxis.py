"""Prompts against rollouts: one model over the phases of several axes (the params'
`two_axis_phases`), the check that it predicts runs it was not fitted to, and what it says a
rollout is worth.

The model: the rollouts of one prompt share it, so their gradients are correlated (correlation
rho): n_p prompts x n_r rollouts are worth B_eff = n_p n_r / (1 + (n_r - 1) rho) independent
prompts. And a small group learns less per step: GRPO normalises each prompt's rewards within its
group, a group of few rollouts gives a poorer baseline and more often all-equal rewards (no
signal), so log S carries a term gamma / n_r (fitted where the runs span three n_rollouts or more).
Every form of a phase's fit (forms.py: alpha = 1, one alpha, alpha trending with the target; S_min
and log B0 per target, pooled over the targets) is fitted with B_eff in place of B, rho profiled
over a grid. A rollout then compares to a prompt as B_eff says (a second rollout of a prompt is
worth (1 - rho) / (1 + rho) of a new prompt), and small groups cost exp(gamma (1/2 - 1/8)) more
steps at 2 rollouts than at 8.

That is a model of how the two axes combine, and a split off the sampled axes (256 prompts x 2
rollouts when the sweep ran 2..512 prompts at 8 rollouts and 2..64 rollouts at 16 prompts) is
priced by it alone. It is trusted there only after it predicts, on this sweep, runs it was not
fitted to: each phase in turn is left out, the model refitted on the others and the left-out
runs predicted: their errors must look like the scatter of the others' own runs about their fit,
or stay within 5% (per configuration, the mean error over its targets; the mean square of the
left-out ones over the others' below the 99% point of the F distribution). A phase can be left out
only where the others still span two n_prompts and two n_rollouts (`n_off_lines` counts its configurations on no line the others sampled: the strictest
tests). Two crossing axes alone can never be checked: the splits off them are then `untested`,
never recommended, and at most worth testing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ._tobit import Cells, Layout, predict
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
from .interval import bootstrap_interval
from .phase import _SEARCH_DECADES, sb_arrays, target_coordinates
from .resample import Scatter, estimate_scatter, parametric_tables

TWO_AXIS_FIT_COLUMNS = ["threshold", "rho", "rho_lo", "rho_hi", "B0", "B0_lo", "B0_hi", "S_min", "r2_log",
                        "n_points", "n_censored", "status", "reason"]
CHECK_COLUMNS = ["left_out", "n_configs", "n_off_lines", "n_cells", "error_ratio", "critical", "rms_log_error",
                 "passed", "reason"]
RHO_GRID = np.array([0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.55, 0.7, 0.85, 1.0])
#: an untested model's prediction off the axes carries at least this sd of log S of its own
UNTESTED_SD = 0.3


def effective_log_batch(n_p, n_r, rho: float) -> np.ndarray:
    n_p, n_r = np.asarray(n_p, dtype=float), np.asarray(n_r, dtype=float)
    return np.log(n_p * n_r) - np.log1p((n_r - 1.0) * rho)


def rollout_worth(rho: float) -> float:
    """What a second rollout of a prompt is worth in new prompts: (1 - rho) / (1 + rho)."""
    return (1.0 - rho) / (1.0 + rho)


@dataclass
class _Joint:
    """The joint data: per run n_p, n_r, phase, and the fit arrays."""
    n_p: np.ndarray
    n_r: np.ndarray
    phase: np.ndarray
    Y: np.ndarray
    C: np.ndarray
    W: np.ndarray
    groups: np.ndarray
    bounds: np.ndarray
    thresholds: np.ndarray

    def subset(self, rows) -> _Joint:
        return _Joint(self.n_p[rows], self.n_r[rows], self.phase[rows], self.Y[rows], self.C[rows], self.W[rows],
                      self.groups[rows], self.bounds[rows], self.thresholds)


def joint_arrays(sb_all: pd.DataFrame, thresholds) -> _Joint:
    """The joint S(B) table (rows of several phases, a `phase` column) as fit arrays."""
    thr = [float(t) for t in thresholds]
    sb = sb_all.copy()
    sb["threshold"] = pd.to_numeric(sb["threshold"], errors="coerce").astype(float)
    if "phase" not in sb.columns:
        sb["phase"] = "all"
    if "last_eval_step" not in sb.columns:
        sb["last_eval_step"] = np.where(sb["censored"].astype(bool), sb["S_B"], np.inf)
    # a run two phases share (the crossing of two axes) enters once
    sb = sb.drop_duplicates(["run_id", "threshold"])
    runs = sb.drop_duplicates("run_id")
    ids = runs["run_id"].tolist()
    n_p = pd.to_numeric(runs["n_prompts"], errors="coerce").to_numpy(dtype=float)
    n_r = pd.to_numeric(runs["n_rollouts"], errors="coerce").to_numpy(dtype=float)
    conf = runs["configuration"].astype(str).to_numpy() if "configuration" in runs else np.array([""] * len(runs))
    groups = np.array([f"{p}x{r}|{c}" for p, r, c in zip(n_p, n_r, conf, strict=True)])
    arr = sb_arrays(sb, ids, thr, groups, B=n_p * n_r)
    ok = np.isfinite(n_p) & np.isfinite(n_r) & (n_p > 0) & (n_r > 0)
    return _Joint(n_p[ok], n_r[ok], runs["phase"].astype(str).to_numpy()[ok], arr["Y"][ok], arr["C"][ok],
                  arr["W"][ok], groups[ok], arr["bounds"][ok], np.asarray(thr))


@dataclass
class _RhoFit:
    rho: float
    fits: dict
    weights: dict
    chosen: str
    loglik: float
    cells: Cells
    lay: Layout
    fitted: np.ndarray


def group_term(n_r) -> np.ndarray:
    """The covariate of the small-group term: 1 / n_rollouts (R, 1)."""
    return (1.0 / np.asarray(n_r, dtype=float))[:, None]


def _uses_groups(J: _Joint) -> bool:
    """The small-group term is fitted where the runs span three n_rollouts or more (with two, it and
    rho are one and the same freedom)."""
    return len(np.unique(J.n_r)) >= 3


def _cells(J: _Joint, rho: float, fitted) -> tuple[Cells, Layout]:
    x = effective_log_batch(J.n_p, J.n_r, rho)
    U = group_term(J.n_r) if _uses_groups(J) else None
    xb = np.log(J.n_p * J.n_r)
    bb = (float(xb.min() - _SEARCH_DECADES * math.log(10)), float(xb.max() + _SEARCH_DECADES * math.log(10)))
    z = target_coordinates(J.thresholds[fitted])
    # log B0 linear in the target: the model's question is how the axes combine, asked of few runs
    return Cells(x, z, J.Y[None][:, :, fitted], J.W[None][:, :, fitted], J.C[None][:, :, fitted], bb, U), \
        Layout(z, 0 if U is None else 1, curved=False)


def _fitted_targets(J: _Joint) -> np.ndarray:
    reached = (J.W > 0) & ~J.C
    ok = []
    for j in range(len(J.thresholds)):
        cfg = {(p, r) for p, r, hit in zip(J.n_p, J.n_r, reached[:, j], strict=True) if hit}
        if len(cfg) >= 3 and len({c[0] for c in cfg}) >= 2 and len({c[1] for c in cfg}) >= 2:
            ok.append(j)
    return np.array(ok, dtype=int)


def _fit_rho(J: _Joint, fitted, forms=None, weigh: bool = True, refine: bool = True) -> _RhoFit | None:
    """The joint fit with rho profiled over RHO_GRID (the best likelihood of McCandlish's form or the
    one-alpha form), refined between the grid's neighbours, every form fitted at that rho and
    weighted by leave-one-batch-point-out prediction."""
    if not len(fitted):
        return None
    names = [f for f in forms_for(len(fitted), len(np.unique(J.groups))) if forms is None or f in forms]
    profile = [f for f in names if f in ("mccandlish", "general")] or names[:1]
    best = None
    for rho in RHO_GRID:
        cells, lay = _cells(J, rho, fitted)
        fits = _forms_at(cells, lay, profile)
        if not fits:
            continue
        ll = max(f.loglik for f in fits.values())
        if best is None or ll > best.loglik:
            best = _RhoFit(float(rho), fits, {}, "", ll, cells, lay, fitted)
    if best is None:
        return None
    if refine:
        best = _refine_rho(J, fitted, best)
    if set(best.fits) != set(names):
        best.fits = _forms_at(best.cells, best.lay, names)
        best.loglik = max(f.loglik for f in best.fits.values())
    names = list(best.fits)
    if weigh and len(names) > 1:
        codes = np.unique(J.groups, return_inverse=True)[1]
        elpd = cross_validate(best.cells, best.lay, best.fits, folds(codes, best.cells.x))
        best.weights = merge_equivalent(form_weights(elpd), best.fits, best.lay)
    else:
        best.weights = {n: 1.0 / len(names) for n in names}
    best.chosen = max(names, key=lambda n: (best.weights[n], -FORMS.index(n)))
    return best


def _forms_at(cells: Cells, lay: Layout, names) -> dict:
    """The forms `names` fitted at one rho (a bent form that does not bend is left out)."""
    fits = {}
    with np.errstate(all="ignore"):
        mc = fit_form(cells, lay, "mccandlish")
        if "mccandlish" in names:
            fits["mccandlish"] = mc
        for name in names:
            if name != "mccandlish":
                f = fit_form(cells, lay, name, mc=mc if name == "general" else fits.get("general"))
                if f.ok:
                    fits[name] = f
    return fits


def _refine_rho(J: _Joint, fitted, best: _RhoFit, n_steps: int = 7) -> _RhoFit:
    """Golden-section search of rho between the grid neighbours of the best grid point (the form of
    highest likelihood there refitted; the other forms refitted at the result)."""
    form = max(best.fits.values(), key=lambda f: f.loglik).form
    k = int(np.argmin(np.abs(RHO_GRID - best.rho)))
    lo, hi = RHO_GRID[max(k - 1, 0)], RHO_GRID[min(k + 1, len(RHO_GRID) - 1)]
    cache = {}

    def ll(rho):
        if rho not in cache:
            cells, lay = _cells(J, rho, fitted)
            with np.errstate(all="ignore"):
                mc = fit_form(cells, lay, "mccandlish")
                f = mc if form == "mccandlish" else fit_form(cells, lay, form, mc=mc)
            cache[rho] = f.loglik if f.ok else -np.inf
        return cache[rho]

    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    for _ in range(n_steps):
        if ll(c) >= ll(d):
            b, d = d, c
            c = b - g * (b - a)
        else:
            a, c = c, d
            d = a + g * (b - a)
    rho = max([best.rho, c, d], key=lambda r: ll(r) if r != best.rho else best.loglik)
    if rho == best.rho:
        return best
    cells, lay = _cells(J, rho, fitted)
    fits = _forms_at(cells, lay, list(best.fits)) or best.fits
    return _RhoFit(float(rho), fits, {}, "", max(f.loglik for f in fits.values()), cells, lay, fitted)


@dataclass
class CrossAxisFit:
    """The joint model over several axes, its check, and its draws (see the module docstring)."""
    joint: _Joint
    point: _RhoFit | None
    table: pd.DataFrame
    check: pd.DataFrame
    validated: bool
    reason: str
    scatter: Scatter | None = None
    rho_draws: np.ndarray | None = None
    theta_draws: np.ndarray | None = None
    bad: np.ndarray | None = None
    untested_sd: float = UNTESTED_SD
    phases: list = field(default_factory=list)
    check_points: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def rho(self) -> float:
        return self.point.rho if self.point else np.nan

    def target_index(self, t) -> int | None:
        if self.point is None:
            return None
        for i, j in enumerate(self.point.fitted):
            if math.isclose(float(self.joint.thresholds[j]), float(t), abs_tol=1e-9):
                return i
        return None

    def candidates(self, octaves: int = 2) -> pd.DataFrame:
        """Power-of-two splits (n_rollouts >= 2) within the sampled n_prompts and n_rollouts ranges
        widened by `octaves`, with B within the sampled range of B widened the same."""
        J = self.joint
        lo_p, hi_p = math.floor(math.log2(J.n_p.min())) - octaves, math.ceil(math.log2(J.n_p.max())) + octaves
        lo_r, hi_r = max(math.floor(math.log2(J.n_r.min())) - octaves, 1), math.ceil(math.log2(J.n_r.max())) + octaves
        P, R = np.meshgrid(2.0 ** np.arange(max(lo_p, 0), hi_p + 1), 2.0 ** np.arange(lo_r, hi_r + 1))
        P, R = P.ravel(), R.ravel()
        B = J.n_p * J.n_r
        keep = (P * R >= B.min() / 2 ** octaves) & (P * R <= B.max() * 2 ** octaves)
        extra = pd.DataFrame({"n_prompts": J.n_p, "n_rollouts": J.n_r})
        out = pd.concat([pd.DataFrame({"n_prompts": P[keep], "n_rollouts": R[keep]}), extra], ignore_index=True)
        return out.drop_duplicates().astype(float).reset_index(drop=True)

    def log_steps(self, threshold, n_p, n_r, rng, K: int):
        """Point (n,), draws (K, n), runs behind each (n,) and basis (n,) of log S at splits: each
        split's own deviation (shrunk toward its runs where it was run; drawn where not, wider where
        the model is untested)."""
        n = len(n_p)
        i = self.target_index(threshold)
        basis = np.array(["cross_axis" if self.validated else "untested"] * n, dtype=object)
        if i is None or self.point is None:
            return np.full(n, np.nan), np.full((K, n), np.nan), np.zeros(n, int), np.array(["extrapolated"] * n, dtype=object)
        pt = self.point
        th = pt.fits[pt.chosen].theta
        x = effective_log_batch(n_p, n_r, pt.rho)
        U = group_term(n_r) if pt.lay.m else None
        f, _ = predict(pt.cells, pt.lay, th[None], x=x, U=U)
        point = f[0, :, i]
        draws = np.full((K, n), np.nan)
        if K and self.theta_draws is not None and len(self.theta_draws) == K:
            xs = effective_log_batch(np.asarray(n_p)[None, :], np.asarray(n_r)[None, :], self.rho_draws[:, None])
            loc = pt.lay.local(self.theta_draws)[:, i, :]
            draws = loc[:, 0:1] + np.logaddexp(0.0, loc[:, 2:3] * (loc[:, 1:2] - xs))
            if pt.lay.m:
                draws = draws + self.theta_draws[:, pt.lay.gamma] @ group_term(n_r).T
            draws = np.where(self.bad[:, i][:, None], np.nan, draws)
        sc = self.scatter
        s_pt = float(sc.sigma_point[i]) if sc is not None else 0.1
        s_run = max(float(sc.sigma_run[i]), 0.5 * float(sc.sigma[i])) if sc is not None else 0.1
        dev_sd = s_pt if self.validated else max(s_pt, self.untested_sd)
        # configurations that were run: the curve shrunk toward their runs
        J = self.joint
        j = pt.fitted[i]
        ok = (J.W[:, j] > 0) & ~J.C[:, j]
        count = np.zeros(n, dtype=int)
        mean = np.full(n, np.nan)
        for q, (p, r) in enumerate(zip(n_p, n_r, strict=True)):
            rows = ok & np.isclose(J.n_p, p) & np.isclose(J.n_r, r)
            if rows.any():
                count[q], mean[q] = int(rows.sum()), float(J.Y[rows, j].mean())
        meas = count > 0
        kappa = np.where(meas, dev_sd ** 2 / (dev_sd ** 2 + s_run ** 2 / np.maximum(count, 1)), 0.0)
        post = np.where(meas, np.sqrt(kappa * s_run ** 2 / np.maximum(count, 1)), dev_sd)
        point = np.where(meas, point + kappa * (mean - point), point)
        if K:
            draws = draws + np.where(meas, kappa * (mean - draws), 0.0) + post * rng.standard_normal(draws.shape)
        basis = np.where(meas, "measured", basis).astype(object)
        return point, draws, count, basis

    @property
    def group_cost(self) -> float:
        """How many times the steps a prompt's group of 2 rollouts takes against a group of 8 at the
        same effective batch: exp(gamma (1/2 - 1/8)) (1 without the small-group term)."""
        if self.point is None or not self.point.lay.m:
            return 1.0
        return math.exp(float(self.point.fits[self.point.chosen].theta[self.point.lay.gamma][0]) * (0.5 - 0.125))

    def worth(self) -> str:
        """What a rollout is worth against a prompt, in words, with rho's interval."""
        if self.point is None:
            return ""
        rho = self.rho
        lo, hi = (np.nan, np.nan) if self.rho_draws is None else bootstrap_interval(rho, self.rho_draws)[:2]
        band = f" (95% interval {rollout_worth(hi):.2f}-{rollout_worth(lo):.2f})" if np.isfinite(lo) else ""
        text = (f"a second rollout of a prompt is worth {rollout_worth(rho):.2f} of a new prompt{band}: "
                f"the rollouts of one prompt are correlated (rho = {rho:.2f})")
        if self.point.lay.m and abs(self.group_cost - 1) >= 0.05:
            text += (f"; and small groups learn less per step: groups of 2 rollouts take {self.group_cost:.2f}x the "
                     "steps of groups of 8 at the same effective batch (GRPO's group baseline and groups whose "
                     "rewards are all equal)")
        return text


def cross_axis_fit(sb_all: pd.DataFrame, thresholds, n_bootstrap: int = 200, seed: int = 0) -> CrossAxisFit:
    """The cross-axis model over the joint S(B) table (the rows of every phase in it, a `phase`
    column), its check, and K bootstrap draws (parametric, pooled scatter; rho refitted per table
    over its grid)."""
    J = joint_arrays(sb_all, thresholds)
    phases = sorted(set(J.phase))
    fitted = _fitted_targets(J)
    empty_check = pd.DataFrame(columns=CHECK_COLUMNS)
    if not len(fitted):
        table = _table(J, None, None, fitted, "insufficient",
                       "fewer than 3 configurations over 2 n_prompts and 2 n_rollouts reach any target")
        return CrossAxisFit(J, None, table, empty_check, False, "no target has enough configurations", phases=phases)
    pt = _fit_rho(J, fitted)
    check, points = _check(J, fitted, pt.chosen)
    tested = check[check["n_cells"] > 0] if len(check) else check
    validated = bool(len(tested)) and bool(tested["passed"].all())
    if not len(tested):
        reason = ("no phase can be left out and predicted from the others: with two crossing axes alone the others "
                  "never span two n_prompts and two n_rollouts, so how the axes combine is tested nowhere (a second "
                  "slice of an axis or an iso-batch phase tests it)")
    elif validated:
        reason = f"predicted the left-out {', '.join(tested['left_out'])} within their scatter"
    else:
        failed = tested[~tested["passed"]]
        reason = ("missed the left-out " + ", ".join(f"{r.left_out} (errors {r.error_ratio:.1f} times the scatter's, "
                                                     f"{r.critical:.1f} allowed; rms error of log S {r.rms_log_error:.2f})"
                                                     for r in failed.itertuples()))
    res = CrossAxisFit(J, pt, pd.DataFrame(), check, validated, reason, phases=phases, check_points=points)
    if len(tested):
        res.untested_sd = max(UNTESTED_SD, float(tested["rms_log_error"].max()))
    cells, lay = pt.cells, pt.lay
    gen = [n for n in pt.fits if n != "mccandlish"]
    g = max(gen, key=lambda n: pt.weights[n]) if gen else "mccandlish"
    f_hat, sig = predict(cells, lay, pt.fits[g].theta[None])
    res.scatter = estimate_scatter(cells.Y[0], cells.C[0], cells.W[0], f_hat[0], sig[0, 0], J.groups,
                                   int(free_mask(g, lay).sum()) + 1)
    K = int(n_bootstrap or 0)
    if K:
        _bootstrap(res, f_hat[0], K, seed)
    res.table = _table(J, res, pt, fitted, "ok", "")
    return res


def _bootstrap(res: CrossAxisFit, f_hat, K: int, seed: int) -> None:
    """K parametric tables, each given a form in proportion to the forms' weights (the model
    average, as a phase's fit); per table its form refitted at every rho of a grid (steps of 0.025
    around the point, and a coarse one) and the best kept."""
    J, pt = res.joint, res.point
    rng = np.random.default_rng(seed)
    Y, W, C = parametric_tables(f_hat, pt.cells.W[0], J.bounds, J.groups, res.scatter, K, rng)
    names = list(pt.fits)
    w = np.array([pt.weights.get(n, 0.0) for n in names])
    w = w / w.sum() if w.sum() > 0 else np.full(len(names), 1.0 / len(names))
    counts = np.floor(w * K).astype(int)
    counts[np.argsort(-(w * K - counts))[: K - counts.sum()]] += 1
    assign = rng.permutation(np.repeat(np.arange(len(names)), counts))
    grid = np.unique(np.clip(np.r_[pt.rho + np.linspace(-0.2, 0.2, 13), RHO_GRID[::4]], 0.0, 1.0))
    best_ll = np.full(K, -np.inf)
    theta = np.repeat(pt.fits[pt.chosen].theta[None], K, axis=0)
    rho = np.full(K, pt.rho)
    for m, name in enumerate(names):
        rows = np.flatnonzero(assign == m)
        if not rows.size:
            continue
        for r in grid:
            cells, lay = _cells(J, r, pt.fitted)
            block = Cells(cells.x, cells.z, Y[rows], W[rows], C[rows], cells.b_bounds, cells.U)
            with np.errstate(all="ignore"):
                th, ll = refit(block, lay, pt.fits[name])
            better = np.isfinite(ll) & (ll > best_ll[rows])
            theta[rows[better]], rho[rows[better]], best_ll[rows[better]] = th[better], r, ll[better]
    reached = (W > 0) & ~C  # (K, R, J)
    codes = np.unique(np.column_stack([J.n_p, J.n_r]), axis=0, return_inverse=True)[1].ravel()
    hit = np.zeros((K, codes.max() + 1, Y.shape[2]), dtype=bool)
    for g in range(codes.max() + 1):
        hit[:, g, :] = reached[:, codes == g, :].any(axis=1)
    bad = hit.sum(axis=1) < 3
    res.theta_draws, res.rho_draws, res.bad = theta, rho, bad | ~np.isfinite(best_ll)[:, None]


def _on_lines(J_rest: _Joint, n_p: float, n_r: float) -> bool:
    """Whether a configuration lies on a line the other phases sampled (their n_prompts at this
    n_rollouts varied, or their n_rollouts at this n_prompts)."""
    same_r = np.isclose(J_rest.n_r, n_r)
    same_p = np.isclose(J_rest.n_p, n_p)
    return bool((same_r.sum() >= 2 and len(np.unique(J_rest.n_p[same_r])) >= 2)
                or (same_p.sum() >= 2 and len(np.unique(J_rest.n_r[same_p])) >= 2))


def _config_errors(Y, C, W, f, n_p, n_r) -> dict:
    """Per configuration, the mean over its targets of (its runs' mean log S - the prediction), and
    the cells behind it: {(n_p, n_r): (mean error, [(target index, mean log S, n runs, prediction)])}."""
    out = {}
    for p, r in sorted({(a, b) for a, b in zip(n_p, n_r, strict=True)}):
        rows = np.isclose(n_p, p) & np.isclose(n_r, r)
        cells = []
        for i in range(Y.shape[1]):
            ok = rows & (W[:, i] > 0) & ~C[:, i]
            if ok.any():
                cells.append((i, float(Y[ok, i].mean()), int(ok.sum()), float(f[np.flatnonzero(rows)[0], i])))
        if cells:
            out[(p, r)] = (float(np.mean([c[1] - c[3] for c in cells])), cells)
    return out


#: parameters of a joint fit that move a configuration's mean error over its targets (the curve's
#: level, B0's level, trend and bend, alpha, rho)
_CONFIG_PARAMS = 6
#: a configuration's error in log S that no decision turns on (5%): the yardstick's floor
IMMATERIAL_LOG_ERROR = 0.05


def _check(J: _Joint, fitted, form: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Leave each phase out, refit on the others, predict the left-out runs (module docstring).
    The test statistic: per left-out configuration its mean error over its targets (a run's luck is
    shared by its targets, so a configuration is one piece of evidence), their mean square over the
    same for the others' configurations about their own fit (their scatter, and how it goes together
    across targets; degrees of freedom: the configurations less _CONFIG_PARAMS), never below
    IMMATERIAL_LOG_ERROR squared (a model that errs by less than 5% errs by nothing a decision turns
    on, however quiet the runs); it must stay below the 99% point of F(n_left_out, dof).
    Returns the per-phase check and every predicted (configuration, target) beside its runs."""
    from scipy import stats

    rows, points = [], []
    for ph in sorted(set(J.phase)):
        out = J.phase == ph
        rest = J.subset(~out)
        mine = J.subset(out)
        configs = {(p, r) for p, r in zip(mine.n_p, mine.n_r, strict=True)}
        shared = {(p, r) for p, r in zip(rest.n_p, rest.n_r, strict=True)}
        new = [c for c in configs if c not in shared]
        off = [c for c in new if not _on_lines(rest, *c)]
        base = {"left_out": ph, "n_configs": len(new), "n_off_lines": len(off), "n_cells": 0, "error_ratio": np.nan,
                "critical": np.nan, "rms_log_error": np.nan, "passed": False, "reason": ""}
        rf = _fitted_targets(rest)
        rf = np.array([j for j in rf if j in set(fitted.tolist())], dtype=int)
        if not new or not len(rf):
            base["reason"] = ("every configuration of it is in the others" if not new else
                              "the others alone span fewer than 2 n_prompts and 2 n_rollouts at every target")
            rows.append(base)
            continue
        pt = _fit_rho(rest, rf, forms=(form, "mccandlish"), weigh=False, refine=False)
        if pt is None:
            base["reason"] = "the others could not be fitted"
            rows.append(base)
            continue
        th = max(pt.fits.values(), key=lambda f: f.loglik)
        cells, lay = pt.cells, pt.lay
        f_rest, _ = predict(cells, lay, th.theta[None])
        own = _config_errors(rest.Y[:, rf], rest.C[:, rf], rest.W[:, rf], f_rest[0], rest.n_p, rest.n_r)
        dof = len(own) - _CONFIG_PARAMS
        x = effective_log_batch(mine.n_p, mine.n_r, pt.rho)
        f_new, _ = predict(cells, lay, th.theta[None], x=x, U=group_term(mine.n_r) if lay.m else None)
        held = _config_errors(mine.Y[:, rf], mine.C[:, rf], mine.W[:, rf], f_new[0], mine.n_p, mine.n_r)
        held = {c: v for c, v in held.items() if c in set(new)}
        if not held or dof < 2:
            base["reason"] = ("none of its configurations reached a target the others fit" if not held else
                              "the others have too few configurations to measure their scatter")
            rows.append(base)
            continue
        scale = max(float(np.sum([v[0] ** 2 for v in own.values()]) / dof), IMMATERIAL_LOG_ERROR ** 2)
        ratio = float(np.mean([v[0] ** 2 for v in held.values()]) / max(scale, 1e-12))
        critical = float(stats.f.ppf(0.99, len(held), dof))
        errs = [ybar - fp for _, cs in held.values() for _, ybar, _, fp in cs]
        for (p, r), (_, cs) in held.items():
            for i, ybar, n, fp in cs:
                points.append({"left_out": ph, "n_prompts": p, "n_rollouts": r, "threshold": float(J.thresholds[rf[i]]),
                               "S_measured": math.exp(ybar), "S_predicted": math.exp(fp), "n_runs": n,
                               "log_error": ybar - fp, "off_lines": (p, r) in off})
        base.update(n_cells=len(errs), error_ratio=ratio, critical=critical,
                    rms_log_error=float(np.sqrt(np.mean(np.square(errs)))), passed=bool(ratio <= critical))
        rows.append(base)
    return pd.DataFrame(rows, columns=CHECK_COLUMNS), pd.DataFrame(points)


def _table(J: _Joint, res: CrossAxisFit | None, pt: _RhoFit | None, fitted, status: str, reason: str) -> pd.DataFrame:
    """two_axis_fit.csv: per target rho (shared), B0 (prompts) and S_min with 95% intervals."""
    rows = []
    for j, t in enumerate(J.thresholds):
        used = J.W[:, j] > 0
        row = dict.fromkeys(TWO_AXIS_FIT_COLUMNS, np.nan)
        row.update({"threshold": float(t), "n_points": int(used.sum()), "n_censored": int((used & J.C[:, j]).sum()),
                    "status": "insufficient", "reason": reason or "fewer than 3 configurations over 2 n_prompts and "
                                                                  "2 n_rollouts reach the target"})
        if pt is not None and j in set(fitted.tolist()):
            i = int(np.flatnonzero(fitted == j)[0])
            a, b, al, _ = pt.lay.local(pt.fits[pt.chosen].theta[None])[0, i]
            row.update({"rho": pt.rho, "B0": math.exp(b), "S_min": math.exp(a), "status": status, "reason": ""})
            reach = used & ~J.C[:, j]
            x = effective_log_batch(J.n_p, J.n_r, pt.rho)
            f = a + np.logaddexp(0.0, al * (b - x))
            if pt.lay.m:
                f = f + float(pt.fits[pt.chosen].theta[pt.lay.gamma][0]) * group_term(J.n_r)[:, 0]
            w, y = J.W[reach, j], J.Y[reach, j]
            tss = float((w * (y - np.average(y, weights=w)) ** 2).sum())
            row["r2_log"] = 1 - float((w * (y - f[reach]) ** 2).sum()) / tss if tss > 0 else np.nan
            if res is not None and res.theta_draws is not None:
                ok = ~res.bad[:, i]
                row["rho_lo"], row["rho_hi"], n1 = bootstrap_interval(pt.rho, np.where(ok, res.rho_draws, np.nan), "rho")
                b_d = pt.lay.local(res.theta_draws)[:, i, 1]
                row["B0_lo"], row["B0_hi"], n2 = bootstrap_interval(row["B0"], np.where(ok, np.exp(b_d), np.nan), "B0")
                row["reason"] = "; ".join(filter(None, [n1, n2]))
            if res is not None:
                row["reason"] = "; ".join(filter(None, [row["reason"], ("checked: " if res.validated else "not checked: ")
                                                        + res.reason]))
        rows.append(row)
    return pd.DataFrame(rows, columns=TWO_AXIS_FIT_COLUMNS)

ISO_BATCH_COLUMNS = ["threshold", "n_prompts", "n_rollouts", "total_batch", "S_B", "censored", "n_runs", "S_rel", "rank"]
_SB_COLUMNS = ["phase", "threshold", "n_prompts", "n_rollouts", "S_B", "censored"]


def iso_batch_table(sb_eb_p2c: pd.DataFrame, cross: CrossAxisFit | None = None) -> pd.DataFrame:
    """Iso-batch phase (fixed B = n_p n_r): S per (n_prompts, n_rollouts) split and threshold.

    Replicates are combined by the geometric mean of S (censored if any replicate is).
    S_rel = S / (fastest uncensored split at that threshold). With a two_axis_fit result, the
    joint model's prediction S_pred is added. Empty input gives an empty table with the
    columns (ISO_BATCH_COLUMNS). With a cross-axis fit, its prediction S_pred is added."""
    sb = sb_eb_p2c.reindex(columns=list(dict.fromkeys([*sb_eb_p2c.columns, *_SB_COLUMNS])))
    for col in ("threshold", "n_prompts", "n_rollouts"):
        sb[col] = pd.to_numeric(sb[col], errors="coerce")
    sb = sb.dropna(subset=["threshold", "n_prompts", "n_rollouts"])
    rows = []
    for (t, n_p, n_r), sub in sb.groupby(["threshold", "n_prompts", "n_rollouts"], sort=True):
        S = pd.to_numeric(sub["S_B"], errors="coerce").to_numpy(dtype=float)
        S = S[np.isfinite(S) & (S > 0)]
        rows.append({"threshold": float(t), "n_prompts": int(n_p), "n_rollouts": int(n_r),
                     "total_batch": int(n_p * n_r),
                     "S_B": float(np.exp(np.log(S).mean())) if S.size else np.nan,
                     "censored": bool(sub["censored"].fillna(False).astype(bool).any()),
                     "n_runs": int(len(sub))})
    out = pd.DataFrame(rows, columns=ISO_BATCH_COLUMNS[:7])
    best = out[~out["censored"].astype(bool)].groupby("threshold")["S_B"].min()
    out["S_rel"] = out["S_B"] / out["threshold"].map(best)
    out["rank"] = out.groupby("threshold")["S_B"].rank(method="min")
    if cross is not None and cross.point is not None and len(out):
        pred = np.full(len(out), np.nan)
        for t, rows in out.groupby("threshold"):
            if cross.target_index(t) is None:
                continue
            p, *_ = cross.log_steps(t, rows["n_prompts"].to_numpy(float), rows["n_rollouts"].to_numpy(float),
                                    np.random.default_rng(0), 0)
            pred[rows.index.to_numpy()] = np.exp(p)
        out["S_pred"] = pred
    return out
