# cbs-rlvr. The two commands:   make report   (build every report; the demo data by default)
#                                make test     (run the test suite)
# Both create .venv in the project root (unless a virtual or conda environment is active) and
# install the dependencies from pyproject.toml first. `make help` lists every target and variable.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

SOURCE ?= data/demo
OUT ?= outputs
PARAMS ?= params
PHASES ?=
JOBS ?= 2
N_BOOTSTRAP ?= 1000
NB ?=
PHASE ?=
WAIT ?= 1
# Paths reach the recipes through the environment, never spliced into a shell line: spaces,
# quotes and `$` in SOURCE, OUT or PARAMS are data ($(value) keeps a `$` as typed).
export CBS_MAKE_SOURCE = $(value SOURCE)
export CBS_MAKE_OUT = $(value OUT)
export CBS_MAKE_PARAMS = $(value PARAMS)
export CBS_MAKE_PHASES = $(value PHASES)

# --- environment --------------------------------------------------------------------------
ifneq ($(VIRTUAL_ENV),)
ENV_DIR := $(VIRTUAL_ENV)
else ifneq ($(CONDA_PREFIX),)
ENV_DIR := $(CONDA_PREFIX)
else
ENV_DIR := .venv
endif
PY := $(ENV_DIR)/bin/python
STAMP := $(ENV_DIR)/.cbs-rlvr-installed

$(STAMP): pyproject.toml
	@python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "cbs-rlvr needs Python >= 3.10")' \
	  || { [ -x "$(PY)" ] && "$(PY)" -c 'import sys; assert sys.version_info >= (3, 10)'; }
	@test -x "$(PY)" || python3 -m venv "$(ENV_DIR)"
	"$(PY)" -m pip install --quiet --disable-pip-version-check --upgrade pip
	"$(PY)" -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

# JupyterLab (the `lab` extra) and the project's Lab settings (jupyter-config/) in the environment
LAB_STAMP := $(ENV_DIR)/.cbs-rlvr-lab-installed
$(LAB_STAMP): $(STAMP) jupyter-config/labconfig/default_setting_overrides.json
	"$(PY)" -m pip install --quiet --disable-pip-version-check -e '.[test,lab]'
	"$(PY)" -m cbs_rlvr.lab install-config
	@touch $@

# The committed .ipynb carries its kernelspec and jupytext's header, cells only their tags: no
# outputs, no language_info (Lab adds it, with the Python version, on opening). The pre-commit
# hook runs the same nbconvert options.
CLEAN_NOTEBOOK := -m nbconvert --clear-output --inplace --ClearMetadataPreprocessor.enabled=True \
  --ClearMetadataPreprocessor.preserve_nb_metadata_mask=kernelspec \
  --ClearMetadataPreprocessor.preserve_nb_metadata_mask=jupytext \
  --ClearMetadataPreprocessor.preserve_cell_metadata_mask=tags

.PHONY: help setup report snapshot test lint bench sync-notebooks screenshots demo-data clean lab notebook

