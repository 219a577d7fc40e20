"""The claims a heading, a title or a sentence may make, computed from the results and never
assumed: how B_noise changes with the target (`trend_claim`), what the cross-axis fit says of rho,
the caveats of a learning-rate sweep, and whether the gradient noise scale predicts B_noise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _floats(values) -> np.ndarray:
    """1-D float array of any sequence; pandas nullable values (pd.NA) and text become NaN."""
    return pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(dtype=float)


#: What `trend_claim` can conclude.
TRENDS = ("grows", "falls", "flat", "not monotone", "unclear", "undetermined")


def _ordered_points(x, estimate, lo, hi):
    """The points with an x and an estimate, in order of x, and whether intervals were given."""
    x, e = _floats(x), _floats(estimate)
    ci_given = lo is not None and hi is not None
    lo = np.full(e.shape, np.nan) if lo is None else _floats(lo)
    hi = np.full(e.shape, np.nan) if hi is None else _floats(hi)
    keep = np.isfinite(x) & np.isfinite(e)
    order = np.argsort(x[keep], kind="stable")
    x, e, lo, hi = (v[keep][order] for v in (x, e, lo, hi))
    return x, e, lo, hi, ci_given


def _too_few_or_flat(x, e, quantity: str, along: str) -> dict:
    """trend_claim's answer when there is no direction to speak of ({} otherwise)."""
    if len(x) < 2:
        return {"claim": f"too few usable points to tell how {quantity} changes with {along}",
                "evidence": (f"{len(x)} usable point(s); two or more needed" if len(x) == 0 else
                             f"one usable point: {quantity} = {e[0]:.3g} at {x[0]:g}")}
    if (np.diff(e) == 0).all():
        return {"trend": "flat", "claim": f"{quantity} is the same at every point along {along}",
                "evidence": f"{quantity} = {e[0]:.3g} at all {len(x)} points from {x[0]:g} to {x[-1]:g}"}
    return {}


