"""What the fit says, in words: the shape of S(B) at a target, the trend of B_noise over the
targets, the learning-rate context. Every sentence is built from the same numbers as the table it
sits beside (a cbs_fit row, PhaseFit.trend()), so the words cannot say what the table does not.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .numbers import count, interval, number, percent, scientific, small

#: the data weigh a form at least this much before the words say it holds
FIRM = 0.8


def _get(row, key, default=np.nan):
    if isinstance(row, dict):
        return row.get(key, default)
    return getattr(row, key, default)


def _f(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def shape_sentence(row) -> str:
    """The shape of S(B) at one target (a cbs_fit row): the exponent alpha with its interval, how
    much the data weigh the bent form against McCandlish's 1/B, and how far the two B_noise are
    apart where it matters."""
    alpha, lo, hi = (_f(_get(row, k)) for k in ("alpha", "alpha_lo", "alpha_hi"))
    model = _get(row, "model", "") or ""
    w_gen = _f(_get(row, "weight_general", np.nan))
    bn, bm = _f(_get(row, "B_noise")), _f(_get(row, "B_noise_mccandlish"))
    if not model:
        return ""
    ci = f" (95% interval {lo:.2f}-{hi:.2f})" if np.isfinite(lo) and np.isfinite(hi) else ""
    weight = (f"; held-out batch sizes weigh the bent form {percent(w_gen)} against the 1/B form"
              if np.isfinite(w_gen) else "")
    if not np.isfinite(alpha):
        if np.isfinite(w_gen) and round(100 * w_gen) == 0:  # the bent form lost outright: never drawn
            return ("S(B) follows the 1/B form (McCandlish): held-out batch sizes give the bent form no weight "
                    "(0%), so it gets no bootstrap and no alpha is reported.")
        return f"S(B) is fitted with the 1/B form (McCandlish): too few batch sizes to fit a bend{weight}."
    # whether the interval holds 1 is read from the interval as the table beside prints it (two
    # decimals): a table showing [0.81, 1.00] and words saying '1 is excluded' would contradict
    holds_one = np.isfinite(lo) and round(lo, 2) <= 1.0 <= round(hi, 2)
    if model == "general":
        faster = "more slowly than 1/B" if alpha < 1 else "faster than 1/B"
        text = f"S falls like B^-{alpha:.2f}{ci} at small B, {faster}{weight}"
        if holds_one:
            text += "; the interval still holds 1, so the 1/B form is not ruled out"
        ratio = bn / bm if np.isfinite(bm) and bm > 0 else np.nan
        if np.isfinite(ratio) and (ratio > 1.25 or ratio < 0.8):
            factor = ratio if ratio > 1 else 1.0 / ratio
            side = "smaller" if ratio > 1 else "larger"
            text += (f"; B_noise from the 1/B form would be {factor:.1f}x {side} ({number(bm)} instead of "
                     f"{number(bn)} samples)")
        return text + "."
    if holds_one or not np.isfinite(lo):
        return f"S(B) follows the 1/B form (McCandlish): alpha = {alpha:.2f}{ci} is consistent with 1{weight}."
    return (f"The 1/B form (McCandlish) predicts held-out batch sizes best, though the bent form's alpha = "
            f"{alpha:.2f}{ci} excludes 1{weight}; B_noise's interval mixes both forms.")


def trend_sentence(trend: dict, quantity: str = "B_noise") -> str:
    """How B_noise changes from the lowest fitted target to the highest (PhaseFit.trend()): a
    rise or a fall only where its 95% interval excludes no change."""
    r, lo, hi = (_f(trend.get(k)) for k in ("ratio", "ratio_lo", "ratio_hi"))
    a, b = _f(trend.get("from")), _f(trend.get("to"))
    if not np.isfinite(r):
        return f"Too few targets with a fit to tell how {quantity} changes with the target."
    band = f" (95% interval {lo:.2f}-{hi:.2f}x)" if np.isfinite(lo) and np.isfinite(hi) else ""
    if np.isfinite(lo) and lo > 1.0:
        return f"{quantity} rises {r:.2f}x from accuracy {a:g} to {b:g}{band}: harder targets tolerate larger batches."
    if np.isfinite(hi) and hi < 1.0:
        return f"{quantity} falls to {r:.2f}x from accuracy {a:g} to {b:g}{band}."
    if not band:
        return f"{quantity} changes {r:.2f}x from accuracy {a:g} to {b:g} (no interval to tell it from noise)."
    return (f"No clear trend: {quantity} changes {r:.2f}x from accuracy {a:g} to {b:g}{band}, an interval that "
            "holds no change.")


def trend_title(trend: dict, quantity: str = "B_noise") -> str:
    """A figure title for the trend: 'B_noise rises 1.7x from accuracy 0.3 to 0.7' where its interval
    excludes no change, else 'no clear trend of B_noise with the target'."""
    kind = trend_kind(trend)
    r, a, b = _f(trend.get("ratio")), _f(trend.get("from")), _f(trend.get("to"))
    if kind == "rises":
        return f"{quantity} rises {r:.2g}x from accuracy {a:g} to {b:g}"
    if kind == "falls":
        return f"{quantity} falls to {r:.2g}x from accuracy {a:g} to {b:g}"
    if kind == "flat":
        return f"no clear trend of {quantity} with the target"
    return f"{quantity} against the target accuracy"


def trend_kind(trend: dict) -> str:
    """'rises', 'falls', 'flat' (the interval holds 1) or 'undetermined'."""
    lo, hi = _f(trend.get("ratio_lo")), _f(trend.get("ratio_hi"))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "undetermined"
    return "rises" if lo > 1 else "falls" if hi < 1 else "flat"


def b_noise_line(row) -> str:
    """'B_noise = 1,759 [1,456, 2,321] samples' with its status where it is not plain 'ok'."""
    status = _get(row, "status", "")
    text = f"B_noise = {interval(_get(row, 'B_noise'), _get(row, 'B_noise_lo'), _get(row, 'B_noise_hi'), 'samples')}"
    hi, top = _f(_get(row, "B_noise_hi")), _f(_get(row, "B_reached_max"))
    if np.isfinite(top) and (not np.isfinite(hi) or hi > 100 * top):
        text = (f"B_noise = {number(_get(row, 'B_noise'))} samples, at least {number(_get(row, 'B_noise_lo'))}; "
                "no upper bound from these runs")
    if status == "extrapolated":
        text += " (extrapolated: it rests on the fitted form beyond the batch sizes that reached the target)"
    return text


def learning_rate_context(policy: dict | None, cbs_fit: pd.DataFrame, tuned: bool = False) -> str:
    """The learning-rate schedule across batch sizes and what it means for the shape, in words.
    policy: envelope.lr_policy's dict ({'policy': 'constant' | 'sqrt(B)' | 'linear' | 'mixed' |
    'undetermined'}); tuned: several rates were tried at a batch size and the best is used."""
    kind = (policy or {}).get("policy", "") if isinstance(policy, dict) else ""
    if tuned:
        kind = "tuned"
    alphas = pd.to_numeric(cbs_fit.get("alpha", pd.Series(dtype=float)), errors="coerce").dropna() if len(cbs_fit) \
        else pd.Series(dtype=float)
    med = float(alphas.median()) if len(alphas) else np.nan
    parts = []
    if kind == "constant":
        parts.append("The learning rate is the same at every batch size.")
        if np.isfinite(med):
            parts.append(f"At a fixed rate the measured exponent (median alpha {med:.2f}) describes this schedule, "
                         "not the optimum: McCandlish's 1/B law assumes the rate tuned at each B, and a tuned sweep "
                         "may give a different B_noise.")
    elif kind in ("sqrt(B)", "linear"):
        rule = "the square root of B" if kind == "sqrt(B)" else "B"
        parts.append(f"The learning rate grows with {rule}.")
        if np.isfinite(med):
            parts.append(f"The measured exponent (median alpha {med:.2f}) belongs to that scaling rule; another rule "
                         "may shift B_noise.")
    elif kind == "tuned":
        parts.append("Several learning rates were tried and the best one at each batch size is used (the "
                     "envelope), as McCandlish's law assumes; batch sizes that tried one rate are tuned only as far "
                     "as that rate is good.")
    elif kind == "mixed":
        parts.append("The learning rate changes with the batch size without one rule, so the exponent mixes the "
                     "batch's effect with the rate's.")
    return " ".join(parts)


def lr_label(policy: dict | None, tuned: bool = False) -> str:
    """A short name of the learning-rate context for the answer box: 'fixed learning rate',
    'learning rate ∝ sqrt(B)', 'learning rate tuned per batch', ..."""
    kind = "tuned" if tuned else ((policy or {}).get("policy", "") if isinstance(policy, dict) else "")
    rate = _f((policy or {}).get("lr")) if isinstance(policy, dict) else math.nan
    if kind == "constant" and math.isfinite(rate):
        return f"fixed: one learning rate, {scientific(rate, 3)}, at every batch size (not tuned per batch size)"
    return {"constant": "fixed: one learning rate at every batch size (not tuned per batch size)", "sqrt(B)": "learning rate scaled with sqrt(B)",
            "linear": "learning rate scaled with B", "tuned": "learning rate tuned at each batch size",
            "mixed": "learning rates that change with B without one rule"}.get(kind, "learning rate not logged")


_STEP_UNITS = {"a": "s", "b_B": "s per sample", "b_p": "s per prompt"}


def step_model_sentence(model: dict) -> str:
    """The step-time model in one sentence, every coefficient as a reader writes it (never
    '± 8.9e-05'): 'T_step = a + b_B·B: a = 15 ± 0.13 s, b_B = 0.045 ± 8.9×10⁻⁵ s per sample; R² =
    1.000, residual sd 0.34 s (0.6% of the mean step), 11 runs, B = 64 to 4,096.'"""
    if model.get("status") != "ok":
        return f"No step-time model ({model.get('reason') or 'no run logs a step time'})."
    terms = ", ".join(f"{k} = {small(model['coef'][k], digits=3)} ± {small(model['se'][k])} {_STEP_UNITS[k]}"
                      for k in model["terms"])
    sd = ""
    if math.isfinite(_f(model.get("resid_sd_s"))):
        sd = f", residual sd {number(model['resid_sd_s'])} s ({percent(model['rel_resid_sd'], 1)} of the mean step)"
    lo, hi = model["B_range"]
    note = f" Note: {model['reason']}." if model.get("reason") else ""
    return (f"{model['formula']}: {terms}; R² = {_f(model['r2']):.3f}{sd}, {count(model['n_runs'])} runs, "
            f"B = {count(lo)} to {count(hi)}.{note}")


def figure_alt(title: str, panels) -> str:
    """A figure's alt text, naming what it shows: 'Figure: Phase 1. Left panel: steps to target
    (log scale) against batch size B (log scale). Right panel: ...'. panels: (title, x label, y
    label, x on a log scale, y on a log scale) per panel."""
    def axis(label, log):
        label = " ".join(str(label or "").split()) or "an unlabelled axis"
        return f"{label} (log scale)" if log else label

    panels = [p for p in panels if (p[1] or p[2])]
    names = (["Left panel", "Right panel"] if len(panels) == 2 else
             [f"Panel {i + 1}" for i in range(len(panels))] if len(panels) > 2 else ["It shows"])
    parts = [f"Figure: {' '.join(str(title).split())}." if str(title or "").strip() else "Figure."]
    for name, (t, xl, yl, xlog, ylog) in zip(names, panels, strict=False):
        head = f"{name}{' (' + ' '.join(str(t).split()) + ')' if str(t or '').strip() else ''}"
        parts.append(f"{head}: {axis(yl, ylog)} against {axis(xl, xlog)}.")
    return " ".join(parts)
