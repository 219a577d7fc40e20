"""cbs_rlvr: the machinery behind the CBS-RLVR notebooks (see the README's Layout section).

Data flows one way: sources -> runs -> snapshot; measure -> fit -> bootstrap -> axes / noise /
wallclock; figures and tables take results; build runs the notebooks and imports no analysis.
Notebooks import `cbs_helpers` only.
"""

from pathlib import Path

#: The project root (the checkout): relative default paths resolve against it.
PROJECT_DIR = Path(__file__).resolve().parent.parent
