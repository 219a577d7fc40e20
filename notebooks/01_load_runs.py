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
# Every run of the source is either in the snapshot (`data/` of the output directory) or listed in
# `excluded_runs.csv` with its reason. This notebook shows how the phase selects its runs, their
# batch sizes, learning rates and updates per step, the runs that were stitched together after a
# restart from a checkpoint, the validation metric the analysis will use, and the runs left out.
#
# **Another phase:** its report is in the index beside this one. To explore it in JupyterLab,
# `make notebook NB=01 PHASE=p2b` opens a working copy for that phase in `scratch/`; or
# set `phase` below and run: a run that is not `make report`'s writes to `scratch/`, never
# to `outputs/`.

# %% tags=["parameters"]
phase: str = "p1"  # the phase: params/<phase>.yaml
out_dir: str = ""  # empty: a hand run, written to scratch/ (only make report writes outputs/)
params_dir: str = "params"  # the folder of the phases' params files
source: str = "data/demo"  # wandb:<entity>/<project>, a folder of W&B offline runs, or an export folder
n_bootstrap: int = 1000  # bootstrap resamples per fit

# %%
import pandas as pd
from IPython.display import Markdown, display

import cbs_helpers as ch

s = ch.section("01_load_runs", phase, out_dir, params_dir, source, columns=[ch.GEN_BATCHES_KEY],
               n_bootstrap=n_bootstrap)
out, params, manifest, runs, history, metric = s.out, s.params, s.manifest, s.runs, s.history, s.metric
excluded = ch.read_excluded_runs(out)
runs = runs.sort_values(["total_batch", "n_prompts", "replicate"])
print(f"{params['title']}: {len(runs)} runs in the snapshot of {manifest['source']!r} "
      f"({manifest['n_runs']} runs over all phases, {manifest['n_excluded']} excluded). "
      f"Runs are selected {ch.selection_description(params)}.")

# %% [markdown]
# ## The runs and their batch sizes
# `B = n_prompts × n_rollouts` samples per rollout step: the prompts a step draws times the answers
# sampled per prompt, both read from each run's verl config and, where the config lacks them, from
# the run's name. Runs that share a name, learning rate and updates per step are replicates (seeds
# or reruns) and are kept side by side; crashed runs keep their history. `updates` is the number of
# optimizer updates verl makes per rollout step: the step's prompts divided by the prompts of one
# mini-batch, times the passes (epochs) over the step's samples.
#
# <details><summary>Where in a verl config</summary>
# n_prompts is <code>data.train_batch_size</code>, n_rollouts <code>actor_rollout_ref.rollout.n</code>;
# updates per step are <code>data.train_batch_size / actor_rollout_ref.actor.ppo_mini_batch_size ×
# actor_rollout_ref.actor.ppo_epochs</code>; a run's GPU count (06, 08) is
# <code>trainer.n_gpus_per_node × trainer.nnodes</code>.
# </details>

# %%
assert (runs["total_batch"] == runs["n_prompts"] * runs["n_rollouts"]).all()
n_eval = history.dropna(subset=[metric]).groupby("run_id").size().rename("n_eval")
table = runs.join(n_eval, on="run_id")
table["n_eval"] = table["n_eval"].fillna(0).astype(int)
table["updates"] = table["updates_per_step"]
table["tags"] = table["tags"].map(lambda t: ", ".join(ch.normalise_tags(t)))
table = table[["name", "replicate", "n_prompts", "n_rollouts", "total_batch", "lr", "updates",
               "state", "last_step", "n_eval", "n_segments", "tags", "flags"]]
ch.save_table(table, out / phase / "tables", "runs")
shown = table.assign(lr=table["lr"].map(lambda v: f"{v:.3g}" if pd.notna(v) else None))
display(ch.reader_table(shown.set_index("name")))
display(Markdown("Run states:" + ch.legend_markdown(ch.state_legend(runs["state"]))
                 + ("\n\nFlags:" + ch.legend_markdown(ch.flag_legend(runs["flags"]))
                    if runs["flags"].astype(str).str.len().gt(0).any() else "")))