def trend_claim(x, estimate, lo=None, hi=None, quantity: str = "B_noise",
                along: str = "the target accuracy") -> dict:
    """What the data say about how `quantity` changes along `x`, as a claim with its evidence.

    For headings and titles that must not state more than the data show. Points with a
    missing x or estimate are left out; the rest are taken in order of x.
    - 'grows' / 'falls': the estimate never moves against that direction from one point to the
      next, or (with intervals) only within the uncertainty (the two points' 95% intervals
      overlap) while the ends differ beyond it. With intervals, `significant` is True when the
      intervals at the two ends do not overlap, else the claim says the change is within the
      uncertainty; without intervals the claim is about the values.
    - 'flat': the same value everywhere.
    - 'not monotone': it moves against the overall direction somewhere, beyond the uncertainty
      where intervals are given (the evidence names the first such step).
    - 'unclear': with intervals, it moves both ways, every move within the uncertainty.
    - 'undetermined': fewer than two usable points.
    Returns {trend, significant, claim (a sentence for a heading), evidence (numbers),
    n_points, first, last}.
    """
    x, e, lo, hi, ci_given = _ordered_points(x, estimate, lo, hi)
    out = {"trend": "undetermined", "significant": False, "n_points": int(len(x)),
           "first": float(e[0]) if len(e) else np.nan, "last": float(e[-1]) if len(e) else np.nan}
    early = _too_few_or_flat(x, e, quantity, along)
    if early:
        out.update(early)
        return out
    d = np.diff(e)

    def apart(i: int, j: int) -> bool:
        """The 95% intervals of points i and j do not overlap (False when unknown)."""
        if not np.isfinite([lo[i], hi[i], lo[j], hi[j]]).all():
            return False
        return bool(lo[j] > hi[i] or hi[j] < lo[i])

    up = e[-1] >= e[0]
    verb = "grows" if up else "falls"
    against = np.flatnonzero(d < 0 if up else d > 0)
    firm = [k for k in against if apart(k, k + 1)] if ci_given else list(against)
    ratio = e[-1] / e[0] if e[0] > 0 and e[-1] > 0 else np.nan
    span = f"from {e[0]:.3g} at {x[0]:g} to {e[-1]:.3g} at {x[-1]:g}" + (
        f" ({ratio:.2g}x)" if np.isfinite(ratio) else "")
    ends_apart = apart(0, len(e) - 1)
    ends = ("the 95% intervals at the two ends do not overlap" if ends_apart else
            "the 95% intervals at the two ends overlap"
            if np.isfinite([lo[0], hi[0], lo[-1], hi[-1]]).all() else "no intervals to tell it from noise")

    def step(k: int) -> str:
        return f"from {e[k]:.3g} at {x[k]:g} to {e[k + 1]:.3g} at {x[k + 1]:g}"

    if firm:
        out["trend"] = "not monotone"
        out["claim"] = f"{quantity} does not change monotonically with {along}"
        out["evidence"] = (f"{quantity} goes {span} but {'dips' if up else 'rises'} {step(firm[0])}"
                           + (", beyond the uncertainty" if ci_given else "")
                           + f"; it rises at {int((d > 0).sum())} and falls at "
                             f"{int((d < 0).sum())} of {len(d)} steps")
        return out
    if len(against) and not ends_apart:
        out["trend"] = "unclear"
        out["claim"] = f"no clear trend of {quantity} with {along}"
        out["evidence"] = (f"{quantity} goes {span}, rising at {int((d > 0).sum())} and falling at "
                           f"{int((d < 0).sum())} of {len(d)} steps, every change within the "
                           f"uncertainty; {ends}")
        return out
    out["trend"] = "grows" if up else "falls"
    out["significant"] = bool(ends_apart)
    if ends_apart or not ci_given:
        out["claim"] = f"{quantity} {verb} with {along}" + (" overall" if len(against) else "")
    else:
        out["claim"] = f"{quantity} {verb} with {along}, within its uncertainty"
    how = ("between the two points" if len(x) == 2 else "at every step" if (d != 0).all() and not len(against)
           else f"never {'falling' if up else 'rising'} from one point to the next" if not len(against)
           else f"with {_count(len(against), 'dip' if up else 'rise')} within the uncertainty "
                f"({step(int(against[0]))}{', ...' if len(against) > 1 else ''})")
    out["evidence"] = f"{quantity} {verb} {span}, {how}" + (f"; {ends}" if ci_given else "")
    return out


def _count(n: int, noun: str) -> str:
    return f"{'one' if n == 1 else n} {noun}{'' if n == 1 else 's'}"


def b_noise_trend(cbs_fit: pd.DataFrame) -> dict:
    """`trend_claim` of B_noise against the target accuracy over the usable fits (status ok or
    extrapolated): the heading of a B_noise-vs-target section, computed."""
    t = cbs_fit.reindex(columns=["threshold", "B_noise", "B_noise_lo", "B_noise_hi", "status"])
    t = t[t["status"].isin(["ok", "extrapolated"])]
    return trend_claim(t["threshold"], t["B_noise"], t["B_noise_lo"], t["B_noise_hi"])


RHO_PINNED_WIDTH = 0.5  # a rho interval this wide or wider (of the range 0..1) claims nothing


def rho_claim(two_axis_fit: pd.DataFrame) -> list[str]:
    """What the cross-axis fit says of rho (one rho for every target), in sentences, with what a
    second rollout is worth against a new prompt ((1 - rho) / (1 + rho): two rollouts of one prompt
    are worth 2 / (1 + rho) independent prompts); nothing where the interval leaves rho open (wider
    than RHO_PINNED_WIDTH) or the fit is poor. Empty when no target has an `ok` fit."""
    t = two_axis_fit.reindex(columns=["rho", "rho_lo", "rho_hi", "r2_log", "status"])
    ok = t[(t["status"] == "ok") & ~(_floats(t["r2_log"]) < 0)]
    if not len(ok):
        return []
    rho, lo, hi = float(ok["rho"].iloc[0]), float(ok["rho_lo"].min()), float(ok["rho_hi"].max())
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi - lo >= RHO_PINNED_WIDTH:
        return [f"The fit leaves rho open (rho = {rho:.2f}, 95% interval {lo:.2f} to {hi:.2f}): how a rollout "
                "compares to a prompt is not pinned down; runs at more rollout counts would pin it."]
    def worth(r):
        return (1 - r) / (1 + r)
    return [f"rho = {rho:.2f} (95% interval {lo:.2f} to {hi:.2f}): the second rollout of a prompt is worth "
            f"{worth(rho):.2f} of a new prompt ({worth(hi):.2f} to {worth(lo):.2f} within the interval), and each "
            "further rollout less."]


