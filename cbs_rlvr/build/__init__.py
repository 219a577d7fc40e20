"""The build layer: how reports get made. `make report`'s build (`builder`: the snapshot, the
staleness of each notebook, the jobs, the index), papermill on kernels kept warm (`execute`), one
writer per output directory (`outlock`), where a run may write (`handrun`: only the build writes
OUT, a hand run writes scratch/), JupyterLab's settings and working copies (`lab`), and a
notebook as it is committed (`clean_notebook`, standard library only: the git filter runs it).

It drives the notebooks and renders their HTML through the report layer; it runs no analysis itself.
"""