# %% [markdown]
# ## Runs resumed from a checkpoint, stitched into one
# verl starts a new W&B run with the same name when a job restarts from a checkpoint; the restart
# validates at the checkpoint step and trains on from there. Such a run is one training run in two
# (or more) pieces, not two replicates: the pieces are joined at the checkpoint step, and the
# crashed run's steps after its checkpoint, which were trained again, are dropped.

# %%
resumed = ch.resumed_runs(runs)
for row in resumed.itertuples():
    ids = row.segment_run_ids.split(";")
    print(f"{row.name}: {row.n_segments} W&B runs ({', '.join(ids)}) are one training run; it "
          f"restarted from the checkpoint at step {row.resumed_at.replace(';', ', ')} and reached step "
          f"{row.last_step} ({row.state}). The crashed run had trained {row.resume_lost_steps} step(s) "
          f"past its checkpoint ({row.resume_lost_time_s / 60:.1f} min), which were trained again and "
          "are not counted.")
if resumed.empty:
    print("No run of this phase was resumed from a checkpoint: no run of the same name starts after "
          "step 1, so every run here is a whole training run.")
ch.reader_table(resumed.set_index("name").round(1)) if len(resumed) else None

# %% [markdown]
# ## Learning rates and updates per step at each batch size
# Runs at one batch size with different learning rates (or other metaparameters the params name,
# `metaparameters`) are different configurations, not replicates: the fits use the best one at
# each batch size (see the steps-to-target report).

# %%
configs = ch.configuration_counts(runs, params["metaparameters"])
swept = configs[configs["n_configs"] > 1]
dynamic = "train/num_gen_batches" in history.columns and history["train/num_gen_batches"].notna().any()
from_config = runs["name"].map(lambda n: ch.parse_run_name(n)["n_prompts"] is None).sum()
mismatch = runs["flags"].astype(str).str.contains("config_name_mismatch").sum()
print("\n".join(ch.sweep_facts(configs, runs["updates_per_step"], dynamic, from_config, mismatch)))
ch.reader_table(configs.set_index("total_batch"))

# %% [markdown]
# ## Runs left out of the analysis, with their reasons
# Those named for this phase, and those that no phase selects (they may belong here: the reason
# says what would include them).

# %%
parsed = excluded["name"].map(lambda n: ch.parse_run_name(str(n))["phase"])
excluded_here = excluded[parsed == phase]
unassigned = excluded[parsed.isna()]
n_other = len(excluded) - len(excluded_here) - len(unassigned)
print(f"{len(excluded_here)} run(s) named for phase {phase} excluded, {len(unassigned)} input(s) with "
      f"no phase in their name and selected by no phase; {n_other} excluded run(s) of other phases "
      f"are listed in {ch.display_path(out / 'data' / 'excluded_runs.csv')}.")
left_out = pd.concat([excluded_here.assign(phase=phase), unassigned.assign(phase="unknown")])
left_out[["phase", "name", "run_id", "source", "reason"]].set_index("phase") if len(left_out) else None

# %% [markdown]
# ## Answer

# %%
batch_sizes = sorted(runs["total_batch"].unique())
n_rep = int((runs["replicate"] > 0).sum())
not_finished = runs[runs["state"] != "finished"]
flagged = runs[runs["flags"].astype(str) != ""]
print(f"Phase {phase}: {len(runs)} runs enter the analysis at {len(batch_sizes)} batch size(s) "
      f"(B = {ch.count(batch_sizes[0])} to {ch.count(batch_sizes[-1])}), {n_rep} of them extra replicates, "
      f"{len(resumed)} stitched from runs resumed after a crash, {len(swept)} batch size(s) with "
      f"several learning rates; {len(not_finished)} did not finish "
      f"({', '.join(sorted(not_finished['state'].unique())) or 'none'}); {len(flagged)} carry flags; "
      f"{len(excluded_here)} were excluded. Validation metric: {metric}.")