def lr_sweep_claims(sb_eb: pd.DataFrame, winners: pd.DataFrame) -> list[str]:
    """Caveats of a learning-rate sweep, computed: batch sizes whose best rate is the highest
    or lowest tried there (the optimum may lie beyond the grid), and batch sizes that tried
    one rate only (nothing was tuned there). Empty when no batch size tried two rates."""
    runs = sb_eb.drop_duplicates("run_id")
    if "lr" not in runs or not len(winners):
        return []
    tried = runs.groupby("total_batch")["lr"].apply(lambda v: sorted(set(pd.to_numeric(v, errors="coerce").dropna())))
    if not (tried.map(len) > 1).any():
        return []
    lines, edge_hi, edge_lo = [], [], []
    for w in winners.itertuples():
        rates = tried.get(w.total_batch, [])
        if len(rates) > 1 and np.isfinite(w.lr_won):
            if np.isclose(w.lr_won, rates[-1]):
                edge_hi.append(w.total_batch)
            elif np.isclose(w.lr_won, rates[0]):
                edge_lo.append(w.total_batch)
    one = [int(b) for b, r in tried.items() if len(r) == 1]
    fmt = lambda bs: ", ".join(f"{int(b):,}" for b in sorted(bs))  # noqa: E731
    if edge_hi:
        lines.append(f"At B = {fmt(edge_hi)} the best rate is the highest tried there: a higher one might be "
                     "faster still, so S(B) there is an upper bound on the tuned S(B).")
    if edge_lo:
        lines.append(f"At B = {fmt(edge_lo)} the best rate is the lowest tried there: a lower one might be "
                     "faster still.")
    if one:
        lines.append(f"B = {fmt(one)} tried one rate only: nothing was tuned there.")
    return lines


def noise_scale_answer(comparison: pd.DataFrame) -> str:
    """05's question answered in words: does the post-hoc noise scale B_simple predict the
    fitted B_noise? From the targets where both have an interval: 'yes' where the intervals
    overlap at most targets and the median ratio is within 1.5x, else 'no: about Nx too low
    (high)', with the evidence. '' when no target has both."""
    cols = ["status", "B_simple", "B_simple_lo", "B_simple_hi", "B_noise", "B_noise_lo", "B_noise_hi"]
    if not set(cols) <= set(comparison.columns):
        return ""
    c = comparison[(comparison["status"] == "ok")]
    c = c[np.isfinite(_floats(c["B_noise_lo"])) & np.isfinite(_floats(c["B_simple_lo"]))
          & (_floats(c["B_noise"]) > 0) & (_floats(c["B_simple"]) > 0)]
    if not len(c):
        return ""
    overlap = int(((c["B_simple_lo"] <= c["B_noise_hi"]) & (c["B_noise_lo"] <= c["B_simple_hi"])).sum())
    r = float(np.median(_floats(c["B_simple"]) / _floats(c["B_noise"])))
    evidence = (f"median ratio B_simple / B_noise {r:.2g}; the 95% intervals overlap at {overlap} of "
                f"{len(c)} target(s)")
    if overlap * 2 >= len(c) and 1 / 1.5 <= r <= 1.5:
        return f"Does the noise scale predict B_noise? Yes, within its uncertainty ({evidence})."
    if r < 1:
        size = f"about {1 / r:.2g}x too low" if r <= 1 / 1.5 else f"about {100 * (1 - r):.0f}% too low"
    else:
        size = f"about {r:.2g}x too high" if r >= 1.5 else f"about {100 * (r - 1):.0f}% too high"
    return f"Does the noise scale predict B_noise? No: it is {size} ({evidence})."


