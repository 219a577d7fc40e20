"""The solver of the progress model of every evaluation (private; the model is in allevals.py).

The run r at batch B_r (x_r = log B_r) with log speed u_r passes accuracy level a_k at step

    S_rk = e^{-u_r} T_rk,   T_rk = sum_{k' <= k} c_rk',   c_rk = E_k (1 + (b_k / B_r)^alpha)

with E_k = e^{d_k} the progress (in large-batch steps) from level a_{k-1} to a_k and b_k its local
noise scale, log b_k = Phi_k . beta (a polynomial in the level). Between two levels the accuracy
is linear in the step, so an evaluation at step s of run r in interval k has the expected accuracy

    p = a_{k-1} + (a_k - a_{k-1}) f,   f = (s e^{u_r} - T_{r,k-1}) / c_rk,

and a_K after the last level. An evaluation is Binomial(n, p) / n, its log-likelihood divided by
a dispersion phi (quasi-likelihood: what the shared curve and one speed per run do not describe
shows as overdispersion); the speeds are random, u_r ~ N(0, sigma_u^2) (sigma_u a scalar, or one per
run: a bootstrap weighs a run's prior term with its data).

The solver is Levenberg-Marquardt on the Fisher information (Gauss-Newton for the binomial), with
the arrow structure of the information (the global theta dense, every u_r touching only its own
run) solved by the Schur complement. Each evaluation's derivative in theta is
lambda (G_rk + f D_rk) with lambda = -(a_k - a_{k-1}) / c_rk, D_rk = dc_rk/dtheta and G_rk =
dT_{r,k-1}/dtheta, so the information is summed per (run, interval) in five numbers first and
mapped to theta after: a pass over the evaluations costs a few vector operations whatever the
number of parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALPHA_RANGE = (0.1, 6.0)
_P_FLOOR = 1e-6
_D_RANGE = (-25.0, 25.0)


@dataclass
class EvalData:
    """Every evaluation, sorted by run then step: run index `ri`, step `s`, accuracy `y`, binomial
    size `n` (n_val, or 1 where unknown, times `w`); per run the log batch `x`; the levels `a` (K + 1)
    and the basis `Phi` (K, m) of log b at the intervals' midpoints; `w` how many evaluations each
    one stands for (a subsample's weights; None: one each); `ref` the log-likelihood each evaluation
    is measured from (computed when first asked)."""
    ri: np.ndarray
    s: np.ndarray
    y: np.ndarray
    n: np.ndarray
    x: np.ndarray
    a: np.ndarray
    Phi: np.ndarray
    x_bounds: tuple[float, float]
    w: np.ndarray | None = None
    ref: np.ndarray | None = None

    @property
    def weight(self) -> np.ndarray:
        return np.ones(len(self.y)) if self.w is None else self.w

    @property
    def reference(self) -> np.ndarray:
        """Per evaluation (n = 1), the log-likelihood at p = its accuracy within the levels' range:
        the point from which the fit is measured. A constant, so the optimum is the same, but the
        objective becomes minus half the deviance of what the curve can describe, a scale the
        solver's relative stopping rule can use. Measured from zero, 1,319 prompts put it at -660
        per evaluation whatever the fit, and the evaluations past the top level (in a long sweep
        most of them, at a constant p) add their own constant: a step gaining 100 log-likelihood
        units on 2 million evaluations counted as converged."""
        if self.ref is None:
            q = np.clip(self.y, max(float(self.a[0]), _P_FLOOR), min(float(self.a[-1]), 1.0 - _P_FLOOR))
            self.ref = self.y * np.log(q) + (1.0 - self.y) * np.log1p(-q)
        return self.ref

    @property
    def R(self) -> int:
        return len(self.x)

    @property
    def K(self) -> int:
        return len(self.a) - 1

    @property
    def P(self) -> int:
        return self.K + self.Phi.shape[1] + 1

    @property
    def starts(self) -> np.ndarray:
        """(R + 1,) where each run's evaluations begin (they are sorted by run)."""
        return np.searchsorted(self.ri, np.arange(self.R + 1))

    def run(self, r: int) -> slice:
        st = self.starts
        return slice(int(st[r]), int(st[r + 1]))

    def last_steps(self) -> np.ndarray:
        """(R,) each run's last evaluated step (NaN for a run without evaluations)."""
        out = np.full(self.R, np.nan)
        has = np.bincount(self.ri, minlength=self.R) > 0
        out[has] = np.maximum.reduceat(self.s, self.starts[:-1][has]) if has.any() else out[has]
        return out

    def scaled(self, factor) -> EvalData:
        """The same evaluations, each counting `factor` times more (a scalar, or one per evaluation)."""
        return EvalData(self.ri, self.s, self.y, self.n * factor, self.x, self.a, self.Phi, self.x_bounds,
                        self.weight * factor, self.ref)

    def take(self, keep: np.ndarray) -> EvalData:
        """The same runs with only the evaluations `keep` (a mask), each with its weight."""
        return EvalData(self.ri[keep], self.s[keep], self.y[keep], self.n[keep], self.x, self.a, self.Phi,
                        self.x_bounds, self.weight[keep], None if self.ref is None else self.ref[keep])


@dataclass
class Curve:
    """The curve of theta at every run: E (K,), log b (K,), c (R, K) steps per interval at speed 1,
    T (R, K + 1) cumulative (T[:, 0] = 0), q (R, K) = (b_k / B_r)^alpha, alpha."""
    E: np.ndarray
    logb: np.ndarray
    c: np.ndarray
    T: np.ndarray
    q: np.ndarray
    alpha: float


def curve(theta: np.ndarray, data: EvalData, x: np.ndarray | None = None) -> Curve:
    K = data.K
    x = data.x if x is None else np.asarray(x, dtype=float)
    E = np.exp(np.clip(theta[:K], *_D_RANGE))
    logb = data.Phi @ theta[K:K + data.Phi.shape[1]]
    alpha = float(theta[-1])
    # (b/B)^alpha within e^+-200: with E <= e^25 the cumulative steps stay finite (an overflow to inf
    # made inf * 0 = NaN keys in locate, on a trial step of a 1,000-run fit)
    q = np.exp(np.clip(alpha * (logb[None, :] - x[:, None]), -200, 200))
    c = E[None, :] * (1.0 + q)
    T = np.zeros((len(x), K + 1))
    np.cumsum(c, axis=1, out=T[:, 1:])
    return Curve(E, logb, c, T, q, alpha)


@dataclass
class Located:
    """Where every evaluation sits on its run's curve: bin = r K + k (k the interval, K beyond the
    last level), fraction f within it, sigma = s e^{u} (the step at speed 1), and p."""
    bins: np.ndarray
    k: np.ndarray
    f: np.ndarray
    sig: np.ndarray
    p: np.ndarray


def locate(cv: Curve, u: np.ndarray, data: EvalData) -> Located:
    """Every evaluation's interval, fraction within it and expected accuracy."""
    R, K = cv.T.shape[0], data.K
    sig = data.s * np.exp(u)[data.ri]
    top = cv.T[:, -1]
    # one sorted key array for every run: run index + position within the run's span
    inv_span = 1.0 / (top * (1.0 + 1e-9) + 1e-300)
    keys = (np.arange(R)[:, None] + cv.T[:, 1:] * inv_span[:, None]).ravel()
    rel = sig * inv_span[data.ri]
    q = data.ri + np.minimum(rel, 1.0 - 1e-12)  # sorted: the evaluations are by run, then step
    # how many keys lie at or below each evaluation: each key counted from its insertion point on
    # (a search of the R K keys in the N evaluations, not of N evaluations in the keys)
    idx = np.searchsorted(q, keys, side="left")
    k = np.repeat(np.arange(len(keys) + 1), np.diff(np.r_[0, idx, len(q)])) - data.ri * K
    k[rel >= 1.0 / (1.0 + 1e-9)] = K
    np.minimum(k, K, out=k)
    kk = np.minimum(k, K - 1)
    bins = data.ri * K + kk
    f = (sig - cv.T[:, :-1].ravel()[bins]) / cv.c.ravel()[bins]
    np.clip(f, 0.0, 1.0, out=f)
    beyond = k >= K
    f[beyond] = 1.0
    p = data.a[kk] + np.diff(data.a)[kk] * f
    np.clip(p, _P_FLOOR, 1.0 - _P_FLOOR, out=p)
    return Located(bins, k, f, sig, p)


def expected_accuracy(cv: Curve, u: np.ndarray, data: EvalData):
    loc = locate(cv, u, data)
    return loc.p, loc.k, loc.f, loc.sig


def _loglik(loc: Located, u, data: EvalData, sigma_u: float, phi: float) -> float:
    """The quasi log-likelihood from EvalData.reference, plus the speeds' log prior."""
    p, y = loc.p, data.y
    ll = data.n * (y * np.log(p) + (1.0 - y) * np.log1p(-p) - data.reference)
    return float(ll.sum() / phi - 0.5 * np.sum(u * u / np.square(sigma_u)))


def objective(theta, u, data: EvalData, sigma_u: float, phi: float) -> float:
    """The quasi log-likelihood of every evaluation plus the speeds' normal log prior."""
    return _loglik(locate(curve(theta, data), u, data), u, data, sigma_u, phi)


def _design(theta, cv: Curve, data: EvalData):
    """D (R, K, P) = dc_rk / dtheta and G (R, K, P) = dT_{r,k-1} / dtheta."""
    R, K, m = len(data.x), data.K, data.Phi.shape[1]
    D = np.zeros((R, K, data.P))
    D[:, np.arange(K), np.arange(K)] = cv.c
    eq = cv.E[None, :] * cv.q  # (R, K)
    D[:, :, K:K + m] = (eq * cv.alpha)[:, :, None] * data.Phi[None, :, :]
    D[:, :, -1] = eq * (cv.logb[None, :] - data.x[:, None])
    G = np.zeros_like(D)
    np.cumsum(D[:, :-1, :], axis=1, out=G[:, 1:, :])
    return D, G


@dataclass
class Binned:
    """The evaluations' score and information summed per (run, interval) bin (R K,): A0, A1, A2
    (theta-theta), U0, U1 (theta-u), g0, g1 (theta's score), per run F_uu and g_u (data only),
    the design D and G (R K, P), and the log-likelihood."""
    A0: np.ndarray
    A1: np.ndarray
    A2: np.ndarray
    U0: np.ndarray
    U1: np.ndarray
    g0: np.ndarray
    g1: np.ndarray
    F_uu: np.ndarray
    g_u: np.ndarray
    Dm: np.ndarray
    Gm: np.ndarray
    loglik: float


def _terms(cv: Curve, u, data: EvalData, phi: float):
    """The evaluations below the top level (the others say nothing of theta or u): their Located
    fields, run index, lam = dp/dsigma's factor, information and score in sigma."""
    loc = locate(cv, u, data)
    inside = loc.k < data.K
    bins, f, sig, pp = loc.bins[inside], loc.f[inside], loc.sig[inside], loc.p[inside]
    lam = -np.diff(data.a)[loc.k[inside]] / cv.c.ravel()[bins]
    info = data.n[inside] / (pp * (1.0 - pp)) / phi
    return loc, bins, f, sig, data.ri[inside], lam, info, (data.y[inside] - pp) * info * lam


def speed_information(theta, u, data: EvalData, sigma_u, phi: float):
    """The speeds' score g_u (R,) and information F_uu (R,) alone, theta held: a pass without the
    design (what a forecast's speed refit needs)."""
    _, _, _, sig, ri, lam, info, score_lam = _terms(curve(theta, data), u, data, phi)
    F_uu = np.bincount(ri, weights=info * lam * lam * sig * sig, minlength=data.R) + 1.0 / np.square(sigma_u)
    g_u = -np.bincount(ri, weights=score_lam * sig, minlength=data.R) - u / np.square(sigma_u)
    return g_u, F_uu


def binned(theta, u, data: EvalData, sigma_u, phi: float) -> Binned:
    cv = curve(theta, data)
    loc, bins, f, sig, ri, lam, info, score_lam = _terms(cv, u, data, phi)
    R, K, P = data.R, data.K, data.P

    def per_bin(v):
        return np.bincount(bins, weights=v, minlength=R * K)

    w2 = info * lam * lam
    w2f, w2s = w2 * f, w2 * sig
    D, G = _design(theta, cv, data)
    return Binned(per_bin(w2), per_bin(w2f), per_bin(w2f * f), per_bin(w2s), per_bin(w2s * f), per_bin(score_lam),
                  per_bin(score_lam * f), np.bincount(ri, weights=w2s * sig, minlength=R),
                  -np.bincount(ri, weights=score_lam * sig, minlength=R), D.reshape(R * K, P), G.reshape(R * K, P),
                  _loglik(loc, u, data, sigma_u, phi))


def information(theta, u, data: EvalData, sigma_u, phi: float, with_objective: bool = False):
    """Score and Fisher information: g_theta (P,), g_u (R,), F_tt (P, P), F_tu (R, P), F_uu (R,)
    (and the objective, with_objective)."""
    b = binned(theta, u, data, sigma_u, phi)
    R, K, P = data.R, data.K, data.P
    Dm, Gm = b.Dm, b.Gm
    g_t = b.g0 @ Gm + b.g1 @ Dm
    cross = Gm.T @ (b.A1[:, None] * Dm)
    F_tt = Gm.T @ (b.A0[:, None] * Gm) + cross + cross.T + Dm.T @ (b.A2[:, None] * Dm)
    F_tu = -((b.U0[:, None] * Gm).reshape(R, K, P).sum(axis=1) + (b.U1[:, None] * Dm).reshape(R, K, P).sum(axis=1))
    F_uu = b.F_uu + 1.0 / np.square(sigma_u)
    g_u = b.g_u - u / np.square(sigma_u)
    parts = (g_t, g_u, F_tt, F_tu, F_uu)
    return (parts, b.loglik) if with_objective else parts


def per_run(theta, u, data: EvalData, sigma_u, phi: float, free: np.ndarray):
    """Each run's share of the score of theta, g (R, P), and of the information with its speed
    profiled out, S (R, P, P) (free parameters only; the others zero): what a run's weight moves;
    and how its speed follows the curve, du_r = -(c_r . dtheta) / F_uu_r: c (R, P), F_uu (R,)."""
    b = binned(theta, u, data, sigma_u, phi)
    R, K, P = data.R, data.K, data.P
    G3, D3 = b.Gm.reshape(R, K, P) * free, b.Dm.reshape(R, K, P) * free
    g = np.einsum("rk,rkp->rp", b.g0.reshape(R, K), G3) + np.einsum("rk,rkp->rp", b.g1.reshape(R, K), D3)
    A0, A1, A2 = (a.reshape(R, K) for a in (b.A0, b.A1, b.A2))
    cross = np.einsum("rk,rkp,rkq->rpq", A1, G3, D3)
    F = (np.einsum("rk,rkp,rkq->rpq", A0, G3, G3) + cross + np.swapaxes(cross, 1, 2)
         + np.einsum("rk,rkp,rkq->rpq", A2, D3, D3))
    c = -(np.einsum("rk,rkp->rp", b.U0.reshape(R, K), G3) + np.einsum("rk,rkp->rp", b.U1.reshape(R, K), D3))
    F_uu = b.F_uu + 1.0 / np.square(sigma_u)
    return g, F - c[:, :, None] * c[:, None, :] / F_uu[:, None, None], c, F_uu


def schur_solve(g_t, g_u, F_tt, F_tu, F_uu, free: np.ndarray, mu: float = 0.0):
    """The step (d_theta, d_u) of (F + mu diag F) d = g over the free parameters and the speeds."""
    idx = np.flatnonzero(free)
    Ft = F_tt[np.ix_(idx, idx)]
    Fc = F_tu[:, idx]
    Fuu = F_uu * (1.0 + mu)
    A = Ft + mu * np.diag(np.maximum(np.diag(Ft), 1e-12)) - Fc.T @ (Fc / Fuu[:, None])
    rhs = g_t[idx] - Fc.T @ (g_u / Fuu)
    try:
        dt = np.linalg.solve(A, rhs)
    except np.linalg.LinAlgError:
        dt = np.linalg.lstsq(A, rhs, rcond=None)[0]
    d_theta = np.zeros(len(g_t))
    d_theta[idx] = dt
    d_u = (g_u - Fc @ dt) / Fuu
    return d_theta, d_u


def project(theta: np.ndarray, data: EvalData) -> np.ndarray:
    """Keep theta in its box: d_k, alpha, and log b within the search range at every level."""
    th = theta.copy()
    K, m = data.K, data.Phi.shape[1]
    th[:K] = np.clip(th[:K], *_D_RANGE)
    th[-1] = np.clip(th[-1], *ALPHA_RANGE)
    logb = data.Phi @ th[K:K + m]
    lo, hi = data.x_bounds
    # the first basis column is constant: move the intercept to bring the levels back into range
    th[K] += min(hi - float(logb.max()), 0.0) + max(lo - float(logb.min()), 0.0)
    return th


def solve(data: EvalData, theta: np.ndarray, u: np.ndarray, free: np.ndarray, sigma_u: float, phi: float,
          n_iter: int = 60, tol: float = 1e-6):
    """Levenberg-Marquardt ascent of `objective` from (theta, u): each trial point's information is
    computed with its objective, so an accepted step costs one pass over the evaluations. Returns
    theta, u, objective, the number of iterations, and whether the steps converged."""
    theta, u = project(np.array(theta, dtype=float), data), np.array(u, dtype=float)
    parts, obj = information(theta, u, data, sigma_u, phi, with_objective=True)
    mu, converged, done = 1e-3, False, 0
    for it in range(1, n_iter + 1):
        done = it
        d_t, d_u = schur_solve(*parts, free, mu)
        new_t = project(theta + d_t, data)
        new_u = u + np.clip(d_u, -2.0, 2.0)
        new_parts, new_obj = information(new_t, new_u, data, sigma_u, phi, with_objective=True)
        if np.isfinite(new_obj) and new_obj >= obj - 1e-10 * abs(obj):
            gain = new_obj - obj
            theta, u, obj, parts = new_t, new_u, new_obj, new_parts
            # a small step says the ascent is done only when it was the Gauss-Newton step (a damped
            # one is small by construction); a gain below 0.01 tol / 1e-4 log-likelihood units is
            # nothing an interval can see, whatever the number of evaluations
            small = (mu < 1.0 and np.max(np.abs(d_t)) < tol * 100
                     and np.max(np.abs(d_u), initial=0.0) < tol * 100)
            mu = max(mu * 0.2, 1e-9)
            if gain <= tol * (1e-3 * abs(obj) + 100.0) or small:
                converged = True
                break
        else:
            mu *= 10.0
            if mu > 1e10:
                converged = True
                break
    return theta, u, obj, done, converged
