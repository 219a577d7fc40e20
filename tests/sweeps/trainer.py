"""A small real policy-gradient learner for the test suite (issues 16 and 24).

Every other sweep the tests draw follows S(B) = S_min (1 + B_noise/B) by construction. This
module trains a real policy instead, so the analysis is tested on what a learner does.

The task: a verifiable toy "answer" task. A prompt is a feature vector x (D numbers); its answer
is L tokens, each one of V choices, fixed by a hidden linear teacher (token j is
argmax_v (U_j x)_v). The prompts' norms vary (lognormal), so some are easy and some hard: a
prompt of small norm needs large weights before the policy is sure of it. The policy is a
softmax per token, linear in x (W of shape L x V x D, started at zero: every answer equally
likely, accuracy (1/V)^L = 0.11). Reward 1 when every token is right, else 0.

Training is GRPO-style: each step draws n_prompts prompts (an epoch-shuffled pool of N_TRAIN),
samples n_rollouts answers per prompt, advantage A = (r - group mean) / (group std + eps), zero
for a group whose rewards are all equal, gradient = mean over samples of A * grad log pi
(one on-policy update per step, so PPO's ratio is 1). Optimiser settings (SETTINGS):
- adam_fixed: Adam, one learning rate (LR_ADAM) for every batch size (as most verl sweeps run);
- adam_sqrt: Adam, lr = LR_ADAM * sqrt(B / B_REF), up to LR_MAX_ADAM (reached at B = 1024);
- sgd_tuned: plain SGD with the lr tuned per B: for each (n_prompts, n_rollouts) of the truth
  grid, the rate of SGD_LR_GRID (1 to 64, factor 2 apart) with the smallest mean log S at
  TUNE_TARGET over N_TUNE_SEEDS seeds, chosen by `python tests/sweeps trainer truth` and stored
  in pg_truth.json (sweeps read it there);
- sgd_momentum: heavy-ball SGD (buf = MOMENTUM buf + g, w += lr buf; MOMENTUM 0.9) at one high
  rate LR_MOMENTUM for every batch size (an effective rate lr / (1 - MOMENTUM) = 30, 4x what
  plain SGD's tuning picks at B = 16): fast at large batches, noise-limited at small ones, so S(B)
  bends harder than 1/B (alpha 1.6-1.8 along the prompts axis) and its B_noise there doubles
  from the lowest target to the highest.
The toy's objective saturates rather than diverges, so no rate is ever unstable; the ceilings
(LR_MAX_ADAM, the grid's 64) stand in for the largest stable rate of real training.
With few rollouts most groups are all-equal and carry no gradient (at the start, 2 rollouts leave
80% of the prompts without one): the SGD settings then take more steps at a split with few
rollouts than at one with more of the same batch (momentum at B = 512: 256 x 2 takes 1.7-2x the
steps of 64 x 8), which the two-axis 1/B model (one S_min for every split) cannot say; Adam's
per-coordinate normalisation hides it (within 10%).

Validation accuracy is the exact expected accuracy of the sampling policy (mean@1 with
sampling: the mean over the N_VAL validation prompts of the product of the correct tokens'
probabilities), logged as Binomial(n_val, p) / n_val, as verl's mean@1 on n_val problems is.
Gradient statistics (`grad_noise/*`, every 20 steps in sweeps): from per-sample gradients g_s = A_s grad
log pi(a_s | x_s) of the current policy on a large batch (GRAD_NOISE_PROMPTS prompts x the run's
n_rollouts), tr(Sigma) = mean |g_s - g_mean|^2 and |G|^2 = |g_mean|^2 - tr(Sigma)/N (unbiased);
B_simple = tr(Sigma)/|G|^2 in samples. The step time follows T = STEP_TIME_A + STEP_TIME_B * B
seconds (`step_time`), with a lognormal speed per run and per step.

The truth (pg_truth.json), per setting:
- each axis (prompts at n_rollouts 8, rollouts at n_prompts 16), on the truth grid (wider than the
  sweeps'): N_TRUTH_SEEDS seeds trained until the top target; S per target is the exact crossing
  step of the exact validation accuracy (interpolated between steps), aggregated as the geometric
  mean over seeds (mean of log S); none is censored. Fitted by least squares in log S with the
  general form S_min (1 + (B_noise/B)^alpha) and with alpha = 1; the wall-clock optimum per target
  is the argmin over the grid of S(B) * step_time(B); B_simple per target is the statistic at the
  crossing (TRUTH_NOISE_PROMPTS prompts, N_NOISE_SEEDS seeds), geometric mean over the sweep grid;
  `b_noise_trend`: B_noise per target with a 95% interval from resampling each batch size's seeds
  (N_TREND_BOOT), and its rise from the lowest to the highest target (ratio with interval);
- `splits`: every pair of split_grid() (n_rollouts 2-128 x B 16-4096 in powers of two, plus both
  axes), N_SPLIT_SEEDS seeds off the axes (an axis pair keeps the axis' seeds): S, log sd and
  hours = S x step_time(B) per target, and the fastest split per target;
- `cross_axis`: per target, the two-axis 1/B model fitted to both axes' points, and at each batch of
  ISO_BATCHES every split's true S beside the model's.
`code_version()` hashes the learner's source (from the imports to the end marker); a test
fails when it no longer matches the JSON's.

Public API:
- trainer_sweep(seed, setting, axis, n_seeds=2, sizes=None, test_freq=None, n_val=N_VAL,
  budget=None, n_running=None, truth=None) -> PGSweep (runs, params, features, setting, axis,
  phase, budget; the form of sweeps/form.py, so form.snapshot_frames and
  form.write_offline_runs take it);
- joint_trainer_sweep(seed, setting, phases=("p1", "p2a", "p2b", "p2c"), n_seeds=2, sizes=None,
  p2a_rollouts=4, p2c_batch=512, share_runs=True, test_freq=None, n_val=N_VAL, budget=None,
  n_running=None, truth=None) -> JointPGSweep (runs, params per phase, features, setting, phases:
  phase -> {axis, pairs, fixed, budget}, shared): a phase-2 study in the same form; phase_pairs(phase,
  p2a_rollouts, p2c_batch) -> (axis, pairs, fixed), the phases' default grids;
- sweep_at(sweep, hours) -> the sweep as it stood `hours` after all its runs started (rows logged
  by then, cut runs `running`); elapsed_hours(run);
- trainer_sweeps(seeds, classes=SWEEP_CLASSES, processes=2, **keywords) -> one sweep per seed and
  (setting, axis) class (axis "study": joint_trainer_sweep), in worker processes;
- load_truth() -> dict (cached per file version); truth["settings"][setting][axis] -> {"phase",
  "fixed", "points", "fits", "wallclock_optimum", "b_simple", "b_noise_trend"};
  truth["settings"][setting]["splits"] -> {"points", "optimum"}; [...]["cross_axis"][target];
- true_steps(setting, n_prompts, n_rollouts, target, truth=None) / true_hours(...) -> the truth's
  steps / hours at any split: exact on the grid, log-log along the batch at a fixed n_rollouts
  between grid points, nan off it;
- train(task(), n_prompts, n_rollouts, setting, seed, max_steps, ...) -> RunTrace (acc per step,
  rows, b_simple); steps_to(acc, target); general_fit(batch, steps); two_axis_fit(n_prompts,
  n_rollouts, steps); b_noise_trend(points); step_time(B); grid(axis, "sweep" | "truth");
  split_grid(); learning_rate(setting, B); sgd_lr(n_prompts, n_rollouts).

    python tests/sweeps trainer truth        # recompute tests/pg_truth.json (13 CPU-minutes: 2 processes,
                                            # about 7 min on 2 free cores, 23 min on a shared machine)
    python tests/sweeps trainer summary      # alpha, B_noise and its rise per class; the splits of B = 512
    python tests/sweeps trainer splits SETTING TARGET [S|hours]   # the truth's n_rollouts x batch table
    python tests/sweeps trainer describe SETTING AXIS SEED
    python tests/sweeps trainer offline SETTING AXIS|study SEED DEST   # a sweep as W&B offline runs
                                            # (PG_SWEEP_ARGS: the sweep function's keywords as JSON)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __name__ == "__main__":  # tiny matrices: BLAS threads only cost (the CLI's own processes)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

TRUTH_PATH = Path(__file__).resolve().with_name("pg_truth.json")

# the task
D, L, V = 64, 2, 3
N_TRAIN, N_VAL = 4000, 500
TASK_SEED = 1606
NORM_SIGMA = 0.4  # spread of log prompt norm: the spread of difficulty
# the optimisers
LR_ADAM = 0.04
B_REF = 256  # adam_sqrt's anchor: lr = LR_ADAM at B = B_REF
# The toy's objective saturates instead of diverging, so no learning rate is ever unstable and
# a perfect gradient could take one huge step. Real training has a largest stable rate; these
# ceilings stand in for it (adam_sqrt's lr stops growing at LR_MAX_ADAM, reached at B = 1024;
# the SGD grid ends at 64).
LR_MAX_ADAM = 0.08
SGD_LR_GRID = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
ADAM_BETAS, ADAM_EPS, ADV_EPS = (0.9, 0.999), 1e-8, 1e-6
MOMENTUM, LR_MOMENTUM = 0.9, 3.0  # sgd_momentum: heavy ball, one high rate for every batch size
SETTINGS = ("adam_fixed", "adam_sqrt", "sgd_tuned", "sgd_momentum")  # new ones last: the seeds
# the step-time model (seconds): T = A + B_coef * batch, lognormal per run and per step
STEP_TIME_A, STEP_TIME_B = 20.0, 0.02
STEP_TIME_RUN_SIGMA, STEP_TIME_STEP_SIGMA = 0.05, 0.05
GRAD_NOISE_PROMPTS = 1024  # prompts per logged gradient statistic (x the run's n_rollouts)
TRUTH_NOISE_PROMPTS = 2000  # prompts per truth gradient statistic
MAX_NOISE_SAMPLES = 16384  # fewer prompts at many rollouts: per-sample gradients fit in memory
VAL_KEY = "val-core/openai/gsm8k/reward/mean@1"


@dataclass
class Task:
    x_train: np.ndarray  # (N_TRAIN, D)
    y_train: np.ndarray  # (N_TRAIN, L) int
    x_val: np.ndarray
    y_val: np.ndarray


def make_task(seed: int = TASK_SEED) -> Task:
    """The fixed task: a hidden teacher U (L x V x D), prompts of lognormal norm, answers."""
    rng = np.random.default_rng([seed, 0])
    teacher = rng.normal(size=(L, V, D))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(size=(n, D))
        x *= (np.exp(rng.normal(0.0, NORM_SIGMA, size=n)) / np.linalg.norm(x, axis=1))[:, None]
        y = np.einsum("lvd,nd->nlv", teacher, x).argmax(axis=2)
        return x, y

    x_train, y_train = draw(N_TRAIN)
    x_val, y_val = draw(N_VAL)
    return Task(x_train, y_train, x_val, y_val)


def policy_probs(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """pi(token j = v | x) for every prompt: (n, L, V)."""
    logits = (x @ w.reshape(L * V, D).T).reshape(-1, L, V)
    p = np.exp(logits - logits.max(axis=2, keepdims=True))
    return p / p.sum(axis=2, keepdims=True)


def expected_accuracy(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """The exact probability that a sampled answer is right, averaged over the prompts."""
    logits = (x @ w.reshape(L * V, D).T).reshape(-1, L, V)
    top = logits.max(axis=2, keepdims=True)
    log_z = np.log(np.exp(logits - top).sum(axis=2)) + top[:, :, 0]
    right = np.take_along_axis(logits, y[:, :, None], axis=2)[:, :, 0]
    return float(np.exp((right - log_z).sum(axis=1)).mean())


def sample_answers(rng, probs: np.ndarray, n_rollouts: int) -> np.ndarray:
    """n_rollouts answers per prompt: (n, R, L) token indices."""
    cum = np.cumsum(probs, axis=2)  # (n, L, V)
    u = rng.random((probs.shape[0], n_rollouts, probs.shape[1], 1))
    return (u > cum[:, None, :, :-1]).sum(axis=3)


def group_advantages(rewards: np.ndarray) -> np.ndarray:
    """GRPO: (r - group mean) / (group std + eps) per prompt (rows); zero where a group's
    rewards are all equal (its std is 0, so r - mean is 0 too)."""
    centred = rewards - rewards.mean(axis=1, keepdims=True)
    std = np.sqrt((centred * centred).mean(axis=1, keepdims=True))
    return centred / (std + ADV_EPS)


def rollout(rng, w: np.ndarray, x: np.ndarray, y: np.ndarray, n_rollouts: int):
    """Sample answers, score them, group advantages. Returns (probs, actions, rewards, adv)."""
    probs = policy_probs(w, x)
    actions = sample_answers(rng, probs, n_rollouts)
    rewards = (actions == y[:, None, :]).all(axis=2).astype(float)
    return probs, actions, rewards, group_advantages(rewards)


def per_sample_gradients(x: np.ndarray, probs: np.ndarray, actions: np.ndarray,
                         adv: np.ndarray) -> np.ndarray:
    """g_s = A_s * grad_W log pi(a_s | x_s) for every sample: (n * R, L * V * D)."""
    onehot = (actions[..., None] == np.arange(V)).astype(float)  # (n, R, L, V)
    score = onehot - probs[:, None, :, :]
    g = adv[:, :, None, None, None] * score[..., None] * x[:, None, None, None, :]
    return g.reshape(-1, L * V * D)


def batch_gradient(x: np.ndarray, actions: np.ndarray, adv: np.ndarray) -> np.ndarray:
    """mean over samples of A * grad log pi, (L, V, D). Within a group the advantages sum to
    zero, so the -pi part of the score cancels: only the sampled tokens' one-hots remain."""
    n, r = adv.shape
    cell = (np.arange(n)[:, None, None] * L + np.arange(L)) * V + actions  # (n, R, L)
    weights = np.broadcast_to(adv[:, :, None], cell.shape)
    weighted = np.bincount(cell.ravel(), weights.ravel(), minlength=n * L * V).reshape(n, L * V)
    return (weighted.T @ x).reshape(L, V, D) / (n * r)