def _growth(thr: np.ndarray, values: np.ndarray) -> tuple[float, float, float]:
    """(first target, last target, last / first) over the targets where values are positive."""
    ok = np.isfinite(values) & (values > 0)
    if ok.sum() < 2:
        return np.nan, np.nan, np.nan
    t, v = thr[ok], values[ok]
    order = np.argsort(t)
    t, v = t[order], v[order]
    return float(t[0]), float(t[-1]), float(v[-1] / v[0])


def noise_scale_verdict(comparison: pd.DataFrame, cbs_fit: pd.DataFrame | None = None) -> list[str]:
    """Does the gradient noise scale predict B_noise? Sentences on the level (tables'
    noise_scale_answer: 'No: it is about 10x too low', from the intervals), the trend across targets (how much each
    grows from the easiest to the hardest target both reach) and what B_simple can and cannot say
    when S(B) is not the 1/B form (from cbs_fit's model/alpha). comparison: compare_b_simple."""
    c = comparison.reindex(columns=["threshold", "B_simple", "B_noise", "status"])
    ok = c[(c["status"] == "ok") & np.isfinite(pd.to_numeric(c["B_simple"], errors="coerce"))
           & np.isfinite(pd.to_numeric(c["B_noise"], errors="coerce"))]
    if not len(ok):
        return ["No target has both a post-hoc B_simple and a fitted B_noise: the question cannot be "
                "answered from these runs."]
    level = noise_scale_answer(comparison)
    if not level:  # no target with both intervals: the level from the point estimates
        med = float((ok["B_simple"].astype(float) / ok["B_noise"].astype(float)).median())
        size = (f"about {1 / med:.2g}x too low" if med < 1 else f"about {med:.2g}x too high")
        level = ("Does the noise scale predict B_noise? " + ("Roughly" if 1 / 1.5 <= med <= 1.5 else
                 f"No: it is {size}") + f" (median ratio B_simple / B_noise {med:.2g}, no intervals).")
    lines = [level]
    thr = ok["threshold"].to_numpy(dtype=float)
    t0, t1, g_s = _growth(thr, ok["B_simple"].to_numpy(dtype=float))
    _, _, g_n = _growth(thr, ok["B_noise"].to_numpy(dtype=float))
    if np.isfinite(g_s) and np.isfinite(g_n):
        lines.append(_trend_words(t0, t1, g_s, g_n))
    med = float((ok["B_simple"].astype(float) / ok["B_noise"].astype(float)).median())
    off = not (1 / 1.5 <= med <= 1.5)
    fit = cbs_fit if cbs_fit is not None else pd.DataFrame()
    if "model" in fit.columns and (fit["model"] == "general").any():
        al = pd.to_numeric(fit.loc[fit["model"] == "general", "alpha"], errors="coerce").median()
        lines.append(f"S(B) here is not the 1/B form (alpha about {al:.2f}). B_simple = tr(Σ)/|G|² is "
                     "the critical batch of plain SGD with a tuned learning rate; under Adam at a fixed "
                     "rate it describes the gradient noise, not where extra batch stops paying, so a "
                     "match in level would be luck and its trend is the better check.")
    else:
        lines.append("What B_simple can tell: B_simple = tr(Σ)/|G|² is the critical batch of SGD with a tuned "
                     "learning rate; under Adam and GRPO's normalised advantages it can at best place B_noise's "
                     "order of magnitude and follow its trend" + (", and here it misses even the order of "
                                                                  "magnitude." if med < 0.1 or med > 10 else "."))
    if off:
        lines.append(CORRELATED_ROLLOUTS)
    return lines


#: Why B_simple can be off by a constant factor: the first suspect, named.
CORRELATED_ROLLOUTS = ("First suspect for a constant factor: correlated rollouts. The n rollouts of one prompt share "
                       "it (and GRPO's advantage is computed within the group), so B = prompts × rollouts samples "
                       "are not B independent draws and tr(Σ)/B counts noise that is not there; compare B_simple "
                       "with B_noise along the prompt axis, or count prompts rather than samples.")


