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

from ._tobit import Cells, predict
from .crosscheck import CHECK_COLUMNS, check_by_leaving_out
from .forms import free_mask, refit
from .interval import bootstrap_interval
from .joint import (
    RHO_GRID,
    Joint,
    RhoFit,
    effective_log_batch,
    fit_rho,
    fitted_targets,
    group_term,
    joint_arrays,
    joint_cells,
)
from .resample import Scatter, estimate_scatter, parametric_tables

__all__ = ["CHECK_COLUMNS", "TWO_AXIS_FIT_COLUMNS", "CrossAxisFit", "cross_axis_fit", "effective_log_batch",
           "iso_batch_table", "rollout_worth"]

TWO_AXIS_FIT_COLUMNS = ["threshold", "rho", "rho_lo", "rho_hi", "B0", "B0_lo", "B0_hi", "S_min", "r2_log",
                        "n_points", "n_censored", "status", "reason"]
#: an untested model's prediction off the axes carries at least this sd of log S of its own
UNTESTED_SD = 0.3


def rollout_worth(rho: float) -> float:
    """What a second rollout of a prompt is worth in new prompts: (1 - rho) / (1 + rho)."""
    return (1.0 - rho) / (1.0 + rho)


@dataclass
class CrossAxisFit:
    """The joint model over several axes, its check, and its draws (see the module docstring)."""
    joint: Joint
    point: RhoFit | None
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
    fitted = fitted_targets(J)
    empty_check = pd.DataFrame(columns=CHECK_COLUMNS)
    if not len(fitted):
        table = _table(J, None, None, fitted, "insufficient",
                       "fewer than 3 configurations over 2 n_prompts and 2 n_rollouts reach any target")
        return CrossAxisFit(J, None, table, empty_check, False, "no target has enough configurations", phases=phases)
    pt = fit_rho(J, fitted)
    check, points = check_by_leaving_out(J, fitted, pt.chosen)
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
            cells, lay = joint_cells(J, r, pt.fitted)
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


def _table(J: Joint, res: CrossAxisFit | None, pt: RhoFit | None, fitted, status: str, reason: str) -> pd.DataFrame:
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
