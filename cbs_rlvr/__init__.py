"""cbs_rlvr: the machinery behind the CBS-RLVR notebooks (see the README's "Layout").

Data flows one way: sources -> runs -> snapshot; measure -> fit -> bootstrap -> axes / noise /
wallclock; figures and tables take results; build runs the notebooks and imports no analysis.
Notebooks import `cbs_helpers` only.
"""

from .paths import PROJECT_DIR  # noqa: F401
