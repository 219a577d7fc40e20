"""The one censored-likelihood solver behind every fit of S(B) in this project (private).

For run r at target j, in log space (the cells of a stack of K tables, arrays (K, R, T)):

    log S_rj = a_j + softplus(alpha_j (b_j - x_r)) + u_r . gamma + eps_rj,   eps_rj ~ N(0, sigma_j^2)
    b_j = beta0 + beta1 z_j + beta2 (z_j^2 - mean z^2),   alpha_j = alpha0 + alpha1 z_j,   log sigma_j = s0 + s1 z_j

a_j = log S_min and b_j = log B_noise at target j, softplus(alpha (b - x)) = log(1 + (B_noise / B)^alpha)
with x = log B (or of an effective batch), z_j the target's coordinate, u_r optional covariates. A
censored cell (a run that stopped before the target) is a lower bound, log S_rj >= y_rj, and enters
through the normal tail (Tobit). Cells carry weights (each batch point weighs 1 at a target; 0 where
a run has no value). A *form* frees a subset of theta = (a_1..a_T, beta0, beta1, alpha0, alpha1,
gamma, s0, s1, beta2) and fixes the rest (McCandlish: alpha0 = 1, alpha1 = 0; one target: beta1 = alpha1 =
s1 = 0).

The solver is a damped Newton ascent (Levenberg-Marquardt) of the weighted log-likelihood with the
exact gradient and Hessian, for K tables at once. Every parameter is a per-target quantity (a_j,
b_j, alpha_j, log sigma_j) times a fixed design, so the per-cell derivatives are summed per target
first (K x T x 4 x 4) and then mapped to theta: the cost is a few passes over the cells per step,
whatever the number of parameters. A step is kept only if it raises the likelihood.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ALPHA_RANGE = (0.1, 6.0)
SIGMA_FLOOR = 1e-6
#: log B_noise may change at most this much per unit of target accuracy (a factor 1000 over 0.5)
BETA1_MAX = math.log(1000.0) / 0.5
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass
class Cells:
    """The data of one fit: x (R,) log batch per run, z (T,) target coordinates, U (R, m) optional
    covariates; Y, W, C (K, R, T): log S, weights (0: no value) and censored flags of K tables;
    b_bounds: the search range of log B_noise."""
    x: np.ndarray
    z: np.ndarray
    Y: np.ndarray
    W: np.ndarray
    C: np.ndarray
    b_bounds: tuple[float, float]
    U: np.ndarray | None = None

    @property
    def n_targets(self) -> int:
        return len(self.z)

    @property
    def n_cov(self) -> int:
        return 0 if self.U is None else self.U.shape[1]

    def take(self, rows) -> Cells:
        """The same fit on a subset of the K tables."""
        return Cells(self.x, self.z, self.Y[rows], self.W[rows], self.C[rows], self.b_bounds, self.U)


class Layout:
    """Where each parameter sits in theta, and the design A (T, 4, P) that maps theta to the
    per-target (a_j, b_j, alpha_j, log sigma_j)."""

    def __init__(self, z: np.ndarray, n_cov: int = 0, curved: bool = True):
        T = len(z)
        self.curved = curved  # whether log B_noise may bend in the target (beta2 free, 4 targets or more)
        self.T, self.m = T, n_cov
        self.beta0, self.beta1, self.alpha0, self.alpha1 = T, T + 1, T + 2, T + 3
        self.gamma = slice(T + 4, T + 4 + n_cov)
        self.s0, self.s1 = T + 4 + n_cov, T + 5 + n_cov
        self.beta2 = T + 6 + n_cov
        self.P = T + 7 + n_cov
        A = np.zeros((T, 4, self.P))
        z2 = np.asarray(z, dtype=float) ** 2
        for j in range(T):
            A[j, 0, j] = 1.0
            A[j, 1, self.beta0], A[j, 1, self.beta1] = 1.0, z[j]
            A[j, 1, self.beta2] = z2[j] - z2.mean()
            A[j, 2, self.alpha0], A[j, 2, self.alpha1] = 1.0, z[j]
            A[j, 3, self.s0], A[j, 3, self.s1] = 1.0, z[j]
        self.A = A
        self.z = np.asarray(z, dtype=float)

    def local(self, theta: np.ndarray) -> np.ndarray:
        """(K, T, 4): a_j, b_j, alpha_j, log sigma_j."""
        T = self.T
        return (np.atleast_2d(theta) @ self.A.reshape(T * 4, self.P).T).reshape(-1, T, 4)


def _norm_logpdf(z):
    return -0.5 * np.square(z) - _LOG_SQRT_2PI


@dataclass
class Packed:
    """The cells of K tables reduced to what the likelihood needs: per (table, batch point, target)
    the sums of w, w y and w y^2 over the runs that reached the target (their Gaussian terms depend
    on nothing else, every run of one batch point sharing the curve), and the censored cells one by
    one (table kc, batch point gc, target jc, bound yc, weight wc). gx (G,) and gU (G, m): the batch
    points' log batch and covariates."""
    gx: np.ndarray
    gU: np.ndarray | None
    S0: np.ndarray
    S1: np.ndarray
    S2: np.ndarray
    kc: np.ndarray
    gc: np.ndarray
    jc: np.ndarray
    yc: np.ndarray
    wc: np.ndarray

    @classmethod
    def of(cls, cells: Cells) -> Packed:
        key = cells.x[:, None] if cells.U is None else np.column_stack([cells.x, cells.U])
        uniq, inv = np.unique(key, axis=0, return_inverse=True)
        inv = np.asarray(inv).ravel()
        order = np.argsort(inv, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(inv[order]) != 0])
        Wu = np.where(cells.C, 0.0, cells.W)
        Y = np.where(cells.W > 0, cells.Y, 0.0)

        def per_point(V):  # (K, R, T) -> (K, G, T): the runs of each batch point summed
            return np.add.reduceat(V[:, order, :], starts, axis=1)

        kc, rc, jc = np.nonzero(cells.C & (cells.W > 0))
        return cls(uniq[:, 0], None if cells.U is None else uniq[:, 1:], per_point(Wu), per_point(Wu * Y),
                   per_point(Wu * Y * Y), kc, inv[rc], jc, cells.Y[kc, rc, jc], cells.W[kc, rc, jc])

    def take(self, idx: np.ndarray) -> Packed:
        """The same data for the tables `idx` (in that order)."""
        pos = np.full(self.S0.shape[0], -1)
        pos[idx] = np.arange(len(idx))
        keep = pos[self.kc] >= 0
        return Packed(self.gx, self.gU, self.S0[idx], self.S1[idx], self.S2[idx], pos[self.kc[keep]],
                      self.gc[keep], self.jc[keep], self.yc[keep], self.wc[keep])


