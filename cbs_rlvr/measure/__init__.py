"""The measure layer: what each run shows, before any model. The steps S(B) and samples E(B) each
run needs to reach each target, with censoring for runs that have not reached it (`crossings`:
an isotonic crossing of the eval series), the best learning rate at each batch size where several
ran (`envelope`), and the wall clock: step times, their model, and hours to each target
(`wallclock`).

It imports the data layer and the base modules, never a fit, the plan, the report or the build.
"""
