"""The joint model of several axes' runs (crossaxis.py): the data of every phase as one set of fit
arrays, the effective batch B_eff = n_p n_r / (1 + (n_r - 1) rho), the small-group term gamma / n_r,
and the fit with rho profiled over a grid and refined."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._tobit import Cells, Layout
from .forms import FORMS, cross_validate, fit_form, folds, form_weights, forms_for, merge_equivalent
from .phase import _SEARCH_DECADES, sb_arrays, target_coordinates

RHO_GRID = np.array([0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.55, 0.7, 0.85, 1.0])


def effective_log_batch(n_p, n_r, rho: float) -> np.ndarray:
    n_p, n_r = np.asarray(n_p, dtype=float), np.asarray(n_r, dtype=float)
    return np.log(n_p * n_r) - np.log1p((n_r - 1.0) * rho)


@dataclass
class Joint:
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

    def subset(self, rows) -> Joint:
        return Joint(self.n_p[rows], self.n_r[rows], self.phase[rows], self.Y[rows], self.C[rows], self.W[rows],
                      self.groups[rows], self.bounds[rows], self.thresholds)


def joint_arrays(sb_all: pd.DataFrame, thresholds) -> Joint:
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
    return Joint(n_p[ok], n_r[ok], runs["phase"].astype(str).to_numpy()[ok], arr["Y"][ok], arr["C"][ok],
                  arr["W"][ok], groups[ok], arr["bounds"][ok], np.asarray(thr))


@dataclass
class RhoFit:
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


def uses_groups(J: Joint) -> bool:
    """The small-group term is fitted where the runs span three n_rollouts or more (with two, it and
    rho are one and the same freedom)."""
    return len(np.unique(J.n_r)) >= 3


def joint_cells(J: Joint, rho: float, fitted) -> tuple[Cells, Layout]:
    x = effective_log_batch(J.n_p, J.n_r, rho)
    U = group_term(J.n_r) if uses_groups(J) else None
    xb = np.log(J.n_p * J.n_r)
    bb = (float(xb.min() - _SEARCH_DECADES * math.log(10)), float(xb.max() + _SEARCH_DECADES * math.log(10)))
    z = target_coordinates(J.thresholds[fitted])
    # log B0 linear in the target: the model's question is how the axes combine, asked of few runs
    return Cells(x, z, J.Y[None][:, :, fitted], J.W[None][:, :, fitted], J.C[None][:, :, fitted], bb, U), \
        Layout(z, 0 if U is None else 1, curved=False)


def fitted_targets(J: Joint) -> np.ndarray:
    reached = (J.W > 0) & ~J.C
    ok = []
    for j in range(len(J.thresholds)):
        cfg = {(p, r) for p, r, hit in zip(J.n_p, J.n_r, reached[:, j], strict=True) if hit}
        if len(cfg) >= 3 and len({c[0] for c in cfg}) >= 2 and len({c[1] for c in cfg}) >= 2:
            ok.append(j)
    return np.array(ok, dtype=int)


def fit_rho(J: Joint, fitted, forms=None, weigh: bool = True, refine: bool = True) -> RhoFit | None:
    """The joint fit with rho profiled over RHO_GRID (the best likelihood of McCandlish's form or the
    one-alpha form), refined between the grid's neighbours, every form fitted at that rho and
    weighted by leave-one-batch-point-out prediction."""
    if not len(fitted):
        return None
    names = [f for f in forms_for(len(fitted), len(np.unique(J.groups))) if forms is None or f in forms]
    profile = [f for f in names if f in ("mccandlish", "general")] or names[:1]
    best = None
    for rho in RHO_GRID:
        cells, lay = joint_cells(J, rho, fitted)
        fits = forms_at(cells, lay, profile)
        if not fits:
            continue
        ll = max(f.loglik for f in fits.values())
        if best is None or ll > best.loglik:
            best = RhoFit(float(rho), fits, {}, "", ll, cells, lay, fitted)
    if best is None:
        return None
    if refine:
        best = refine_rho(J, fitted, best)
    if set(best.fits) != set(names):
        best.fits = forms_at(best.cells, best.lay, names)
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


def forms_at(cells: Cells, lay: Layout, names) -> dict:
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


def refine_rho(J: Joint, fitted, best: RhoFit, n_steps: int = 7) -> RhoFit:
    """Golden-section search of rho between the grid neighbours of the best grid point (the form of
    highest likelihood there refitted; the other forms refitted at the result)."""
    form = max(best.fits.values(), key=lambda f: f.loglik).form
    k = int(np.argmin(np.abs(RHO_GRID - best.rho)))
    lo, hi = RHO_GRID[max(k - 1, 0)], RHO_GRID[min(k + 1, len(RHO_GRID) - 1)]
    cache = {}

    def ll(rho):
        if rho not in cache:
            cells, lay = joint_cells(J, rho, fitted)
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
    cells, lay = joint_cells(J, rho, fitted)
    fits = forms_at(cells, lay, list(best.fits)) or best.fits
    return RhoFit(float(rho), fits, {}, "", max(f.loglik for f in fits.values()), cells, lay, fitted)
