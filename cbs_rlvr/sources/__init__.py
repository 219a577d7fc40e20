"""The sources layer: where runs come from, and the snapshot that keeps them. Readers for W&B
offline files (`wandb_file`: the .wandb decoder, no network), export directories (`export_dir`),
and a W&B server (`wandb_api` + `wandb_graphql` at the request floor, `wandb_limits`: its time
bounds, retries and errors); each hands raw runs to the data layer. The snapshot (`snapshot`,
`manifest`) is built from one source, written atomically and read back, lazily per phase.

It imports the data layer and the base modules, never the measure, fit, plan, report or build
layers.
"""
