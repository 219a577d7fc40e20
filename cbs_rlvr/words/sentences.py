"""What the fit says, in words: the shape of S(B) at a target, the trend of B_noise over the
targets, the learning-rate context. Every sentence is built from the same numbers as the table it
sits beside (a cbs_fit row, PhaseFit.trend()), so the words cannot say what the table does not.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .numbers import SHORT_HOURS, count, duration, interval, number, percent, scientific, small
from .numbers import as_float as _f

#: the data weigh a form at least this much before the words say it holds
FIRM = 0.8


def _get(row, key, default=np.nan):
    if isinstance(row, dict):
        return row.get(key, default)
    return getattr(row, key, default)


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


def figure_alt(title: str, panels, notes=()) -> str:
    """A figure's alt text, naming what it shows: 'Figure: Phase 1. Left panel: steps to target
    (log scale) against batch size B (log scale). Right panel: ...'. panels: (title, x label, y
    label, x on a log scale, y on a log scale) per panel; notes: sentences the figure adds (what
    its forecasts are)."""
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
    return " ".join(parts + [str(n) for n in notes if str(n or "").strip()])


def sweep_facts(configs: pd.DataFrame, updates_per_step, dynamic: bool, from_config: int = 0,
                mismatch: int = 0) -> list[str]:
    """01's facts about a phase's sweep, one line each: batch sizes with several configurations
    (configs: data.select.configuration_counts), optimizer updates per rollout step (one value per
    run, missing where unknown), dynamic sampling, and batch sizes taken from the config."""
    swept = configs[configs["n_configs"] > 1] if len(configs) else configs
    upd = pd.to_numeric(pd.Series(list(updates_per_step), dtype=object), errors="coerce")
    known = upd.dropna().astype(int)
    lines = [f"{len(swept)} of {len(configs)} batch sizes have several configurations"
             + (f" (B = {', '.join(count(b) for b in swept['total_batch'])})." if len(swept) else ".")]
    lines.append("Optimizer updates per rollout step: "
                 + (f"{known.min()} to {known.max()}" if known.nunique() > 1 else
                    f"{known.iloc[0]} for every run" if len(known) else "unknown (the configs give no mini-batch size)")
                 + (f"; unknown for {int(upd.isna().sum())} run(s)." if 0 < len(known) < len(upd) else "."))
    lines.append("Dynamic sampling (train/num_gen_batches) is logged: samples generated and trained differ."
                 if dynamic else "No dynamic sampling logged: every generated sample is trained on.")
    if from_config:
        lines.append(f"{from_config} run(s) have no batch sizes in their name: taken from the config.")
    if mismatch:
        lines.append(f"{mismatch} run(s) have a name whose batch sizes disagree with the config: the config wins.")
    return lines


def updates_lines(updates, cbs_fit: pd.DataFrame, cbs_fit_updates: pd.DataFrame | None = None) -> list[str]:
    """02's lines on optimizer updates per rollout step (one value per run): where they vary, B_noise
    at each target in both units (the fits in rollout steps and in updates); else what S in updates
    is, or that the configs do not say."""
    known = pd.to_numeric(pd.Series(list(updates), dtype=object), errors="coerce").dropna().astype(int)
    if known.nunique() > 1 and cbs_fit_updates is not None:
        lines = [f"Updates per rollout step vary within this phase ({known.min()} to {known.max()}), so S is "
                 "fitted in both units:"]
        for s_row, u_row in zip(cbs_fit.itertuples(), cbs_fit_updates.itertuples(), strict=True):
            lines.append(f"  acc ≥ {s_row.threshold:g}: B_noise = "
                         f"{interval(s_row.B_noise, s_row.B_noise_lo, s_row.B_noise_hi, decimals=0)} samples per "
                         f"rollout step ({s_row.status}); "
                         f"{interval(u_row.B_noise, u_row.B_noise_lo, u_row.B_noise_hi, decimals=0)} samples per "
                         f"optimizer update ({u_row.status}), S_min = {number(u_row.S_min)} updates")
        return lines
    if len(known) and known.iloc[0] == 1:
        return ["Every run makes one optimizer update per rollout step (one mini-batch of the whole step's prompts, "
                "one epoch): S in optimizer updates equals S in rollout steps."]
    if len(known):
        u = known.iloc[0]
        return [f"Every run makes {u} optimizer updates per rollout step: S in updates is {u} × S, and B_noise "
                f"per update is B_noise / {u}."]
    return ["The run configs give no mini-batch size: updates per step unknown, S is in rollout steps only."]


def generated_samples_line(generated: pd.DataFrame) -> str:
    """02's line on dynamic sampling (generated_samples_table): how many times the samples trained on
    the runs generated, the range over batch sizes (median over targets), or why there is none."""
    if not len(generated):
        return "No run logs train/num_gen_batches: every generated sample is trained on, E(B) = B·S(B)."
    env = generated[generated["in_envelope"].astype(bool) & ~generated["censored"].astype(bool)]
    ratio = env.groupby("total_batch")["generated_per_trained"].median().dropna()
    n = generated["run_id"].nunique()
    if not len(ratio):
        return (f"{n} run(s) log dynamic sampling, but none of them reached a target: no ratio of generated to "
                "trained samples to report yet.")
    return (f"{n} run(s) log dynamic sampling. Up to each target they generated {ratio.min():.2f} (B = "
            f"{count(ratio.idxmin())}) to {ratio.max():.2f} (B = {count(ratio.idxmax())}) times the samples they "
            "trained on (median over targets at each batch size).")


def fit_answer_lines(cbs_fit: pd.DataFrame, n_swept: int = 0) -> list[str]:
    """02's answer, one line per target from its cbs_fit row: B_noise with its interval, the form,
    S_min, the 20%-overhead batch, R² and the runs it rests on; a target without a fit says why."""
    lines = ["S in rollout steps; B_noise in samples per rollout step (B = n_prompts × n_rollouts); "
             + (f"{n_swept} batch size(s) with several configurations, the best one used at each." if n_swept
                else "one configuration (learning rate) per batch size.")]
    for row in cbs_fit.itertuples():
        if row.status in ("insufficient", "failed"):
            lines.append(f"acc ≥ {row.threshold:g}: no B_noise, {row.status}: {row.reason}")
            continue
        ci = interval(row.B_noise, row.B_noise_lo, row.B_noise_hi, decimals=0)
        overhead = (f"batch at 20% extra samples = {count(row.B_crit_20pct)}" if np.isfinite(_f(row.B_crit_20pct))
                    else "no samples minimum (no batch at 20% extra samples)")
        form = "1/B form (McCandlish)" if row.model == "mccandlish" else f"S ∝ B^-{row.alpha:.2f} at small B (general form)"
        lines.append(f"acc ≥ {row.threshold:g}: B_noise = {ci} samples/step, {form}, S_min = {number(row.S_min)} "
                     f"steps, {overhead}, R²(log) = {_f(row.r2_log):.3f}, {count(row.n_points)} runs "
                     f"({count(row.n_censored)} stopped before the target), status {row.status}")
    return lines


def curves_answer(final: pd.DataFrame, thresholds) -> str:
    """03's answer from each run's last evaluation (columns accuracy, total_batch, n_prompts,
    n_rollouts, step, winner): the range of final accuracy, the best run, and how many runs (of the
    best rate at each batch size, under a sweep) end above the highest target."""
    best = final.loc[final["accuracy"].idxmax()]
    top = max(thresholds)
    won = final[final["winner"].astype(bool)]
    reached = won[won["accuracy"] >= top]
    sweep = len(won) < len(final)
    return (f"Final validation accuracy ranges from {final['accuracy'].min():.3f} to {final['accuracy'].max():.3f} "
            f"(best: B = {count(best['total_batch'])}, {count(best['n_prompts'])}×{count(best['n_rollouts'])}, at step "
            f"{count(best['step'])}); {len(reached)} of {len(won)} runs"
            + (" of the best rate at each batch size" if sweep else "") + f" end above the highest target {top:g}.")


def overhead_lines(per_run: pd.DataFrame, logged: dict, at_mid: pd.DataFrame, mid: float,
                   any_overhead: bool, resumed: pd.DataFrame | None = None) -> list[str]:
    """06's lines on validation and checkpoint time: which are logged (`logged`: what -> bool),
    what each run's logged step time contains (wall_clock_table's overhead_in_step_time), how much
    they add at the middle target, and the time resumed runs lost."""
    lines = [f"{what} time: {'logged' if ok else 'not logged'}" for what, ok in logged.items()]
    for how, n in per_run.loc[per_run["time_key"].notna(), "overhead_in_step_time"].value_counts().items():
        if how == "not logged":
            lines.append(f"{n} run(s) log no validation or checkpoint time: their step time is taken as it is.")
        elif how == "none":
            lines.append(f"{n} run(s): the logged step time contains neither (as verl >= 0.6 times it).")
        else:
            lines.append(f"{n} run(s): the logged step time contains {how.replace('+', ' and ')} (subtracted from "
                         "the training time; verl <= 0.5 timed both inside the step, the DAPO recipe the checkpoint).")
    if per_run["time_key"].isna().any():
        lines.append(f"{int(per_run['time_key'].isna().sum())} run(s) log no step time at all.")
    extra = (at_mid["time_to_target_with_overhead_h"] / at_mid["time_to_target_h"] - 1).dropna()
    if any_overhead and len(extra):
        lines.append(f"At acc ≥ {mid:g}, validation and checkpoints add {percent(extra.min())} to "
                     f"{percent(extra.max())} to the training time of the runs.")
    if resumed is not None and len(resumed):
        lines.append(f"{len(resumed)} run(s) were resumed after a crash and lost "
                     f"{duration(resumed['resume_lost_time_s'].sum() / 3600)} of steps trained again after their "
                     "checkpoint; that time is not counted above.")
    return lines


def _hours(x) -> str:
    """06's times to target: hours to two decimals (runs close in time stay apart), a short time
    in its own unit ('4.2 min', never '0.07 h')."""
    return duration(x) if abs(_f(x)) < SHORT_HOURS else f"{number(x, decimals=2)} h"


def fastest_run_lines(fastest: pd.DataFrame, with_overhead: pd.DataFrame, any_overhead: bool) -> list[str]:
    """06's answer, one line per target (wallclock.fastest_batch): the fastest run made, its hours,
    GPU-hours and steps, whether it is certain, and which batch is fastest counting validation and
    checkpoints (`with_overhead`: fastest_batch by that column, indexed by threshold)."""
    lines = []
    for row in fastest.itertuples():
        if row.n_configs == 0:
            lines.append(f"acc ≥ {row.threshold:g}: no run reached it")
            continue
        caveat = " (a run stopped before the target at less time, so this is not certain)" if row.undetermined else ""
        gpu = f", {number(row.gpu_hours)} GPU-hours" if np.isfinite(_f(row.gpu_hours)) else ""
        tail = "."
        if any_overhead and row.threshold in with_overhead.index:
            alt = with_overhead.loc[row.threshold]
            same = (alt["n_prompts"], alt["n_rollouts"]) == (row.n_prompts, row.n_rollouts)
            tail = ("; counting validation and checkpoints, " + ("the same batch size" if same else
                    f"B = {count(alt['total_batch'])} instead") + f" takes {_hours(alt['value'])}.")
        lines.append(f"acc ≥ {row.threshold:g}: fastest run made is B = {count(row.total_batch)} "
                     f"({count(row.n_prompts)}×{count(row.n_rollouts)}): {_hours(row.time_to_target_h)} of "
                     f"training{gpu}, {count(row.S_B)} steps{caveat}{tail}")
    return lines
