"""The curves S(B) and E(B) = B S(B) of a fit, and what follows from them: the batch with the
fewest samples and the 20%-overhead batch (Zhang et al. 2024's critical batch size)."""

from __future__ import annotations

import math

import numpy as np


def mccandlish_steps(B, S_min: float, B_noise: float):
    """S(B) = S_min (1 + B_noise / B)."""
    return S_min * (1.0 + B_noise / np.asarray(B, dtype=float))


def mccandlish_samples(B, E_min: float, B_noise: float):
    """E(B) = E_min (1 + B / B_noise)."""
    return E_min * (1.0 + np.asarray(B, dtype=float) / B_noise)


def general_steps(B, S_min: float, B_noise: float, alpha: float = 1.0):
    """S(B) = S_min (1 + (B_noise / B)^alpha); alpha = 1 is McCandlish."""
    return S_min * (1.0 + (B_noise / np.asarray(B, dtype=float)) ** alpha)


def general_samples(B, S_min: float, B_noise: float, alpha: float = 1.0):
    """E(B) = B S(B)."""
    B = np.asarray(B, dtype=float)
    return B * general_steps(B, S_min, B_noise, alpha)


def samples_minimum(S_min: float, B_noise: float, alpha: float) -> tuple[float, float]:
    """(B*, E_min): the batch size with the fewest samples to target and that number.

    alpha = 1: E falls toward E_min = S_min B_noise as B -> 0 (B* = 0). alpha > 1: a minimum at
    B* = B_noise (alpha - 1)^(1/alpha), E_min = S_min B* alpha / (alpha - 1). alpha < 1: E keeps
    falling toward smaller B with no floor (E -> 0): no samples minimum, (NaN, NaN)."""
    if not all(np.isfinite(v) for v in (S_min, B_noise, alpha)):
        return np.nan, np.nan
    if abs(alpha - 1.0) < 1e-9:
        return 0.0, S_min * B_noise
    if alpha < 1.0:
        return np.nan, np.nan
    b_star = B_noise * (alpha - 1.0) ** (1.0 / alpha)
    return b_star, S_min * b_star * alpha / (alpha - 1.0)


def overhead_batch(S_min: float, B_noise: float, alpha: float, overhead: float = 0.2) -> float:
    """The batch size above the samples minimum at which E = (1 + overhead) E_min (Zhang et al.
    2024's critical batch size at 20%): 0.2 B_noise for alpha = 1; found numerically for alpha > 1;
    NaN for alpha < 1, where there is no samples minimum."""
    b_star, e_min = samples_minimum(S_min, B_noise, alpha)
    if not np.isfinite(e_min):
        return np.nan
    if abs(alpha - 1.0) < 1e-9:
        return overhead * B_noise
    from scipy import optimize

    target = (1.0 + overhead) * e_min

    def gap(log_b):
        return float(general_samples(math.exp(log_b), S_min, B_noise, alpha)) - target

    lo, hi = math.log(b_star), math.log(b_star) + 1.0
    while gap(hi) < 0 and hi < lo + 60:
        hi += 1.0
    return math.exp(optimize.brentq(gap, lo, hi, xtol=1e-10))
