# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Which runs enter this phase's analysis, and which were left out?
#
# Every run of the source is either in the snapshot (`outputs/data/`) or listed in
# `excluded_runs.csv` with its reason. This notebook shows the phase's runs, their batch sizes
# and flags, the validation metric the analysis will use, and the runs that were left out.

# %% tags=["parameters"]
phase = "p1"
out_dir = "outputs"
params_dir = "params"
source = "data/demo"
n_bootstrap = 1000

# %%

import pandas as pd

import cbs_helpers as ch

out, params_dir, source = ch.project_paths(out_dir, params_dir, source)
params = ch.load_phase_params(params_dir, phase)
runs_all, history_all, manifest = ch.open_snapshot(out, source)
excluded = ch.read_excluded_runs(out)
runs, history, metric = ch.phase_runs(runs_all, history_all, params)
runs = runs.sort_values(["total_batch", "n_prompts", "replicate"])
print(f"{params['title']}: {len(runs)} runs in the snapshot of {manifest['source']!r} "
      f"({manifest['n_runs']} runs over all phases, {manifest['n_excluded']} excluded).")

# %% [markdown]
# ## The runs and their batch sizes
# `B = n_prompts × n_rollouts` samples per optimizer step. Runs that share a name are
# replicates (seeds or reruns) and are kept side by side; crashed runs keep their history.

# %%
assert (runs["total_batch"] == runs["n_prompts"] * runs["n_rollouts"]).all()
n_eval = history.dropna(subset=[metric]).groupby("run_id").size().rename("n_eval")
table = runs.join(n_eval, on="run_id")
table["n_eval"] = table["n_eval"].fillna(0).astype(int)
table = table[["name", "replicate", "n_prompts", "n_rollouts", "total_batch", "state",
               "last_step", "n_eval", "flags"]]
ch.save_table(table, out / phase / "tables", "runs")
table.set_index("name")

# %% [markdown]
# ## Runs left out of the analysis, with their reasons
# Those of this phase, and those whose phase could not be told at all (they may belong here).

# %%
parsed = excluded["name"].map(lambda n: ch.parse_run_name(str(n))["phase"])
excluded_here = excluded[parsed == phase]
unassigned = excluded[parsed.isna()]
n_other = len(excluded) - len(excluded_here) - len(unassigned)
print(f"{len(excluded_here)} run(s) of phase {phase} excluded, {len(unassigned)} input(s) with no "
      f"recognisable phase; {n_other} excluded run(s) of other phases are listed in "
      "data/excluded_runs.csv of the output directory.")
pd.concat([excluded_here.assign(phase=phase), unassigned.assign(phase="unknown")])[
    ["phase", "name", "run_id", "source", "reason"]].set_index("phase")

# %% [markdown]
# ## Answer

# %%
batch_sizes = sorted(runs["total_batch"].unique())
n_rep = int((runs["replicate"] > 0).sum())
not_finished = runs[runs["state"] != "finished"]
flagged = runs[runs["flags"].astype(str) != ""]
print(f"Phase {phase}: {len(runs)} runs enter the analysis at {len(batch_sizes)} batch sizes "
      f"(B = {batch_sizes[0]} to {batch_sizes[-1]}), {n_rep} of them extra replicates; "
      f"{len(not_finished)} did not finish ({', '.join(sorted(not_finished['state'].unique())) or 'none'}); "
      f"{len(flagged)} carry flags; {len(excluded_here)} were excluded. "
      f"Validation metric: {metric}.")