def _terms(pk: Packed, lay: Layout, theta: np.ndarray, derivatives: bool = True):
    """Weighted Tobit log-likelihood (K,), and optionally its gradient (K, P) and Hessian (K, P, P)."""
    from scipy import special

    K, G, T = pk.S0.shape
    loc = lay.local(theta)
    a, b, al, ls = (loc[:, None, :, i] for i in range(4))  # (K, 1, T)
    d = b - pk.gx[None, :, None]
    t = al * d
    e = np.exp(-np.abs(t))
    f = a + np.maximum(t, 0.0) + np.log1p(e)
    if lay.m:
        f = f + (theta[:, lay.gamma] @ pk.gU.T)[:, :, None]
    isig2 = np.exp(-2.0 * ls)
    # the runs that reached their target: Gaussian terms from the sums
    R1 = pk.S1 - f * pk.S0
    Q = pk.S2 - 2.0 * f * pk.S1 + f * f * pk.S0
    total = (-0.5 * Q * isig2 - pk.S0 * ls).sum(axis=(1, 2))
    cens = pk.kc.size > 0
    if cens:
        flat = (pk.kc * G + pk.gc) * T + pk.jc
        f_c = f.reshape(-1)[flat]
        ls_c = ls[pk.kc, 0, pk.jc]
        sc = np.exp(-ls_c)
        zc = (pk.yc - f_c) * sc
        logsf = special.log_ndtr(-zc)
        total = total + np.bincount(pk.kc, weights=pk.wc * logsf, minlength=K)
    if not derivatives:
        return total, None, None
    L = _cell_derivatives(pk, isig2, R1, Q, (flat, zc, sc, logsf) if cens else None)
    return (total,) + _chain(pk, lay, L, al, d, t, e)


