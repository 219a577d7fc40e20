"""Every sweep the tests and benchmarks draw, in one package and one form.

Each generator returns a sweep in the form of `form.py` (raw runs as a W&B source gives them, plus
one params dict per phase), and `form.py` alone turns a sweep into a source: snapshot tables in
memory, an export directory, real W&B offline runs (the wandb SDK, through the demo's writer) or
params files. The generators, from the cheapest to the most real:

- `formula`: S(B) = S_min (1 + (B_noise/B)^alpha) by construction: the fit's arrays with a known
  truth (`pooled_arrays`) and GRPO-style runs in the snapshot schema (`grpo_sweep`);
- `generated`: plausible sweeps drawn from a seed on the demo's model (data/demo/make_demo.py),
  with the faults and verl habits real projects leave (the crash hunts);
- `habits`: one fixed sweep with verl's habits and a known truth, written by the SDK;
- `trainer`: a small real policy-gradient learner (no formula: what training does), with its
  many-seed truth in pg_truth.json;
- `hardening`: damaged W&B files (bad input on purpose);
- `scale`: large verl-style export directories for the benchmarks.

From the shell (tests/ is put on the path): `python tests/sweeps KIND ARGS...`, KIND one of
generated, habits, trainer, hardening, scale (each prints its usage without arguments).
"""