def gradient_noise(rng, w: np.ndarray, task: Task, n_rollouts: int,
                   n_prompts: int = GRAD_NOISE_PROMPTS) -> tuple[float, float]:
    """(|G|, B_simple = tr(Sigma)/|G|^2 in samples) from per-sample gradients of the current
    policy on a large batch; |G|^2 corrected for the batch's own noise (unbiased)."""
    n_prompts = min(n_prompts, len(task.x_train), max(8, MAX_NOISE_SAMPLES // n_rollouts))
    idx = rng.choice(len(task.x_train), size=n_prompts, replace=False)
    x, y = task.x_train[idx], task.y_train[idx]
    probs, actions, _, adv = rollout(rng, w, x, y, n_rollouts)
    return noise_statistics(per_sample_gradients(x, probs, actions, adv))


def noise_statistics(g: np.ndarray) -> tuple[float, float]:
    """(|G|, tr(Sigma)/|G|^2) from per-sample gradients g (N, P); (0, nan) when the noise
    swamps the batch (the unbiased |G|^2 is not positive): no B_simple can be read off it."""
    n = g.shape[0]
    mean = g.mean(axis=0)
    tr_sigma = float(((g - mean) ** 2).sum(axis=1).mean()) * n / (n - 1)
    g2 = float(mean @ mean) - tr_sigma / n
    if g2 <= 0:
        return 0.0, math.nan
    return math.sqrt(g2), tr_sigma / g2


def learning_rate(setting: str, batch: int, sgd_lr: float | None = None) -> float:
    if setting == "adam_fixed":
        return LR_ADAM
    if setting == "adam_sqrt":
        return min(LR_ADAM * math.sqrt(batch / B_REF), LR_MAX_ADAM)
    if setting == "sgd_momentum":
        return LR_MOMENTUM
    if setting == "sgd_tuned":
        if sgd_lr is None:
            raise ValueError("sgd_tuned needs its tuned learning rate (pg_truth.json's sgd_lr)")
        return float(sgd_lr)
    raise ValueError(f"unknown setting {setting!r}; known: {SETTINGS}")


@dataclass
class RunTrace:
    """What a run did: the exact validation accuracy after every step (index = step), the rows
    it logged (when asked) and the gradient statistic B_simple at the steps it was computed."""
    acc: np.ndarray
    rows: list[dict] = field(default_factory=list)
    b_simple: dict[int, float] = field(default_factory=dict)


def train(task: Task, n_prompts: int, n_rollouts: int, setting: str, seed: int, max_steps: int,
          lr: float | None = None, stop_at: float | None = None, log: bool = False,
          test_freq: int = 5, n_val: int = N_VAL, grad_noise_every: int | None = None,
          noise_targets: tuple[float, ...] = ()) -> RunTrace:
    """One training run. acc[s] is the exact expected validation accuracy after s steps (s = 0
    is the initial policy); training stops after max_steps or once acc >= stop_at. lr: the
    sgd_tuned rate (the other settings take theirs from `learning_rate`). With log, the rows a
    verl run logs are built too, with the gradient statistics every grad_noise_every steps
    (default: at every eval, every test_freq steps); noise_targets: accuracies at whose first
    crossing B_simple is computed on a large batch (into trace.b_simple, keyed by step). Logging draws from a stream of its own, so a run's training
    is the same with or without it."""
    rng = np.random.default_rng([seed, n_prompts, n_rollouts, SETTINGS.index(setting)])
    log_rng = np.random.default_rng([seed, n_prompts, n_rollouts, SETTINGS.index(setting), 1])
    B = n_prompts * n_rollouts
    lr = learning_rate(setting, B, lr)
    w = np.zeros((L, V, D))
    m, v = np.zeros_like(w), np.zeros_like(w)
    b1, b2 = ADAM_BETAS
    acc = [expected_accuracy(w, task.x_val, task.y_val)]
    trace = RunTrace(np.empty(0))
    speed = float(log_rng.lognormal(0.0, STEP_TIME_RUN_SIGMA))
    every = grad_noise_every or test_freq
    pending = sorted(noise_targets)
    if log:
        trace.rows.append(_eval_row(log_rng, trace, 0, acc[0], w, task, n_rollouts, n_val, True))
    order, pos = rng.permutation(N_TRAIN), 0
    for step in range(1, max_steps + 1):
        if pos + n_prompts > N_TRAIN:
            order, pos = rng.permutation(N_TRAIN), 0
        idx = order[pos:pos + n_prompts]
        pos += n_prompts
        x, y = task.x_train[idx], task.y_train[idx]
        probs, actions, rewards, adv = rollout(rng, w, x, y, n_rollouts)
        g = batch_gradient(x, actions, adv)
        if setting == "sgd_tuned":
            w += lr * g
        elif setting == "sgd_momentum":  # heavy ball: buf = mu buf + g, w += lr buf
            m = MOMENTUM * m + g
            w += lr * m
        else:
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            w += lr * (m / (1 - b1 ** step)) / (np.sqrt(v / (1 - b2 ** step)) + ADAM_EPS)
        acc.append(expected_accuracy(w, task.x_val, task.y_val))
        if pending and acc[-1] >= pending[0]:
            while pending and acc[-1] >= pending[0]:
                pending.pop(0)
            trace.b_simple[step] = gradient_noise(log_rng, w, task, n_rollouts, TRUTH_NOISE_PROMPTS)[1]
        if log:
            ent = -(probs * np.log(np.clip(probs, 1e-300, None))).sum(axis=2).sum(axis=1).mean()
            t = (STEP_TIME_A + STEP_TIME_B * B) * speed * float(log_rng.lognormal(0.0, STEP_TIME_STEP_SIGMA))
            row = {"_step": step, "training/global_step": step, "critic/score/mean": float(rewards.mean()),
                   "actor/entropy": float(ent), "actor/grad_norm": float(np.sqrt((g * g).sum())),
                   "perf/time_per_step": t, "timing_s/step": t}
            if step % test_freq == 0:
                row.update(_eval_row(log_rng, trace, step, acc[-1], w, task, n_rollouts, n_val,
                                     step % every == 0))
            trace.rows.append(row)
        if stop_at is not None and acc[-1] >= stop_at:
            break
    trace.acc = np.asarray(acc)
    return trace


def _eval_row(rng, trace: RunTrace, step: int, p: float, w, task: Task, n_rollouts: int,
              n_val: int, noise: bool) -> dict:
    row = {"_step": step, VAL_KEY: float(rng.binomial(n_val, min(max(p, 0.0), 1.0)) / n_val)}
    if noise:
        norm, b_simple = gradient_noise(rng, w, task, n_rollouts)
        row.update({"grad_noise/grad_norm": norm, "grad_noise/B_noise_estimate": b_simple})
        trace.b_simple[step] = b_simple
    return row


def steps_to(acc: np.ndarray, target: float) -> float:
    """First step with exact accuracy >= target, linearly interpolated between steps (nan when
    never reached)."""
    hit = np.flatnonzero(acc >= target)
    if not len(hit):
        return math.nan
    s = int(hit[0])
    if s == 0:
        return 0.0
    a0, a1 = acc[s - 1], acc[s]
    return s - 1 + (target - a0) / (a1 - a0) if a1 > a0 else float(s)


# --------------------------------------------------------------------------------------------
# What the truth and the sweeps cover (part of the learner's version: the truth depends on it)
# --------------------------------------------------------------------------------------------
TARGETS = (0.3, 0.4, 0.5, 0.6, 0.7)  # validation accuracies; the start is 0.11
TUNE_TARGET = 0.5  # sgd_tuned: the lr of each B is the best at this target
N_TRUTH_SEEDS, N_TUNE_SEEDS, N_NOISE_SEEDS = 8, 4, 2
TRUTH_MAX_STEPS = 40000
AXES = {  # axis -> phase, the fixed count, the sweep's and the (wider) truth's varied counts
    "prompts": {"phase": "p1", "fixed": ("n_rollouts", 8),
                "sweep": (4, 8, 16, 32, 64, 128, 256, 512), "truth": tuple(2 ** k for k in range(1, 11))},
    "rollouts": {"phase": "p2b", "fixed": ("n_prompts", 16),
                 "sweep": (2, 4, 8, 16, 32, 64), "truth": tuple(2 ** k for k in range(1, 9))},
}


# the cross-axis truth: every split n_prompts x n_rollouts of these rollouts with B a power of 2
# in SPLIT_BATCH (n_prompts >= 1), plus both axes' truth grids
SPLIT_ROLLOUTS = (2, 4, 8, 16, 32, 64, 128)
SPLIT_BATCH = (16, 4096)
N_SPLIT_SEEDS = 8  # at most N_TRUTH_SEEDS: a pair on an axis keeps that axis' seeds
ISO_BATCHES = (128, 512, 2048)  # where the truth sets the splits beside the two-axis 1/B model
N_TREND_BOOT = 200  # seed resamples behind the truth's B_noise intervals


def grid(axis: str, which: str = "sweep") -> list[tuple[int, int]]:
    """(n_prompts, n_rollouts) of the axis' sweep grid or truth grid, in increasing batch."""
    spec = AXES[axis]
    fixed = spec["fixed"][1]
    if axis == "prompts":
        return [(n, fixed) for n in spec[which]]
    return [(fixed, n) for n in spec[which]]


def split_grid() -> list[tuple[int, int]]:
    """(n_prompts, n_rollouts) of the cross-axis truth, by n_rollouts then batch: the splits of
    SPLIT_ROLLOUTS x powers of two in SPLIT_BATCH, and every pair of both axes' truth grids."""
    lo, hi = (int(math.log2(b)) for b in SPLIT_BATCH)
    pairs = {(2 ** k // n_r, n_r) for n_r in SPLIT_ROLLOUTS for k in range(lo, hi + 1) if 2 ** k >= n_r}
    pairs |= {p for axis in AXES for p in grid(axis, "truth")}
    return sorted(pairs, key=lambda p: (p[1], p[0]))


def step_time(batch: float) -> float:
    """The step-time model's median step time (seconds) at batch size `batch`."""
    return STEP_TIME_A + STEP_TIME_B * batch


# === end of the learner: code_version hashes the source above this line ===


def code_version() -> str:
    """sha256 (first 16 hex digits) of this file's learner: the source from the imports (after
    the module doc) to the end marker."""
    text = Path(__file__).read_text()
    learner = text[text.index("from __future__ import"):text.index("# === end of the learner")]
    return hashlib.sha256(learner.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# The many-seed truth (python tests/sweeps trainer truth -> pg_truth.json)
# --------------------------------------------------------------------------------------------
_TASK: Task | None = None


def task() -> Task:
    """The task, made once per process."""
    global _TASK
    if _TASK is None:
        _TASK = make_task()
    return _TASK


def tune_sgd_lr(n_p: int, n_r: int) -> tuple[float, dict]:
    """sgd_tuned's rate at (n_p, n_r): the rate of SGD_LR_GRID with the smallest mean log S at
    TUNE_TARGET over N_TUNE_SEEDS seeds. A rate's runs stop at 3x the best mean S so far (they
    count as reaching it there: a lower bound that already loses). Returns (lr, {lr: mean S})."""
    scores: dict[float, float] = {}
    best = math.inf
    for lr in sorted(SGD_LR_GRID, reverse=True):  # fast rates first: their S bounds the slow ones
        cap = int(min(TRUTH_MAX_STEPS, 3 * best + 10)) if math.isfinite(best) else TRUTH_MAX_STEPS
        logs = []
        for seed in range(N_TUNE_SEEDS):
            trace = train(task(), n_p, n_r, "sgd_tuned", 100 + seed, cap, lr=lr, stop_at=TUNE_TARGET)
            s = steps_to(trace.acc, TUNE_TARGET)
            logs.append(math.log(max(s if s == s else cap, 1e-3)))
        scores[lr] = float(np.exp(np.mean(logs)))
        best = min(best, scores[lr])
    return min(scores, key=scores.get), scores


def truth_point(job: tuple[str, int, int, bool]) -> dict:
    """The many-seed S of one setting at one (n_prompts, n_rollouts): S per target per seed (seeds
    0..n-1, each trained until the top target; n = N_TRUTH_SEEDS on an axis' truth grid, else
    N_SPLIT_SEEDS), their geometric mean and log sd, and on an axis (`on_axis`) B_simple at each
    target's crossing (seeds 0..N_NOISE_SEEDS-1, TRUTH_NOISE_PROMPTS prompts)."""
    setting, n_p, n_r, on_axis = job
    lr, scores = (tune_sgd_lr(n_p, n_r) if setting == "sgd_tuned" else (None, None))
    per_seed, b_simple = [], {t: [] for t in TARGETS}
    for seed in range(N_TRUTH_SEEDS if on_axis else N_SPLIT_SEEDS):
        trace = train(task(), n_p, n_r, setting, seed, TRUTH_MAX_STEPS, lr=lr, stop_at=TARGETS[-1],
                      noise_targets=TARGETS if on_axis and seed < N_NOISE_SEEDS else ())
        s = [steps_to(trace.acc, t) for t in TARGETS]
        if any(x != x for x in s):
            raise RuntimeError(f"{setting} np{n_p} nr{n_r} seed {seed}: censored at "
                               f"{TRUTH_MAX_STEPS} steps; raise TRUTH_MAX_STEPS")
        per_seed.append(s)
        for t in TARGETS:  # the statistic at the first step at or past the crossing
            step = math.ceil(s[TARGETS.index(t)])
            at = [v for k, v in sorted(trace.b_simple.items()) if k >= step and math.isfinite(v)]
            if at:
                b_simple[t].append(at[0])
    logs = np.log(np.maximum(np.array(per_seed), 1e-3))
    point = {"setting": setting, "n_prompts": n_p, "n_rollouts": n_r, "batch": n_p * n_r,
             "lr": learning_rate(setting, n_p * n_r, lr),
             "S": {str(t): round(float(np.exp(logs[:, k].mean())), 3) for k, t in enumerate(TARGETS)},
             "log_S_sd": {str(t): round(float(logs[:, k].std(ddof=1)), 4) for k, t in enumerate(TARGETS)},
             "S_seeds": {str(t): [round(float(x[k]), 2) for x in per_seed] for k, t in enumerate(TARGETS)}}
    if on_axis:
        point["b_simple"] = {str(t): round(float(np.exp(np.mean(np.log(v)))), 1) for t, v in b_simple.items() if v}
    if scores is not None:
        point["sgd_lr_scores"] = {str(k): round(v, 2) for k, v in sorted(scores.items())}
    return point


def general_fit(batch, steps) -> dict:
    """Least squares in log S of S = S_min (1 + (B_noise/B)^alpha), and of its alpha = 1 form.
    Returns S_min, B_noise, alpha, log_rms, and mccandlish_S_min, mccandlish_B_noise,
    mccandlish_log_rms."""
    from scipy.optimize import least_squares

    b, ls = np.log(np.asarray(batch, float)), np.log(np.asarray(steps, float))

    def resid(theta, alpha=None):
        a = theta[2] if alpha is None else alpha
        return theta[0] + np.logaddexp(0.0, a * (theta[1] - b)) - ls

    start = [ls.min() - 0.1, float(np.median(b))]
    gen = min((least_squares(resid, start + [a0], bounds=([-10, -10, 0.05], [20, 25, 6]))
               for a0 in (0.5, 1.0, 2.0)), key=lambda r: r.cost)
    mcc = least_squares(resid, start, args=(1.0,), bounds=([-10, -10], [20, 25]))
    rms = lambda r: float(np.sqrt(np.mean(r.fun ** 2)))  # noqa: E731
    return {"S_min": round(float(np.exp(gen.x[0])), 3), "B_noise": round(float(np.exp(gen.x[1])), 2),
            "alpha": round(float(gen.x[2]), 4), "log_rms": round(rms(gen), 4),
            "mccandlish_S_min": round(float(np.exp(mcc.x[0])), 3),
            "mccandlish_B_noise": round(float(np.exp(mcc.x[1])), 2),
            "mccandlish_log_rms": round(rms(mcc), 4)}


def two_axis_fit(n_prompts, n_rollouts, steps) -> dict:
    """Least squares in log S of the joint 1/B two-axis model S = S_min (1 + B0 (1 + (n_r - 1)
    rho) / (n_p n_r)), rho in [0, 1]: one S_min for every split. Returns S_min, B0, rho, log_rms."""
    from scipy.optimize import least_squares

    n_p, n_r = np.asarray(n_prompts, float), np.asarray(n_rollouts, float)
    ls = np.log(np.asarray(steps, float))

    def resid(theta):
        return theta[0] + np.log1p(np.exp(theta[1]) * (1 + (n_r - 1) * theta[2]) / (n_p * n_r)) - ls

    fit = min((least_squares(resid, [ls.min() - 0.1, math.log(100.0), r0], bounds=([-10, -10, 0], [20, 25, 1]))
               for r0 in (0.05, 0.5)), key=lambda r: r.cost)
    return {"S_min": round(float(np.exp(fit.x[0])), 3), "B0": round(float(np.exp(fit.x[1])), 2),
            "rho": round(float(fit.x[2]), 4), "log_rms": round(float(np.sqrt(np.mean(fit.fun ** 2))), 4)}


def two_axis_steps(fit: dict, n_prompts, n_rollouts) -> np.ndarray:
    """S the two-axis 1/B model (two_axis_fit's result) gives at (n_prompts, n_rollouts)."""
    n_p, n_r = np.asarray(n_prompts, float), np.asarray(n_rollouts, float)
    return fit["S_min"] * (1 + fit["B0"] * (1 + (n_r - 1) * fit["rho"]) / (n_p * n_r))


def _refit_b_noise(batch, steps, start: dict) -> float:
    """The general form's B_noise refitted from a fit's own values (one solve: the bootstrap's)."""
    from scipy.optimize import least_squares

    b, ls = np.log(np.asarray(batch, float)), np.log(np.asarray(steps, float))
    theta = [math.log(start["S_min"]), math.log(start["B_noise"]), start["alpha"]]
    fit = least_squares(lambda th: th[0] + np.logaddexp(0.0, th[2] * (th[1] - b)) - ls, theta,
                        bounds=([-10, -10, 0.05], [20, 25, 6]))
    return float(np.exp(fit.x[1]))


def b_noise_trend(points: list[dict], n_boot: int = N_TREND_BOOT, seed: int = 0) -> dict:
    """B_noise (general form) per target with a 95% interval from resampling each batch size's
    seeds (a seed's targets together; each resample refitted from the point fit), and the rise
    from the lowest to the highest target: ratio = B_noise(top) / B_noise(lowest), its interval
    from the same draws."""
    batch = [p["batch"] for p in points]
    keys = [str(t) for t in TARGETS]
    logs = [np.log(np.array([p["S_seeds"][k] for k in keys])).T for p in points]  # (seeds, targets)
    fits = [general_fit(batch, [p["S"][k] for p in points]) for k in keys]
    rng = np.random.default_rng(seed)
    draws = np.empty((n_boot, len(keys)))
    for i in range(n_boot):
        steps = np.array([np.exp(lg[rng.integers(len(lg), size=len(lg))].mean(axis=0)) for lg in logs])
        draws[i] = [_refit_b_noise(batch, steps[:, k], fits[k]) for k in range(len(keys))]
    ratio = draws[:, -1] / draws[:, 0]
    lo, hi = np.percentile(draws, [2.5, 97.5], axis=0)
    return {"low": keys[0], "high": keys[-1], "ratio": round(fits[-1]["B_noise"] / fits[0]["B_noise"], 3),
            "ratio_lo": round(float(np.percentile(ratio, 2.5)), 3),
            "ratio_hi": round(float(np.percentile(ratio, 97.5)), 3), "n_boot": n_boot,
            "B_noise_interval": {k: [round(float(a), 2), round(float(b), 2)] for k, a, b in zip(keys, lo, hi, strict=True)}}


def _trend_job(job: tuple[str, str, list[dict]]) -> tuple[str, str, dict]:
    setting, axis, points = job
    return setting, axis, b_noise_trend(points)


def _split_point(p: dict) -> dict:
    out = {k: p[k] for k in ("n_prompts", "n_rollouts", "batch", "lr")}
    out["n_seeds"] = len(p["S_seeds"][str(TARGETS[0])])
    out.update({k: p[k] for k in ("S", "log_S_sd")})
    out["hours"] = {t: round(s * step_time(p["batch"]) / 3600, 5) for t, s in p["S"].items()}
    if "sgd_lr_scores" in p:
        out["sgd_lr_scores"] = p["sgd_lr_scores"]
    return out


def cross_axis(axes: dict, splits: list[dict]) -> dict:
    """Per target: the joint 1/B two-axis model fitted to both axes' truth points, and at each
    batch of ISO_BATCHES the splits' true S beside the model's (what that model would price)."""
    pts = {(p["n_prompts"], p["n_rollouts"]): p for a in AXES for p in axes[a]["points"]}
    n_p, n_r = zip(*pts, strict=True)
    out = {}
    for t in map(str, TARGETS):
        fit = two_axis_fit(n_p, n_r, [p["S"][t] for p in pts.values()])
        iso = {}
        for b in ISO_BATCHES:
            row = [p for p in splits if p["batch"] == b]
            iso[str(b)] = {"n_rollouts": [p["n_rollouts"] for p in row], "S": [p["S"][t] for p in row],
                           "model_S": [round(float(two_axis_steps(fit, p["n_prompts"], p["n_rollouts"])), 3)
                                       for p in row]}
        out[t] = {"two_axis_fit": fit, "iso_batch": iso}
    return out


def summarise(points: list[dict], mapper=map) -> dict:
    """Per setting: each axis (its points, the fits per target, the wall-clock optimum per target,
    B_simple per target as the geometric mean over the axis' sweep-grid points, the B_noise trend
    over targets with seed intervals), the splits (every pair of split_grid(): S, log sd and
    hours per target; the fastest split per target) and the cross-axis comparison. `mapper` runs
    the seed bootstraps (a pool's map)."""
    by_pair = {(p["setting"], p["n_prompts"], p["n_rollouts"]): p for p in points}
    out: dict = {}
    trend_jobs = []
    for setting in SETTINGS:
        out[setting] = {}
        for axis, spec in AXES.items():
            pts = [{k: v for k, v in by_pair[(setting, *pair)].items() if k != "setting"}
                   for pair in grid(axis, "truth")]
            batch = [p["batch"] for p in pts]
            sweep_b = {n_p * n_r for n_p, n_r in grid(axis)}
            fits, opt, bs = {}, {}, {}
            for t in map(str, TARGETS):
                steps = [p["S"][t] for p in pts]
                fits[t] = general_fit(batch, steps)
                hours = [s * step_time(b) / 3600 for s, b in zip(steps, batch, strict=True)]
                k = int(np.argmin(hours))
                opt[t] = {"batch": batch[k], "n_prompts": pts[k]["n_prompts"],
                          "n_rollouts": pts[k]["n_rollouts"], "hours": round(hours[k], 4),
                          "hours_by_batch": [round(h, 4) for h in hours]}
                vals = [p["b_simple"][t] for p in pts if p["batch"] in sweep_b and t in p["b_simple"]]
                bs[t] = round(float(np.exp(np.mean(np.log(vals)))), 1) if vals else None
            out[setting][axis] = {"phase": spec["phase"], "fixed": dict([spec["fixed"]]),
                                  "points": pts, "fits": fits, "wallclock_optimum": opt, "b_simple": bs}
            trend_jobs.append((setting, axis, pts))
        splits = [_split_point(by_pair[(setting, *pair)]) for pair in split_grid()]
        best = {t: min(splits, key=lambda p: p["hours"][t]) for t in map(str, TARGETS)}
        out[setting]["splits"] = {
            "points": splits,
            "optimum": {t: {k: p[k] for k in ("n_prompts", "n_rollouts", "batch")} | {"hours": p["hours"][t]}
                        for t, p in best.items()}}
        out[setting]["cross_axis"] = cross_axis(out[setting], splits)
    for setting, axis, trend in mapper(_trend_job, trend_jobs):
        out[setting][axis]["b_noise_trend"] = trend
    return out


def compute_truth(processes: int = 2) -> dict:
    """The whole truth (see the module doc), in `processes` worker processes."""
    import multiprocessing
    import time

    on_axis = {p for a in AXES for p in grid(a, "truth")}
    jobs = [(s, n_p, n_r, (n_p, n_r) in on_axis) for s in SETTINGS for n_p, n_r in split_grid()]
    jobs.sort(key=lambda j: j[1] * j[2])  # the slow small batches first, so the pool ends together
    t0 = time.time()
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        points = pool.map(truth_point, jobs, chunksize=1)
        t1 = time.time()
        settings = summarise(points, lambda f, jobs: pool.map(f, jobs, chunksize=1))
    return {"code_version": code_version(), "compute_seconds": round(time.time() - t0, 1),
            "compute_seconds_training": round(t1 - t0, 1), "processes": processes,
            "task": {"D": D, "L": L, "V": V, "n_train": N_TRAIN, "n_val": N_VAL, "task_seed": TASK_SEED,
                     "norm_sigma": NORM_SIGMA, "start_accuracy": round(expected_accuracy(
                         np.zeros((L, V, D)), task().x_val, task().y_val), 4)},
            "optimisers": {"lr_adam": LR_ADAM, "b_ref": B_REF, "lr_max_adam": LR_MAX_ADAM,
                           "sgd_lr_grid": list(SGD_LR_GRID), "tune_target": TUNE_TARGET,
                           "n_tune_seeds": N_TUNE_SEEDS, "momentum": MOMENTUM, "lr_momentum": LR_MOMENTUM},
            "step_time": {"form": "T = a + b * B seconds (median; lognormal per run and per step)",
                          "a": STEP_TIME_A, "b": STEP_TIME_B, "run_sigma": STEP_TIME_RUN_SIGMA,
                          "step_sigma": STEP_TIME_STEP_SIGMA},
            "targets": list(TARGETS), "n_seeds": N_TRUTH_SEEDS,
            "splits": {"n_rollouts": list(SPLIT_ROLLOUTS), "batch": list(SPLIT_BATCH), "n_seeds": N_SPLIT_SEEDS,
                       "iso_batches": list(ISO_BATCHES)},
            "aggregate": "S per target is the geometric mean over seeds (mean of log S) of the "
                         "exact crossing step (exact expected accuracy, interpolated between steps)",
            "b_simple_note": "tr(Sigma)/|G|^2 in samples at each target's first crossing, from "
                             f"{TRUTH_NOISE_PROMPTS} prompts x the run's n_rollouts; geometric mean "
                             f"over {N_NOISE_SEEDS} seeds, then over the axis' sweep-grid points",
            "b_noise_trend_note": "general-form B_noise per target; 95% intervals from "
                                  f"{N_TREND_BOOT} resamples of each batch size's seeds",
            "splits_note": "settings[s]['splits']['points']: every pair of split_grid() (hours = S x "
                           "step_time(B) / 3600); settings[s]['cross_axis'][target]: the 1/B two-axis "
                           "model fitted to both axes, and its S beside the truth at iso batches",
            "settings": settings}


def dumps(obj, indent: int = 0, width: int = 110) -> str:
    """JSON with every container that fits on one line written on one line (the truth's form)."""
    flat = json.dumps(obj)
    if not isinstance(obj, (dict, list)) or not obj or len(flat) + indent <= width:
        return flat
    pad = " " * (indent + 1)
    if isinstance(obj, dict):
        items = [f"{pad}{json.dumps(k)}: {dumps(v, indent + 1, width)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    return "[\n" + ",\n".join(pad + dumps(v, indent + 1, width) for v in obj) + "\n" + " " * indent + "]"


_TRUTH_CACHE: dict = {}


def load_truth(path: Path = TRUTH_PATH) -> dict:
    """pg_truth.json, read once per process and file version (treat it as read-only)."""
    path = Path(path)
    key = (str(path.resolve()), path.stat().st_mtime_ns)
    if key not in _TRUTH_CACHE:
        _TRUTH_CACHE.clear()
        _TRUTH_CACHE[key] = json.loads(path.read_text())
    return _TRUTH_CACHE[key]


def true_steps(setting: str, n_prompts: float, n_rollouts: int, target: float, truth: dict | None = None) -> float:
    """The many-seed steps to `target` at (n_prompts, n_rollouts): the truth's value on its grid
    (split_grid()), log-log interpolated along the batch at a fixed n_rollouts between grid points;
    nan off the grid (an n_rollouts it does not hold, a batch beyond its range at that n_rollouts)."""
    truth = truth or load_truth()
    key = str(float(target))
    if key not in map(str, truth["targets"]):
        raise KeyError(f"target {target} is not one of the truth's {truth['targets']}")
    row = [p for p in truth["settings"][setting]["splits"]["points"] if p["n_rollouts"] == n_rollouts]
    if not row:
        return math.nan
    batch = np.log([p["batch"] for p in row])
    steps = np.log([p["S"][key] for p in row])
    b = math.log(n_prompts * n_rollouts)
    return float(np.exp(np.interp(b, batch, steps, left=np.nan, right=np.nan)))


def true_hours(setting: str, n_prompts: float, n_rollouts: int, target: float, truth: dict | None = None) -> float:
    """true_steps times the step-time model's step time at that batch, in hours (nan off the grid)."""
    return true_steps(setting, n_prompts, n_rollouts, target, truth) * step_time(n_prompts * n_rollouts) / 3600


# --------------------------------------------------------------------------------------------
# Sweeps as a user runs them (the form of sweeps/form.py)
# --------------------------------------------------------------------------------------------
SECTIONS = {"prompts": ["01_load_runs", "02_steps_to_target", "03_training_curves", "05_gradient_noise",
                        "06_wall_clock", "08_plan"],
            "rollouts": ["01_load_runs", "02_steps_to_target", "03_training_curves", "04_two_axis",
                         "06_wall_clock", "08_plan"],
            "iso_batch": ["01_load_runs", "03_training_curves", "04_two_axis", "06_wall_clock"]}
# eval every test_freq steps: a few evals before the lowest target even at the largest batch
# (the truth's S_min at 0.3: about 20 steps for adam_fixed and sgd_momentum, 10 for adam_sqrt,
# 5 for sgd_tuned)
DEFAULT_TEST_FREQ = {"adam_fixed": 5, "adam_sqrt": 2, "sgd_tuned": 1, "sgd_momentum": 5}
GRAD_NOISE_EVERY = 20  # steps between logged gradient statistics (a multiple of every test_freq)


@dataclass
class PGSweep:
    """A sweep of the real trainer, in the form of sweeps/form.py (seed, runs, params,
    features, describe), plus what drew it: setting, axis, phase, budget (steps per run)."""
    seed: int
    runs: list[dict]
    params: dict[str, dict]
    features: list[str]
    setting: str
    axis: str
    phase: str
    budget: int

    def describe(self) -> str:
        sizes = sorted({r["n_prompts"] * r["n_rollouts"] for r in self.runs})
        states = sorted({r["state"] for r in self.runs})
        return (f"pg sweep {self.seed}: {self.setting} along {self.axis} ({self.phase}), "
                f"{len(self.runs)} runs, B {sizes[0]}-{sizes[-1]}, {self.budget} steps each, "
                f"states {states}")


# (imported here, below the learner: code_version hashes the source above its end marker, imports included)
from sweeps.form import run_id as _run_id  # noqa: E402


def sgd_lr(n_prompts: int, n_rollouts: int, truth: dict | None = None) -> float:
    """sgd_tuned's tuned rate at this (n_prompts, n_rollouts), from the truth's splits (which
    hold every pair a sweep of this module runs)."""
    truth = truth or load_truth()
    for p in truth["settings"]["sgd_tuned"]["splits"]["points"]:
        if (p["n_prompts"], p["n_rollouts"]) == (n_prompts, n_rollouts):
            return float(p["lr"])
    raise KeyError(f"no tuned sgd rate for np{n_prompts} nr{n_rollouts} in {TRUTH_PATH.name}")


def _budget(rng, setting: str, pairs: list[tuple[int, int]], truth: dict | None) -> int:
    """One total_training_steps for every run of a phase, as users set it: 0.9-1.6 x the truth's
    S at the top target at the phase grid's middle pair (so the small batches are censored there)."""
    mid = pairs[len(pairs) // 2]
    s_top = true_steps(setting, *mid, TARGETS[-1], truth) if truth is not None else 400.0
    return int(10 * round(rng.uniform(0.9, 1.6) * s_top / 10))


def _train_run(setting: str, phase: str, n_p: int, n_r: int, run_seed: int, budget: int, last: int,
               lr: float, test_freq: int, n_val: int, start: float, run_id: str, tags: list[str],
               grad_noise: bool = True) -> dict:
    """One run as verl logs it: trained for `last` of its `budget` steps (state running when
    last < budget), named cbs_<phase>_np<N>_nr<M>; the gradient statistics every GRAD_NOISE_EVERY
    steps, or (grad_noise False) only at step 0: four fifths of the training time go to them."""
    trace = train(task(), n_p, n_r, setting, run_seed, last, lr=lr, log=True, test_freq=test_freq,
                  n_val=n_val, grad_noise_every=GRAD_NOISE_EVERY if grad_noise else 10**9)
    name = f"cbs_{phase}_np{n_p}_nr{n_r}"
    config = {"data": {"train_batch_size": n_p},
              "actor_rollout_ref": {"rollout": {"n": n_r}, "actor": {"optim": {"lr": lr}}},
              "algorithm": {"adv_estimator": "grpo"},
              "trainer": {"n_gpus_per_node": 8, "nnodes": 1, "test_freq": test_freq,
                          "total_training_steps": budget, "experiment_name": name, "project_name": "cbs"},
              "seed": run_seed}
    return {"run_id": run_id, "name": name, "config": config, "state": "running" if last < budget else "finished",
            "rows": trace.rows, "start_time": start, "tags": tags, "phase": phase, "n_prompts": n_p,
            "n_rollouts": n_r, "setting": setting, "seed": run_seed}


def _lr(setting: str, n_p: int, n_r: int, truth: dict | None) -> float:
    return sgd_lr(n_p, n_r, truth) if setting == "sgd_tuned" else learning_rate(setting, n_p * n_r)


def trainer_sweep(seed: int, setting: str, axis: str, n_seeds: int = 2,
                  sizes: list[tuple[int, int]] | None = None, test_freq: int | None = None, n_val: int = N_VAL,
                  budget: int | None = None, n_running: int | None = None,
                  truth: dict | None = None, grad_noise: bool = True) -> PGSweep:
    """A sweep of the real trainer as a user runs it: every (n_prompts, n_rollouts) of `sizes`
    (default: the axis' sweep grid) x n_seeds seeds, each run trained for the same `budget`
    steps (default: drawn, see _budget; runs slower than it are right-censored at the top
    targets), `n_running` runs (default 1 or 2) still running (cut at 30-90% of the budget).
    Runs are logged with verl's keys, names and config, evaluated every test_freq steps (default
    DEFAULT_TEST_FREQ[setting]); seeds are disjoint from the truth's.
    sgd_tuned takes each batch's tuned rate from pg_truth.json (`truth` to pass it loaded).
    grad_noise False: no gradient statistics after step 0 (5x faster; the other logged draws
    then differ, the training does not)."""
    if setting not in SETTINGS or axis not in AXES:
        raise ValueError(f"setting must be one of {SETTINGS} and axis one of {tuple(AXES)}")
    rng = np.random.default_rng([7, seed, SETTINGS.index(setting), list(AXES).index(axis)])
    if truth is None and TRUTH_PATH.exists():
        truth = load_truth()
    if setting == "sgd_tuned" and truth is None:
        raise FileNotFoundError(f"{TRUTH_PATH.name} is missing: run python tests/sweeps trainer truth")
    phase = AXES[axis]["phase"]
    test_freq = int(test_freq or DEFAULT_TEST_FREQ[setting])
    pairs = [tuple(p) for p in (sizes or grid(axis))]
    budget = int(budget or _budget(rng, setting, grid(axis), truth))
    features = [f"{setting}:{axis}", f"budget:{budget}"]
    n_running = int(rng.integers(1, 3)) if n_running is None else n_running
    running = set(rng.choice(len(pairs) * n_seeds, size=min(n_running, len(pairs) * n_seeds),
                             replace=False).tolist())
    runs, start = [], 1.75e9 + seed * 1e5
    for i, (n_p, n_r) in enumerate(pairs):
        lr = _lr(setting, n_p, n_r, truth)
        for k in range(n_seeds):
            index = i * n_seeds + k
            last = int(budget * rng.uniform(0.3, 0.9)) if index in running else budget
            start += 3600
            runs.append(_train_run(setting, phase, n_p, n_r, 10_000 + 100 * seed + k,  # truth seeds < 200
                                   budget, last, lr, test_freq, n_val, start,
                                   _run_id(f"pg/{setting}/{axis}/{seed}/{n_p}/{n_r}/{k}"), [], grad_noise))
            if index in running:
                features.append("state:running")
    params = {phase: {"phase": phase, "title": f"Policy-gradient trainer, {setting}, {axis} axis",
                      "axis": axis, "metric": VAL_KEY, "prefer_source": None, "n_val": n_val,
                      "thresholds": list(TARGETS), "sections": list(SECTIONS[axis]),
                      "two_axis_phases": [phase] if axis == "rollouts" else []}}
    return PGSweep(seed, runs, params, features, setting, axis, phase, budget)


# --------------------------------------------------------------------------------------------
# A phase-2 study: several phases of one setting in one sweep
# --------------------------------------------------------------------------------------------
JOINT_PHASES = ("p1", "p2a", "p2b", "p2c")
TWO_AXIS_PHASES = ("p1", "p2a", "p2b")  # the axis phases a joint two-axis fit pools


def phase_pairs(phase: str, p2a_rollouts: int = 4, p2c_batch: int = 512) -> tuple[str, list[tuple[int, int]], dict]:
    """(axis, default (n_prompts, n_rollouts) grid, what is fixed) of a study phase: p1 the prompts
    axis at n_rollouts 8 (B 32-4096), p2a the prompts axis at n_rollouts = p2a_rollouts over the same
    batch sizes, p2b the rollouts axis at n_prompts 16 (n_rollouts 2-64), p2c the splits of one batch
    p2c_batch with n_rollouts 2-64. Every pair is in the truth's split_grid()."""
    if phase == "p1":
        return "prompts", grid("prompts"), {"n_rollouts": AXES["prompts"]["fixed"][1]}
    if phase == "p2a":
        pairs = [(b // p2a_rollouts, p2a_rollouts) for b in (n_p * n_r for n_p, n_r in grid("prompts"))
                 if b >= p2a_rollouts]
        return "prompts", pairs, {"n_rollouts": p2a_rollouts}
    if phase == "p2b":
        return "rollouts", grid("rollouts"), {"n_prompts": AXES["rollouts"]["fixed"][1]}
    if phase == "p2c":
        pairs = [(p2c_batch // r, r) for r in sorted(SPLIT_ROLLOUTS, reverse=True) if r <= 64 and p2c_batch >= r]
        return "iso_batch", pairs, {"total_batch": p2c_batch}
    raise ValueError(f"unknown study phase {phase!r}; known: {JOINT_PHASES}")


@dataclass
class JointPGSweep:
    """A phase-2 study of the real trainer in the form of sweeps/form.py (seed, runs, params,
    features, describe): runs of several phases of one setting. phases: phase -> {axis, pairs,
    fixed, budget}; shared: a crossing configuration's runs belong to every phase whose grid holds
    it (W&B tags, each phase's params select by tag), else each phase ran its own."""
    seed: int
    runs: list[dict]
    params: dict[str, dict]
    features: list[str]
    setting: str
    phases: dict[str, dict]
    shared: bool

    def describe(self) -> str:
        parts = [f"{ph} ({spec['axis']}, {len([r for r in self.runs if ph in r['phases']])} runs, "
                 f"{spec['budget']} steps)" for ph, spec in self.phases.items()]
        return (f"pg study {self.seed}: {self.setting}, {len(self.runs)} runs"
                f"{', crossing runs shared' if self.shared else ''}; {'; '.join(parts)}")


def joint_trainer_sweep(seed: int, setting: str, phases=JOINT_PHASES, n_seeds: int = 2,
                        sizes: dict | None = None, p2a_rollouts: int = 4, p2c_batch: int = 512,
                        share_runs: bool = True, test_freq: int | None = None, n_val: int = N_VAL,
                        budget: int | dict | None = None, n_running: int | None = None,
                        truth: dict | None = None) -> JointPGSweep:
    """A phase-2 study as a user runs it: for each phase of `phases` (see phase_pairs; `sizes`:
    phase -> its own pairs instead) n_seeds runs at each pair, trained for the phase's budget
    (`budget`: one for every phase, or phase -> steps; default drawn per phase as trainer_sweep
    draws it), `n_running` runs of the study (default 1 or 2) still running.
    share_runs (default): the run at a pair two phases cross (16x8 of p1 and p2b, 64x8 of p1 and
    p2c, ...) is trained once, by the first phase that lists it and with its budget, named for
    that phase, tagged with every phase it belongs to; every phase's params then `select` its runs
    by tag (a run may belong to several phases: the snapshot's `phases` column lists them). Without
    it each phase trains its own runs (other seeds) and selects them by name.
    p2b's params (and p2c's) name the study's axis phases in `two_axis_phases`."""
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}")
    if not 1 <= n_seeds <= 10:
        raise ValueError("n_seeds must be 1-10 (run seeds are 10 apart per phase)")
    phases = tuple(phases)
    rng = np.random.default_rng([8, seed, SETTINGS.index(setting)])
    truth = truth if truth is not None else (load_truth() if TRUTH_PATH.exists() else None)
    if setting == "sgd_tuned" and truth is None:
        raise FileNotFoundError(f"{TRUTH_PATH.name} is missing: run python tests/sweeps trainer truth")
    test_freq = int(test_freq or DEFAULT_TEST_FREQ[setting])
    specs: dict[str, dict] = {}
    for ph in phases:
        axis, default, fixed = phase_pairs(ph, p2a_rollouts, p2c_batch)
        pairs = [tuple(p) for p in (sizes or {}).get(ph, default)]
        steps = budget.get(ph) if isinstance(budget, dict) else budget
        specs[ph] = {"axis": axis, "pairs": pairs, "fixed": fixed,
                     "budget": int(steps or _budget(rng, setting, pairs, truth))}
    # the runs to train: (phase that trains it, pair, seed index) -> every phase it belongs to
    owners: dict[tuple, list[str]] = {}
    for ph in phases:
        for pair in specs[ph]["pairs"]:
            for k in range(n_seeds):
                first = next((q for q in phases if share_runs and pair in specs[q]["pairs"]), ph)
                owners.setdefault((first, pair, k), []).append(ph)
    n_running = int(rng.integers(1, 3)) if n_running is None else n_running
    running = set(rng.choice(len(owners), size=min(n_running, len(owners)), replace=False).tolist())
    runs, start = [], 1.76e9 + seed * 1e5
    features = [f"{setting}:study", *(f"budget:{ph}:{s['budget']}" for ph, s in specs.items())]
    for index, ((ph, (n_p, n_r), k), members) in enumerate(owners.items()):
        b = specs[ph]["budget"]
        last = int(b * rng.uniform(0.3, 0.9)) if index in running else b
        start += 3600
        run = _train_run(setting, ph, n_p, n_r, 1_000_000 + 1000 * seed + 10 * phases.index(ph) + k, b, last,
                         _lr(setting, n_p, n_r, truth), test_freq, n_val, start,
                         _run_id(f"pgstudy/{setting}/{seed}/{ph}/{n_p}/{n_r}/{k}"),
                         list(members) if share_runs else [])
        run["phases"] = list(members)
        runs.append(run)
        if index in running:
            features.append("state:running")
        if len(members) > 1:
            features.append("shared_run")
    joint = [q for q in TWO_AXIS_PHASES if q in phases]
    params = {}
    for ph, spec in specs.items():
        params[ph] = {"phase": ph, "title": f"Policy-gradient trainer, {setting}, {ph} ({spec['axis']}, "
                                            + ", ".join(f"{k} = {v}" for k, v in spec["fixed"].items()) + ")",
                      "axis": spec["axis"], "metric": VAL_KEY, "prefer_source": None, "n_val": n_val,
                      "thresholds": list(TARGETS), "sections": list(SECTIONS[spec["axis"]]),
                      "two_axis_phases": list(joint) if spec["axis"] in ("rollouts", "iso_batch") else []}
        if share_runs:
            params[ph]["select"] = {"tags": [ph]}
    return JointPGSweep(seed, runs, params, features, setting, specs, share_runs)


# --------------------------------------------------------------------------------------------
# A sweep as it was while it ran
# --------------------------------------------------------------------------------------------
def sweep_at(sweep, hours: float):
    """The sweep as it stood `hours` after every run started together: each run keeps the rows
    it had logged by then (its progress is its own logged step times, `timing_s/step`, summed:
    the step-time model with the run's speed), and a run cut before its last logged step is
    `running`. Works on any sweep of this module or of sweeps.generated (a dataclass with `runs`)."""
    from dataclasses import replace

    limit = float(hours) * 3600
    runs = []
    for run in sweep.runs:
        elapsed, kept = 0.0, []
        for row in run["rows"]:
            t = row.get("timing_s/step")
            elapsed += float(t) if isinstance(t, (int, float)) and math.isfinite(t) else 0.0
            if elapsed > limit:
                break
            kept.append(row)
        cut = len(kept) < len(run["rows"])
        runs.append({**run, "rows": kept, "state": "running" if cut else run["state"]})
    return replace(sweep, runs=runs, features=[*sweep.features, f"cut_at:{hours}h"])


def elapsed_hours(run: dict) -> float:
    """A run's wall clock so far: its logged step times summed, in hours."""
    return sum(float(r["timing_s/step"]) for r in run["rows"] if "timing_s/step" in r) / 3600


SWEEP_CLASSES = tuple((s, a) for s in SETTINGS for a in AXES)


def _sweep_job(job: tuple):
    seed, setting, axis, kwargs = job
    if axis == "study":
        return joint_trainer_sweep(seed, setting, **kwargs)
    return trainer_sweep(seed, setting, axis, **kwargs)


def trainer_sweeps(seeds, classes=SWEEP_CLASSES, processes: int = 2, **kwargs) -> list:
    """trainer_sweep for every seed of `seeds` and every (setting, axis) of `classes` (axis
    "study": joint_trainer_sweep of that setting, kwargs then its keywords), in `processes`
    worker processes (25-60 s a sweep on one busy core, a default study about as long), in (seed,
    class) order."""
    import multiprocessing

    truth = kwargs.pop("truth", None) or load_truth()
    jobs = [(seed, s, a, {"truth": truth, **kwargs}) for seed in seeds for s, a in classes]
    if processes <= 1:
        return [_sweep_job(j) for j in jobs]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        return pool.map(_sweep_job, jobs, chunksize=1)


def accuracy_series(run: dict) -> list[tuple[int, float]]:
    """(step, logged validation accuracy) of a raw run, in log order."""
    return [(int(r["_step"]), float(r[VAL_KEY])) for r in run["rows"] if VAL_KEY in r]


# --------------------------------------------------------------------------------------------
# What the truth says, in numbers (python tests/sweeps trainer summary | splits SETTING TARGET)
# --------------------------------------------------------------------------------------------
def summary_text(truth: dict | None = None) -> str:
    """Per setting and axis: alpha and B_noise per target, B_noise's rise with its seed interval;
    per setting: the splits of B = 512 (true S and the two-axis 1/B model's) at every target."""
    truth = truth or load_truth()
    out = []
    for setting in SETTINGS:
        block = truth["settings"][setting]
        for axis in AXES:
            a = block[axis]
            tr = a["b_noise_trend"]
            fits = " ".join(f"{t}: a={f['alpha']:.2f} Bn={f['B_noise']:.0f}" for t, f in a["fits"].items())
            out.append(f"{setting:13s} {axis:8s} {fits} | rise {tr['ratio']:.2f} "
                       f"[{tr['ratio_lo']:.2f}, {tr['ratio_hi']:.2f}]")
        for t, c in block["cross_axis"].items():
            iso = c["iso_batch"]["512"]
            cells = " ".join(f"{512 // r}x{r}:{s:.0f}/{m:.0f}" for r, s, m in
                             zip(iso["n_rollouts"], iso["S"], iso["model_S"], strict=True))
            out.append(f"{'':13s} B=512 at {t} (true/1-over-B model): {cells}  rho={c['two_axis_fit']['rho']:.2f}")
    return "\n".join(out)


def splits_text(setting: str, target: float, truth: dict | None = None, what: str = "S") -> str:
    """The truth's 2-D table of one setting at one target: rows n_rollouts, columns batch; `what`
    S (steps) or hours."""
    truth = truth or load_truth()
    pts = truth["settings"][setting]["splits"]["points"]
    batches = sorted({p["batch"] for p in pts})
    key = str(float(target))
    lines = ["n_r \\ B " + "".join(f"{b:>8d}" for b in batches)]
    for r in sorted({p["n_rollouts"] for p in pts}):
        row = {p["batch"]: p[what][key] for p in pts if p["n_rollouts"] == r}
        lines.append(f"{r:>7d} " + "".join(f"{row[b]:>8.{0 if what == 'S' else 2}f}" if b in row else " " * 8
                                           for b in batches))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv == ["truth"]:
        truth = compute_truth()
        text = dumps(truth)
        TRUTH_PATH.write_text(text + "\n")
        print(f"{TRUTH_PATH.name}: {len(text) // 1024} KB in {truth['compute_seconds']:.0f} s")
        print(summary_text(truth))
        return 0
    if argv == ["summary"]:
        print(summary_text())
        return 0
    if len(argv) in (3, 4) and argv[0] == "splits":
        print(splits_text(argv[1], float(argv[2]), what=argv[3] if len(argv) == 4 else "S"))
        return 0
    if len(argv) == 4 and argv[0] == "describe":
        print(trainer_sweep(int(argv[3]), argv[1], argv[2]).describe())
        return 0
    if len(argv) == 5 and argv[0] == "offline":
        from sweeps.form import write_offline_runs  # the demo's real SDK writer

        kwargs = json.loads(os.environ.get("PG_SWEEP_ARGS", "{}"))
        sweep = (joint_trainer_sweep(int(argv[3]), argv[1], **kwargs) if argv[2] == "study"
                 else trainer_sweep(int(argv[3]), argv[1], argv[2], **kwargs))
        paths = write_offline_runs(sweep, Path(argv[4]))
        print(f"{len(paths)} offline runs written")
        return 0
    print(__doc__, file=sys.stderr)
    return 2