def _cell_derivatives(pk: Packed, isig2, R1, Q, censored):
    """d/df, d2/df2, d/dlog sigma, d2/dlog sigma2, d2/df dlog sigma of the log-likelihood, per cell (K, G, T)."""
    Lf = R1 * isig2
    Lff = -pk.S0 * isig2
    Ls = Q * isig2 - pk.S0
    Lss = -2.0 * Q * isig2
    Lfs = -2.0 * R1 * isig2
    if censored is not None:
        flat, zc, sc, logsf = censored
        K, G, T = pk.S0.shape
        lam = np.exp(-0.5 * zc * zc - _LOG_SQRT_2PI - logsf)
        q = 1.0 + zc * (lam - zc)

        def add(acc, v):
            return acc + np.bincount(flat, weights=pk.wc * v, minlength=K * G * T).reshape(K, G, T)

        Lf = add(Lf, lam * sc)
        Lff = add(Lff, -lam * (lam - zc) * sc * sc)
        Ls = add(Ls, lam * zc)
        Lss = add(Lss, -lam * zc * q)
        Lfs = add(Lfs, -lam * q * sc)
    return Lf, Lff, Ls, Lss, Lfs


def _total_over_points(*arrays):
    """Sum over the batch points of the product, (K, T), with no temporaries."""
    return np.einsum(",".join(["kgt"] * len(arrays)) + "->kt", *np.broadcast_arrays(*arrays))


def _chain(pk: Packed, lay: Layout, L, al, d, t, e):
    """Gradient (K, P) and Hessian (K, P, P) in the packed parameters from the per-cell derivatives."""
    Lf, Lff, Ls, Lss, Lfs = L
    K, _, T = Lf.shape
    h = np.where(t >= 0, 1.0, e) / (1.0 + e)
    h1 = h * (1.0 - h)
    jb, ja = al * h, d * h  # df/db, df/dalpha
    top = _total_over_points
    g = np.empty((K, T, 4))
    g[..., 0] = Lf.sum(1)
    g[..., 1] = top(Lf, jb)
    g[..., 2] = top(Lf, ja)
    g[..., 3] = Ls.sum(1)
    H = np.empty((K, T, 4, 4))
    al2 = al[:, 0, :]
    H[..., 0, 0] = Lff.sum(1)
    H[..., 0, 1] = H[..., 1, 0] = top(Lff, jb)
    H[..., 0, 2] = H[..., 2, 0] = top(Lff, ja)
    H[..., 1, 1] = top(Lff, jb, jb) + al2 * al2 * top(Lf, h1)
    H[..., 1, 2] = H[..., 2, 1] = top(Lff, jb, ja) + top(Lf, h) + al2 * top(Lf, d, h1)
    H[..., 2, 2] = top(Lff, ja, ja) + top(Lf, d, d, h1)
    H[..., 0, 3] = H[..., 3, 0] = Lfs.sum(1)
    H[..., 1, 3] = H[..., 3, 1] = top(Lfs, jb)
    H[..., 2, 3] = H[..., 3, 2] = top(Lfs, ja)
    H[..., 3, 3] = Lss.sum(1)
    At = np.swapaxes(lay.A, 1, 2)  # (T, P, 4)
    Gr = g.reshape(K, T * 4) @ lay.A.reshape(T * 4, lay.P)
    Hf = np.matmul(At, np.matmul(H, lay.A)).sum(axis=1)
    if lay.m:
        U = pk.gU  # (G, m)
        Gr[:, lay.gamma] = np.einsum("kgt,gm->km", Lf, U)
        Hf[:, lay.gamma, lay.gamma] = np.einsum("kgt,gm,gn->kmn", Lff, U, U)
        cross = np.stack([np.einsum("kgt,gm->ktm", v, U) for v in (Lff, Lff * jb, Lff * ja, Lfs)], axis=2)
        X = np.matmul(At[None], cross).sum(axis=1)  # (K, P, m)
        Hf[:, :, lay.gamma] += X
        Hf[:, lay.gamma, :] += np.swapaxes(X, 1, 2)
    return Gr, Hf


def _bounds(cells: Cells, lay: Layout) -> tuple[np.ndarray, np.ndarray]:
    lo = np.full(lay.P, -np.inf)
    hi = np.full(lay.P, np.inf)
    y = cells.Y[cells.W > 0]
    if y.size:
        lo[:lay.T], hi[:lay.T] = float(y.min()) - 30.0, float(y.max()) + math.log(10.0)
    lo[lay.beta0], hi[lay.beta0] = cells.b_bounds
    lo[lay.beta1], hi[lay.beta1] = -BETA1_MAX, BETA1_MAX
    lo[lay.alpha0], hi[lay.alpha0] = ALPHA_RANGE
    lo[lay.alpha1], hi[lay.alpha1] = -3.0, 3.0
    lo[lay.gamma], hi[lay.gamma] = -10.0, 10.0
    lo[lay.s0], hi[lay.s0] = math.log(SIGMA_FLOOR), 3.0
    lo[lay.s1], hi[lay.s1] = -5.0, 5.0
    lo[lay.beta2], hi[lay.beta2] = -40.0, 40.0
    return lo, hi


