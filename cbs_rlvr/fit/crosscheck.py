"""The check of the joint model (crossaxis.py): each phase in turn left out, the model refitted on the
others and the left-out runs predicted; their errors against the others' scatter."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ._tobit import predict
from .joint import Joint, effective_log_batch, fit_rho, fitted_targets, group_term

CHECK_COLUMNS = ["left_out", "n_configs", "n_off_lines", "n_cells", "error_ratio", "critical", "rms_log_error",
                 "passed", "reason"]


def on_lines(J_rest: Joint, n_p: float, n_r: float) -> bool:
    """Whether a configuration lies on a line the other phases sampled (their n_prompts at this
    n_rollouts varied, or their n_rollouts at this n_prompts)."""
    same_r = np.isclose(J_rest.n_r, n_r)
    same_p = np.isclose(J_rest.n_p, n_p)
    return bool((same_r.sum() >= 2 and len(np.unique(J_rest.n_p[same_r])) >= 2)
                or (same_p.sum() >= 2 and len(np.unique(J_rest.n_r[same_p])) >= 2))


def config_errors(Y, C, W, f, n_p, n_r) -> dict:
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


def check_by_leaving_out(J: Joint, fitted, form: str) -> tuple[pd.DataFrame, pd.DataFrame]:
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
        off = [c for c in new if not on_lines(rest, *c)]
        base = {"left_out": ph, "n_configs": len(new), "n_off_lines": len(off), "n_cells": 0, "error_ratio": np.nan,
                "critical": np.nan, "rms_log_error": np.nan, "passed": False, "reason": ""}
        rf = fitted_targets(rest)
        rf = np.array([j for j in rf if j in set(fitted.tolist())], dtype=int)
        if not new or not len(rf):
            base["reason"] = ("every configuration of it is in the others" if not new else
                              "the others alone span fewer than 2 n_prompts and 2 n_rollouts at every target")
            rows.append(base)
            continue
        pt = fit_rho(rest, rf, forms=(form, "mccandlish"), weigh=False, refine=False)
        if pt is None:
            base["reason"] = "the others could not be fitted"
            rows.append(base)
            continue
        th = max(pt.fits.values(), key=lambda f: f.loglik)
        cells, lay = pt.cells, pt.lay
        f_rest, _ = predict(cells, lay, th.theta[None])
        own = config_errors(rest.Y[:, rf], rest.C[:, rf], rest.W[:, rf], f_rest[0], rest.n_p, rest.n_r)
        dof = len(own) - _CONFIG_PARAMS
        x = effective_log_batch(mine.n_p, mine.n_r, pt.rho)
        f_new, _ = predict(cells, lay, th.theta[None], x=x, U=group_term(mine.n_r) if lay.m else None)
        held = config_errors(mine.Y[:, rf], mine.C[:, rf], mine.W[:, rf], f_new[0], mine.n_p, mine.n_r)
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
