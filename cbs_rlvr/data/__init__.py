"""The data layer: a run as the analysis sees it. Logged rows become one history table per run
(`history`: the keys kept, the steps, the flags), names and verl configs become run metadata and
the sweep's tables (`runs`), runs restarted from a checkpoint are stitched back into one
(`resume`), and a phase's runs are chosen by name, tags, group, pattern or config (`select`).

It imports only the base modules (errors, params, paths); the sources hand it raw runs, and every
layer above reads its tables.
"""