def _project(theta: np.ndarray, lay: Layout, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Clip to the box, then keep every target's alpha_j and b_j inside their ranges by clipping
    the trend terms (alpha1, beta1) to what the intercepts allow."""
    th = np.clip(theta, lo, hi)
    z = lay.z
    for i0, i1, (r_lo, r_hi) in ((lay.alpha0, lay.alpha1, ALPHA_RANGE),
                                 (lay.beta0, lay.beta1, (lo[lay.beta0], hi[lay.beta0]))):
        c = th[:, i0:i0 + 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            up = np.where(z > 0, (r_hi - c) / z, np.where(z < 0, (r_lo - c) / z, np.inf))
            dn = np.where(z > 0, (r_lo - c) / z, np.where(z < 0, (r_hi - c) / z, -np.inf))
        th[:, i1] = np.clip(th[:, i1], dn.max(axis=1), up.min(axis=1))
    return th


def newton(cells: Cells, lay: Layout, theta: np.ndarray, free: np.ndarray, n_iter: int = 40,
           tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Damped Newton ascent of the Tobit likelihood for K tables from `theta` (K, P); parameters
    outside `free` (P,) stay as given. Returns (theta, log-likelihood (K,))."""
    lo, hi = _bounds(cells, lay)
    theta = _project(np.array(theta, dtype=float), lay, lo, hi)
    pk = Packed.of(cells)
    fixed = ~np.asarray(free, dtype=bool)
    K, P = theta.shape
    mu = np.full(K, 1e-3)
    ll, G, H = _terms(pk, lay, theta)
    active = np.isfinite(ll)
    eye = np.eye(P)[None]
    for _ in range(n_iter):
        if not active.any():
            break
        idx = np.flatnonzero(active)
        Ga, Ha = G[idx].copy(), H[idx].copy()
        Ga[:, fixed] = 0.0
        Ha[:, fixed, :] = 0.0
        Ha[:, :, fixed] = 0.0
        Ha[:, fixed, fixed] = -1.0
        scale = np.maximum(np.abs(np.diagonal(Ha, axis1=1, axis2=2)), 1e-12)
        A = -Ha + mu[idx, None, None] * eye * scale[:, :, None]
        try:
            step = np.linalg.solve(A, Ga[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            step = Ga / scale
        step = np.where(np.isfinite(step), step, 0.0)
        step[:, fixed] = 0.0
        new = _project(theta[idx] + step, lay, lo, hi)
        ll_n, G_n, H_n = _terms(pk.take(idx), lay, new)
        better = np.isfinite(ll_n) & (ll_n >= ll[idx] - 1e-12 * np.abs(ll[idx]))
        kept = idx[better]
        theta[kept], ll[kept], G[kept], H[kept] = new[better], ll_n[better], G_n[better], H_n[better]
        mu[idx] = np.where(better, np.maximum(mu[idx] * 0.1, 1e-12), mu[idx] * 10.0)
        done = better & (np.abs(step).max(axis=1) < tol)
        active[idx[done | (mu[idx] >= 1e10)]] = False
    return theta, ll


def loglik(cells: Cells, lay: Layout, theta: np.ndarray) -> np.ndarray:
    return _terms(Packed.of(cells), lay, theta, derivatives=False)[0]


def cell_loglik(cells: Cells, lay: Layout, theta: np.ndarray, extra_var=None) -> np.ndarray:
    """(K, R, T) weighted log-likelihood of every cell (0 where the weight is 0); extra_var (K, R, T)
    adds the prediction's own variance to sigma^2 (a predictive density rather than a plug-in)."""
    from scipy import special

    f, sig = predict(cells, lay, theta)
    s = sig if extra_var is None else np.sqrt(sig * sig + extra_var)
    zz = (cells.Y - f) / s
    ll = np.where(cells.C, special.log_ndtr(-zz), _norm_logpdf(zz) - np.log(s))
    return np.where(cells.W > 0, cells.W * ll, 0.0)


def covariance(cells: Cells, lay: Layout, theta: np.ndarray, free: np.ndarray) -> np.ndarray:
    """(K, P, P): the inverse of the observed information of the free parameters at theta (zero
    for the fixed ones); a pseudo-inverse where the information is singular."""
    _, _, H = _terms(Packed.of(cells), lay, theta)
    idx = np.flatnonzero(free)
    info = -H[:, idx][:, :, idx]
    cov = np.zeros_like(H)
    inv = np.linalg.pinv(info, hermitian=True)
    cov[:, idx[:, None], idx[None, :]] = inv
    return cov


def prediction_variance(cells: Cells, lay: Layout, theta: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """(K, R, T): the delta-method variance of the fitted log S of every cell, J cov J^T."""
    loc = lay.local(theta)
    K, R, T = theta.shape[0], len(cells.x), lay.T
    out = np.empty((K, R, T))
    for j in range(T):
        b, al = loc[:, j, 1], loc[:, j, 2]
        d = b[:, None] - cells.x[None, :]
        h = 1.0 / (1.0 + np.exp(-al[:, None] * d))
        Jl = np.stack([np.ones_like(d), al[:, None] * h, d * h, np.zeros_like(d)], axis=2)  # (K, R, 4)
        J = Jl @ lay.A[j]  # (K, R, P)
        if lay.m:
            J[:, :, lay.gamma] = cells.U[None]
        out[:, :, j] = np.einsum("krp,kpq,krq->kr", J, cov, J)
    return np.maximum(out, 0.0)


def predict(cells: Cells, lay: Layout, theta: np.ndarray, x=None, U=None):
    """(log S (K, n, T), sigma (K, 1, T)) at log batches x (default: the cells' runs)."""
    x = cells.x if x is None else np.asarray(x, dtype=float)
    loc = lay.local(theta)
    a, b, al, ls = (loc[:, None, :, i] for i in range(4))
    f = a + np.logaddexp(0.0, al * (b - x[None, :, None]))
    if lay.m:
        U = cells.U if U is None else U
        f = f + (theta[:, lay.gamma] @ np.asarray(U, dtype=float).T)[:, :, None]
    return f, np.exp(ls)


def start(cells: Cells, lay: Layout, n_grid: int = 97) -> np.ndarray:
    """Starting values for K tables: per target, the best McCandlish b_j on a grid by weighted
    least squares over the runs that reached it (a_j in closed form); beta0, beta1 by weighted
    regression of b_j on z_j; alpha = 1; one sigma from the pooled residuals."""
    K, R, T = cells.Y.shape
    bg = np.linspace(*cells.b_bounds, n_grid)
    Gm = np.logaddexp(0.0, bg[:, None] - cells.x[None, :])  # (n_grid, R)
    theta = np.zeros((K, lay.P))
    bj = np.zeros((K, T))
    wj = np.zeros((K, T))
    rss_all = np.zeros(K)
    n_all = np.zeros(K)
    for j in range(T):
        w = np.where(cells.C[:, :, j], 0.0, cells.W[:, :, j])
        y = np.where(w > 0, cells.Y[:, :, j], 0.0)
        sw = w.sum(1)
        safe = np.where(sw > 0, sw, 1.0)
        ybar = (w * y).sum(1) / safe
        gbar = (w @ Gm.T) / safe[:, None]
        a = ybar[:, None] - gbar  # (K, n_grid)
        rss = ((w * y * y).sum(1) - sw * ybar ** 2)[:, None] - 2 * ((w * y) @ Gm.T - sw[:, None] * ybar[:, None]
                                                                    * gbar) + ((w @ (Gm * Gm).T) - sw[:, None] * gbar ** 2)
        best = np.argmin(np.where(np.isfinite(rss), rss, np.inf), axis=1)
        k = np.arange(K)
        theta[:, j] = a[k, best]
        bj[:, j] = bg[best]
        wj[:, j] = (w > 0).sum(1)
        rss_all += np.maximum(rss[k, best], 0.0)
        n_all += sw
    z = lay.z
    sw = np.maximum(wj.sum(1), 1e-12)
    zbar = (wj * z).sum(1) / sw
    bbar = (wj * bj).sum(1) / sw
    szz = (wj * (z - zbar[:, None]) ** 2).sum(1)
    slope = np.where(szz > 1e-12, (wj * (z - zbar[:, None]) * (bj - bbar[:, None])).sum(1) / np.maximum(szz, 1e-12), 0.0)
    theta[:, lay.beta0] = bbar - slope * zbar
    theta[:, lay.beta1] = slope
    theta[:, lay.alpha0] = 1.0
    theta[:, lay.s0] = 0.5 * np.log(np.maximum(rss_all / np.maximum(n_all, 1e-12), 1e-4))
    return theta