def _trend_words(t0: float, t1: float, g_s: float, g_n: float) -> str:
    """How B_simple and B_noise change from the easiest to the hardest target: a pair that barely
    moves is no trend to follow (never 'changes 1.0x ... follows the trend')."""
    head = f"Trend: from accuracy {t0:g} to {t1:g} B_simple changes {g_s:.1f}x and B_noise {g_n:.1f}x"
    if 1 / 1.25 <= g_s <= 1.25 and 1 / 1.25 <= g_n <= 1.25:
        return head + ": neither moves by more than a quarter, so there is no trend to compare."
    same = 0.67 <= g_s / g_n <= 1.5
    return head + (": the noise scale follows the trend." if same else ": the noise scale does not follow the trend.")


#: The logged B_simple agrees with the fitted B_noise when their median ratio lies in this band.
AGREEMENT_BAND = (0.85, 1.15)


def logged_noise_claim(at_target: pd.DataFrame, cbs_fit: pd.DataFrame, logged: bool = True) -> str:
    """The logged noise scale (grad_noise/*, smoothed) at each run's crossing against the fitted
    B_noise, in one sentence: the median ratio over the targets, its range and a verdict (agrees
    within AGREEMENT_BAND, over- or underestimates); '' when nothing was logged."""
    ratio = pd.Series(dtype=float)
    if len(at_target) and len(cbs_fit):
        ratio = (at_target.groupby("threshold")["B_simple_ema"].median()
                 / cbs_fit.set_index("threshold")["B_noise"]).dropna()
    if not len(ratio):
        return ("The logged noise scale cannot be compared: no target has both a fitted B_noise and runs that "
                "reach it." if logged else "")
    med = float(ratio.median())
    lo, hi = AGREEMENT_BAND
    verdict = (f"agrees with it within {round(100 * (hi - 1))}%" if lo <= med <= hi else
               "overestimates it" if med > 1 else "underestimates it")
    return (f"The logged noise scale at the crossing against the fitted B_noise: median ratio {med:.2f} over "
            f"{len(ratio)} target(s) (range {ratio.min():.2f} to {ratio.max():.2f}): it {verdict}. B_simple is "
            "measured at the target while S(B) integrates the noise scale over the whole run, so a noise scale "
            "that grows during training makes B_simple at the target larger than the fitted B_noise.")


def noise_scale_lines(comparison: pd.DataFrame, at_target: pd.DataFrame, cbs_fit: pd.DataFrame,
                      logged: bool) -> list[str]:
    """05's answer as Markdown lines: the verdict (noise_scale_verdict), one line per target with the
    same numbers as the table above it, then the logged noise scale (logged_noise_claim). One median
    ratio for the post-hoc estimate (the verdict's), one for the logged one, each named."""
    from .numbers import interval

    lines = noise_scale_verdict(comparison, cbs_fit) + [""]
    for row in comparison.itertuples():
        if row.status != "ok":
            lines.append(f"- accuracy ≥ {row.threshold:g}: post-hoc B_simple {row.status} ({row.reason})")
            continue
        ratio = getattr(row, "B_simple_over_B_noise", np.nan)
        lines.append(f"- accuracy ≥ {row.threshold:g}: B_simple = "
                     f"{interval(row.B_simple, row.B_simple_lo, row.B_simple_hi, decimals=0)} vs fitted "
                     f"B_noise = {interval(row.B_noise, row.B_noise_lo, row.B_noise_hi, decimals=0)}"
                     + (f" (B_simple / B_noise = {ratio:.2f})" if np.isfinite(ratio) and ratio > 0 else ""))
    claim = logged_noise_claim(at_target, cbs_fit, logged)
    return lines + (["", claim] if claim else [])


def _without_subject(evidence: str, claim: str) -> str:
    """The evidence without the words the claim before it already said ('B_noise grows: B_noise
    grows from ...' reads 'B_noise grows ...: from ...')."""
    subject = " ".join(claim.split()[:2]) + " "
    return evidence[len(subject):] if evidence.startswith(subject) else evidence