help:
	@echo "Targets:"
	@echo "  make report          bring the snapshot up to date, run the section notebooks whose"
	@echo "                       notebook, params, data or code changed, write the HTML reports"
	@echo "                       and OUT/index.html (a no-op when nothing changed)"
	@echo "  make snapshot        only read SOURCE into OUT/data/"
	@echo "  make test            run the test suite"
	@echo "  make lint            ruff over the project"
	@echo "  make bench           benchmarks -> benchmarks/results.md"
	@echo "  make sync-notebooks  re-pair notebooks/*.py with their .ipynb twins, outputs and"
	@echo "                       editor metadata cleared"
	@echo "  make lab             install JupyterLab into the environment and start it at the project root"
	@echo "  make notebook NB=02 PHASE=p2b   open a working copy of a section notebook in Lab"
	@echo "                       (scratch/, untracked; its outputs in scratch/, not OUT)"
	@echo "  make screenshots     headless-Chromium screenshots of OUT's index and one report -> docs/"
	@echo "  make demo-data       regenerate the bundled demo sweep (data/demo)"
	@echo "  make setup           create the environment only"
	@echo "  make help            this list"
	@echo "  make clean           remove OUT's generated reports and snapshot"
	@echo "Variables (current value):"
	@echo "  SOURCE=$$CBS_MAKE_SOURCE   wandb:<entity>/<project>, a directory of W&B offline runs, or an export directory"
	@echo "  OUT=$$CBS_MAKE_OUT   output directory"
	@echo "  PARAMS=$$CBS_MAKE_PARAMS   directory of the phases' <phase>.yaml files"
	@echo "  PHASES=\"$$CBS_MAKE_PHASES\"   phases to build, e.g. PHASES=\"p1 p2b\" (empty: every params file)"
	@echo "  JOBS=$(JOBS)   notebooks run at once"
	@echo "  N_BOOTSTRAP=$(N_BOOTSTRAP)   bootstrap resamples per fit"
	@echo "  NB=$(NB) PHASE=$(PHASE)   make notebook's section and phase (SOURCE, PARAMS, N_BOOTSTRAP apply too)"
	@echo "  LAB_ARGS=\"$(LAB_ARGS)\"   more options for jupyter lab (make lab, make notebook), e.g. \"--no-browser --port=8899\""
	@echo "  WAIT=$(WAIT)   1: wait while another build writes OUT; 0: exit 1 at once"
	@echo "Relative paths resolve against the project root. More: README.md."

setup: $(STAMP)

report: $(STAMP)
	@"$(PY)" -m cbs_rlvr report --source "$$CBS_MAKE_SOURCE" --out "$$CBS_MAKE_OUT" \
	  --params-dir "$$CBS_MAKE_PARAMS" --phases "$$CBS_MAKE_PHASES" --jobs "$(JOBS)" \
	  --n-bootstrap "$(N_BOOTSTRAP)" $(if $(filter 0 no false,$(WAIT)),--no-wait)

snapshot: $(STAMP)
	@"$(PY)" -m cbs_rlvr snapshot --source "$$CBS_MAKE_SOURCE" --out "$$CBS_MAKE_OUT" \
	  --params-dir "$$CBS_MAKE_PARAMS" $(if $(filter 0 no false,$(WAIT)),--no-wait)

# --- checks --------------------------------------------------------------------------------
# the suite's files run in parallel, one file per worker (its module fixtures stay shared)
test: $(STAMP)
	"$(PY)" -m pytest -q -n auto --dist loadfile

lint: $(STAMP)
	"$(PY)" -m ruff check .

bench: $(STAMP)
	"$(PY)" benchmarks/run.py
	"$(PY)" tests/decision_acceptance.py 0,1,2,3 200 benchmarks/decision_acceptance.md

sync-notebooks: $(STAMP)
	"$(PY)" -m jupytext --sync notebooks/*.py
	"$(PY)" $(CLEAN_NOTEBOOK) notebooks/*.ipynb

screenshots: $(STAMP)
	"$(PY)" -m cbs_rlvr screenshots --out "$$CBS_MAKE_OUT" --dest docs

# --- JupyterLab ---------------------------------------------------------------------------
# LAB_ARGS: more options for jupyter lab (e.g. --no-browser --port=8899); as root (containers)
# Lab needs --allow-root
LAB_ARGS ?=
LAB := "$(PY)" -m jupyterlab --ServerApp.root_dir="$(CURDIR)" $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

lab: $(LAB_STAMP)
	$(LAB)

notebook: $(LAB_STAMP)
	@copy="$$("$(PY)" -m cbs_rlvr.lab copy --nb "$(NB)" --phase "$(PHASE)" --source "$$CBS_MAKE_SOURCE" \
	  --params-dir "$$CBS_MAKE_PARAMS" --n-bootstrap "$(N_BOOTSTRAP)")" \
	  && $(LAB) "$$copy"

demo-data: $(STAMP)
	"$(PY)" data/demo/make_demo.py

clean:
	rm -rf "$$CBS_MAKE_OUT"/*/ "$$CBS_MAKE_OUT/index.html" "$$CBS_MAKE_OUT/.build"
