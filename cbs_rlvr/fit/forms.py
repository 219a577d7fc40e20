"""The forms of S(B) a phase is fitted with, and how the data weigh them.

Every form is S_j(B) = S_min,j (1 + (B_noise,j / B)^alpha_j) at target j, pooled over a phase's
targets: S_min,j free per target, log B_noise,j smooth in the target accuracy z_j (linear, and with
four targets or more quadratic: B_noise can rise faster toward the harder targets), log sigma_j
linear in z_j. They differ in the exponent:

- `mccandlish`: alpha = 1 at every target (McCandlish et al. 2018, the learning rate tuned at each B);
- `general`: one alpha for every target (Adam at a fixed rate bends like B^-0.5..0.7 at small B;
  along the rollouts axis alpha can exceed 1);
- `general_trend`: alpha linear in the target too (three targets or more).

Pooling lets a sweep of six batch sizes and two seeds borrow strength across its targets, so the
shape does not flip from one target to the next without evidence, and the trend of B_noise with
the target gets an interval.

Which form holds is decided by what predicts: leave-one-batch-point-out cross-validation (every run
of one batch point left out at once, all its targets; a run that stopped early counts as a lower
bound through the censored likelihood; the prediction carries the refit's own uncertainty), and the
forms weighted by pseudo-BMA+ (Yao et al. 2018: exp(elpd) regularised by a Bayesian bootstrap over
the folds; the evidence of a run's targets counted once for how much they go together). A bend
within a factor ALPHA_EQUIVALENT of 1 carries no weight of its own (`merge_equivalent`). The weights
carry the form's uncertainty into every interval downstream (the bootstrap draws are mixed in their
proportion).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._tobit import (
    ALPHA_RANGE,
    Cells,
    Layout,
    cell_loglik,
    covariance,
    newton,
    prediction_variance,
    start,
)

#: the forms in the order they nest
FORMS = ("mccandlish", "general", "general_trend")
#: a bend within this factor of alpha = 1 (alpha 0.87-1.15) is no shape of its own: the envelope's
#: pick of the best learning rate and eval noise leave such bends in exact 1/B sweeps, and B_noise
#: moves by tens of percent with them; within it the forms are one description, the simpler kept
ALPHA_EQUIVALENT = 1.15
#: at most this many cross-validation folds (batch points dealt round-robin in order of B)
MAX_FOLDS = 12
_ALPHA_STARTS = (0.4, 0.65, 1.6, 2.6)


def free_mask(form: str, lay: Layout) -> np.ndarray:
    """Which parameters of theta the form fits."""
    free = np.zeros(lay.P, dtype=bool)
    free[:lay.T] = True
    free[lay.beta0] = free[lay.s0] = True
    free[lay.gamma] = True
    if lay.T >= 2:
        free[lay.beta1] = free[lay.s1] = True
    if lay.T >= 4 and lay.curved:
        free[lay.beta2] = True
    if form != "mccandlish":
        free[lay.alpha0] = True
    if form == "general_trend" and lay.T >= 3:
        free[lay.alpha1] = True
    return free


def forms_for(n_targets: int, n_points: int) -> tuple[str, ...]:
    """The forms a fit of `n_targets` targets over `n_points` batch points can tell apart: the
    general forms need 4 batch points (3 fix a curve of three parameters exactly), the trend of
    alpha three targets."""
    if n_points < 4:
        return ("mccandlish",)
    return FORMS if n_targets >= 3 else FORMS[:2]


@dataclass
class FormFit:
    """One form fitted to one phase: theta (P,) and the log-likelihood at the optimum."""
    form: str
    theta: np.ndarray
    loglik: float
    ok: bool = True  # False: the bend is not identified (alpha at its range's end), the form is dropped


def fit_form(cells: Cells, lay: Layout, form: str, mc: FormFit | None = None) -> FormFit:
    """The form's maximum-likelihood fit of the first table of `cells` (K = 1): McCandlish from
    the grid start; a general form from the McCandlish optimum with alpha started at several
    values, the best kept (never below McCandlish: the general forms nest it)."""
    one = cells.take(slice(0, 1))
    th0 = start(one, lay)
    free_mc = free_mask("mccandlish", lay)
    th_mc, ll_mc = newton(one, lay, th0, free_mc, n_iter=80)
    if form == "mccandlish":
        return FormFit(form, th_mc[0], float(ll_mc[0]))
    base = mc.theta[None] if mc is not None else th_mc
    starts = np.repeat(base, len(_ALPHA_STARTS) + 1, axis=0)
    starts[1:, lay.alpha0] = _ALPHA_STARTS
    stack = Cells(one.x, one.z, np.repeat(one.Y, len(starts), 0), np.repeat(one.W, len(starts), 0),
                  np.repeat(one.C, len(starts), 0), one.b_bounds, one.U)
    free_a = free_mask("general", lay)
    th, ll = newton(stack, lay, starts, free_a, n_iter=80)
    if form == "general_trend":
        th, ll = newton(stack, lay, th, free_mask(form, lay), n_iter=80)
    ll = np.where(np.isfinite(ll) & ~_alpha_at_bound(th, lay), ll, -np.inf)
    best = int(np.argmax(ll))
    if not ll[best] >= float(ll_mc[0]):
        return FormFit(form, base[0].copy(), float(ll_mc[0]), ok=False)
    return FormFit(form, th[best], float(ll[best]))


def _alpha_at_bound(theta: np.ndarray, lay: Layout) -> np.ndarray:
    """(K,) True where some target's alpha sits at the end of its range: the bend is not
    identified (the curve is a step, or flat), and the fit is no description of a shape."""
    al = lay.local(theta)[:, :, 2]
    return ((al - ALPHA_RANGE[0]) < 1e-3).any(axis=1) | ((ALPHA_RANGE[1] - al) < 1e-3).any(axis=1)


def refit(cells: Cells, lay: Layout, fit: FormFit, n_iter: int = 30,
          tol: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """The form refitted on every table of `cells`, started at the point fit. Returns theta (K, P)
    and the log-likelihood (K,)."""
    K = cells.Y.shape[0]
    return newton(cells, lay, np.repeat(fit.theta[None], K, axis=0), free_mask(fit.form, lay), n_iter=n_iter,
                  tol=tol)


def folds(group_codes: np.ndarray, x: np.ndarray) -> list[np.ndarray]:
    """Row masks of the cross-validation folds: each batch point (group) out once, or with more
    than MAX_FOLDS points, the points dealt round-robin in order of batch size."""
    codes = np.unique(group_codes)
    order = sorted(codes, key=lambda g: (float(np.mean(x[group_codes == g])), g))
    n = min(len(order), MAX_FOLDS)
    return [np.isin(group_codes, [g for i, g in enumerate(order) if i % n == k]) for k in range(n)]


def cross_validate(cells: Cells, lay: Layout, fits: dict[str, FormFit], fold_rows: list[np.ndarray],
                   n_iter: int = 25) -> dict[str, np.ndarray]:
    """Per form, the held-out log predictive density of each fold (its runs' cells, censored ones
    as P(log S > bound)), from the form refitted without that fold (all folds at once as tables).
    The prediction carries the refit's own uncertainty (delta method): a flexible form extrapolated
    to a batch size beyond the others predicts widely, as it should, instead of being judged on a
    point value it cannot pin down."""
    one = cells.take(slice(0, 1))
    F = len(fold_rows)
    keep = np.stack([~rows for rows in fold_rows])  # (F, R)
    W = one.W[0][None] * keep[:, :, None]
    stack = Cells(one.x, one.z, np.repeat(one.Y, F, 0), W, np.repeat(one.C, F, 0), one.b_bounds, one.U)
    held = Cells(one.x, one.z, np.repeat(one.Y, F, 0), one.W[0][None] * (~keep)[:, :, None],
                 np.repeat(one.C, F, 0), one.b_bounds, one.U)
    out = {}
    for name, fit in fits.items():
        free = free_mask(name, lay)
        th, _ = newton(stack, lay, np.repeat(fit.theta[None], F, 0), free, n_iter=n_iter)
        with np.errstate(all="ignore"):
            var = prediction_variance(held, lay, th, covariance(stack, lay, th, free))
            ll = cell_loglik(held, lay, th, var).sum(axis=(1, 2))
        out[name] = np.where(np.isfinite(ll), ll, -1e6)
    return out


def merge_equivalent(weights: dict[str, float], fits: dict[str, FormFit], lay: Layout) -> dict[str, float]:
    """The weight of a bent form whose every alpha_j lies within ALPHA_EQUIVALENT of 1 moves to
    McCandlish's (a region of practical equivalence: the same description, the simpler form)."""
    if "mccandlish" not in weights:
        return weights
    out = dict(weights)
    for name, fit in fits.items():
        if name == "mccandlish":
            continue
        al = lay.local(fit.theta[None])[0, :, 2]
        if np.all(np.abs(np.log(al)) < np.log(ALPHA_EQUIVALENT)):
            out["mccandlish"] += out[name]
            out[name] = 0.0
    return out


def form_weights(elpd: dict[str, np.ndarray], n_draws: int = 1000, seed: int = 0) -> dict[str, float]:
    """Pseudo-BMA+ weights: for Dirichlet(1) weights over the folds, exp(F sum_k u_k elpd_km)
    normalised over the forms, averaged over the draws."""
    names = list(elpd)
    E = np.stack([elpd[n] for n in names], axis=1)  # (F, M)
    F = E.shape[0]
    if F == 0 or len(names) == 1:
        return {n: 1.0 / len(names) for n in names}
    u = np.random.default_rng(seed).dirichlet(np.ones(F), size=n_draws)  # (D, F)
    z = F * (u @ E)  # (D, M)
    z -= z.max(axis=1, keepdims=True)
    w = np.exp(z)
    w /= w.sum(axis=1, keepdims=True)
    mean = w.mean(axis=0)
    return {n: float(v) for n, v in zip(names, mean, strict=True)}