def cross_phase_findings(summary_long: pd.DataFrame, two_axis: dict | None = None) -> pd.DataFrame:
    """07's findings, one row each (phase, topic, finding), for the page and the index: how B_noise
    moves with the target in each phase (b_noise_trend), and what a rollout is worth against a
    prompt where a phase has a cross-axis fit (rho_claim over its two_axis_fit table)."""
    rows = []
    for p, part in summary_long.groupby("phase", sort=False):
        trend = b_noise_trend(part)
        where = f"{part['axis'].iloc[0]} axis, {part['task'].iloc[0]}"
        text = (f"{trend['claim']}: {_without_subject(trend['evidence'], trend['claim'])}" if trend["n_points"]
                else "no target has a usable fit (see the status and reason in its cbs_fit.csv)")
        rows.append({"phase": p, "topic": f"B_noise against the target ({where})", "finding": text})
    for p, table in (two_axis or {}).items():
        for line in rho_claim(table):
            rows.append({"phase": p, "topic": "prompts against rollouts", "finding": line})
    return pd.DataFrame(rows, columns=["phase", "topic", "finding"])


def envelope_lines(winners: pd.DataFrame, policy: dict, one_rate: bool) -> list[str]:
    """02's lines on the learning rates of a sweep: with one rate per batch size, nothing to choose
    and the sweep's policy; otherwise each swept batch size (what was tried, which won at each
    target, whether the choice is certain) and the winners' policy (envelope.lr_policy's dict)."""
    from .numbers import count, plain_text

    if one_rate:
        return [f"One learning rate per batch size: nothing to choose. The sweep's learning-rate policy: "
                f"{policy['describe']}."]
    lines = []
    for row in winners[winners["n_configs"] > 1].itertuples():
        caveat = (" (a configuration that never reached a target had stopped earlier, so the choice "
                  "is not certain there)" if row.undetermined else "")
        lines.append(f"B = {count(row.total_batch)} ({row.n_prompts}×{row.n_rollouts}): tried {plain_text(row.tried)}; "
                     f"best: {plain_text(row.won_by_target)}{caveat}")
    return lines + [f"\nThe learning-rate policy of the winners: {policy['describe']}."]


def two_axis_answer(fit: pd.DataFrame, iso: pd.DataFrame, validated: bool | None = None,
                    check_reason: str = "") -> list[str]:
    """04's answer as Markdown lines: rho and B0 per target with a fit, what rho means (rho_claim,
    only where the data pin it down), whether the cross-axis model may price splits (`validated`,
    None without a model), why there is no fit, and the fastest split at each target (iso_batch_table)."""
    from .numbers import interval

    ok = fit[fit["status"] == "ok"] if len(fit) else fit
    lines = [f"- accuracy ≥ {r.threshold:g}: ρ = {interval(r.rho, r.rho_lo, r.rho_hi, decimals=2)}, "
             f"B0 = {interval(r.B0, r.B0_lo, r.B0_hi, decimals=0)} prompts" for r in ok.itertuples()]
    lines += [f"\n{line}" for line in rho_claim(fit)] if len(fit) else []
    if validated is not None and len(ok):
        lines.append("\nThe model predicted the left-out phases within their scatter: splits off the sampled axes "
                     "may be priced by it." if validated else
                     f"\nThe model is not checked on this sweep ({check_reason}): 08 recommends no split off the "
                     "sampled axes.")
    if len(ok) == 0 and len(fit):
        reasons = "; ".join(sorted(set(fit["reason"].astype(str)) - {""}))
        lines.append(f"No target has a joint fit ({reasons or 'see the table above'}).")
    elif len(fit) == 0:
        lines.append("No joint fit: the joint phases have no runs yet.")
    if len(iso) and iso["S_B"].notna().any():
        reached = iso[~iso["censored"].astype(bool) & iso["S_B"].notna()]
        for t, rows in reached.groupby("threshold"):
            best = rows.loc[rows["S_B"].idxmin()]
            lines.append(f"- accuracy ≥ {t:g}: fewest steps with {int(best.n_prompts)} prompts × "
                         f"{int(best.n_rollouts)} rollouts ({best.S_B:.0f} steps, of {len(rows)} split(s) that reach it)")
    return lines
