"""python tests/sweeps KIND ARGS...: the command line of one generator (see __init__)."""

import importlib
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # the trainer's tiny matrices: BLAS threads only cost
sys.path[0] = str(Path(__file__).resolve().parents[1])  # tests/: the package and testkit importable

KINDS = ("generated", "habits", "trainer", "hardening", "scale")

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in KINDS:
        print(f"usage: python tests/sweeps {{{','.join(KINDS)}}} ARGS...", file=sys.stderr)
        sys.exit(2)
    sys.exit(importlib.import_module(f"sweeps.{sys.argv[1]}").main(sys.argv[2:]))
