# cbs-rlvr. The two commands:   make report   (build every report; the demo data by default)
#                                make test     (run the test suite)
# Both create .venv in the project root (unless a virtual or conda environment is active; never
# conda's base) and install from pyproject.toml first: `make report` what the reports need,
# `make test` also pytest, ruff and JupyterLab. `make help` lists every target and variable.
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
# Prerequisites: Python >= 3.10 with venv and pip (Debian/Ubuntu: apt install python3-venv), make,
# git. Chromium only for the suite's browser tests (apt install chromium).
ifneq ($(VIRTUAL_ENV),)
ENV_DIR := $(VIRTUAL_ENV)
else ifneq ($(CONDA_PREFIX),)
ENV_DIR := $(CONDA_PREFIX)
else
ENV_DIR := .venv
endif
PY := $(ENV_DIR)/bin/python
PIP := "$(PY)" -m pip install --quiet --disable-pip-version-check
# One stamp per set of packages: `make report` installs what reports need (pyproject's
# dependencies) and nothing more; the extras come with the targets that use them.
STAMP := $(ENV_DIR)/.cbs-rlvr-installed
LINT_STAMP := $(ENV_DIR)/.cbs-rlvr-lint-installed
TEST_STAMP := $(ENV_DIR)/.cbs-rlvr-test-installed
LAB_STAMP := $(ENV_DIR)/.cbs-rlvr-lab-installed
# the notebooks' clean filter in this clone's git config (.gitattributes): git sees a notebook
# run and saved in JupyterLab without its outputs and editor metadata. Cheap and idempotent.
GIT_FILTER := "$(PY)" -m cbs_rlvr.build.lab install-git-filter

# conda's base environment is conda's own: never install into it
define REFUSE_CONDA_BASE
@if [ "$(ENV_DIR)" = "$$CONDA_PREFIX" ] && [ -z "$$VIRTUAL_ENV" ] \
     && { [ "$$CONDA_DEFAULT_ENV" = base ] || [ -d "$$CONDA_PREFIX/condabin" ]; }; then \
  echo "error: conda's base environment is active ($$CONDA_PREFIX); cbs-rlvr does not install into it. Either" >&2; \
  echo "  conda env create -f environment.yml && conda activate cbs-rlvr    then make $(or $(MAKECMDGOALS),setup) again, or" >&2; \
  echo "  make $(or $(MAKECMDGOALS),setup) ENV_DIR=.venv    (a virtual environment in the project, made with base's python3)" >&2; \
  exit 2; fi
endef

$(STAMP): pyproject.toml
	$(REFUSE_CONDA_BASE)
	@python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "cbs-rlvr needs Python >= 3.10")' \
	  || { [ -x "$(PY)" ] && "$(PY)" -c 'import sys; assert sys.version_info >= (3, 10)'; }
	@test -x "$(PY)" || python3 -m venv "$(ENV_DIR)" || { [ "$(ENV_DIR)" != .venv ] || rm -rf .venv; \
	  echo "error: python3 -m venv failed; on Debian/Ubuntu: sudo apt install python3-venv, then make again" >&2; exit 2; }
	@echo "installing what the reports need into $(ENV_DIR) (the first time: 1-4 min, mostly downloads)"
	$(PIP) --upgrade pip
	$(PIP) -e .
	@$(GIT_FILTER)
	@touch $@

$(LINT_STAMP): $(STAMP)
	$(PIP) -e '.[lint]'
	@touch $@

# pytest, ruff, JupyterLab and websocket-client (a test drives a real Lab in headless Chromium)
$(TEST_STAMP): $(STAMP)
	@echo "installing the test tools into $(ENV_DIR) (the first time: about 1 min)"
	$(PIP) -e '.[test]'
	@touch $@

# JupyterLab (the `lab` extra) and the project's Lab settings (jupyter-config/) in the environment
$(LAB_STAMP): $(STAMP) jupyter-config/labconfig/default_setting_overrides.json jupyter-config/jupyter_server_config.json
	@echo "installing JupyterLab into $(ENV_DIR) (the first time: about 1 min)"
	$(PIP) -e '.[lab]'
	"$(PY)" -m cbs_rlvr.build.lab install-config
	@touch $@

# The committed .ipynb carries its kernelspec and jupytext's header, cells only their tags: no
# outputs, no language_info (Lab adds it, with the Python version, on opening). One
# implementation, cbs_rlvr/build/clean_notebook.py, serves `make sync-notebooks`, the git clean filter
# and the pre-commit hook.
CLEAN_NOTEBOOK := cbs_rlvr/build/clean_notebook.py

.PHONY: help setup report snapshot test test-quick lint bench sync-notebooks screenshots demo-data clean lab notebook

help:
	@echo "First run: make report takes 3-4 min (creating .venv and installing what the reports"
	@echo "need, about 2 min; then the demo, under 2 min); make test about 1 min more to install"
	@echo "pytest, ruff and JupyterLab, then about 8 min for the suite on 2 idle cores (longer on"
	@echo "a busy machine; make test-quick under 1 min). Later runs skip the install."
	@echo "Needs Python >= 3.10 with venv (Debian/Ubuntu: apt install python3-venv), make, git;"
	@echo "Chromium only for the browser tests."
	@echo "Targets:"
	@echo "  make report          bring the snapshot up to date, run the section notebooks whose"
	@echo "                       notebook, params, data or code changed, write the HTML reports"
	@echo "                       and OUT/index.html (a no-op when nothing changed)"
	@echo "  make snapshot        only read SOURCE into OUT/data/"
	@echo "  make test            run the test suite (installs the test extra first)"
	@echo "  make test-quick      the suite without the tests marked slow (builds, trainers,"
	@echo "                       browsers, hunts): about 30 s, for the edit loop"
	@echo "  make lint            ruff over the project (installs ruff first)"
	@echo "  make bench           benchmarks -> benchmarks/results.md"
	@echo "  make sync-notebooks  re-pair notebooks/*.py with their .ipynb twins, written as"
	@echo "                       committed (no outputs, no editor metadata)"
	@echo "  make lab             install JupyterLab into the environment and start it at the project root"
	@echo "  make notebook NB=02 PHASE=p2b   open a working copy of a section notebook in Lab; the"
	@echo "                       address Lab prints opens it (scratch/, untracked; writes to scratch/)"
	@echo "  make screenshots     headless-Chromium screenshots of OUT's index and one report -> docs/"
	@echo "  make demo-data       regenerate the bundled demo sweep (data/demo)"
	@echo "  make setup           create the environment (what reports need) and set the notebooks'"
	@echo "                       git filter in this clone"
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
	@echo "  ENV_DIR=$(ENV_DIR)   the environment installed into (.venv, or the active virtual/conda one)"
	@echo "Relative paths resolve against the project root. More: README.md and docs/."

setup: $(STAMP)
	@$(GIT_FILTER)

report: $(STAMP)
	@"$(PY)" -m cbs_rlvr report --source "$$CBS_MAKE_SOURCE" --out "$$CBS_MAKE_OUT" \
	  --params-dir "$$CBS_MAKE_PARAMS" --phases "$$CBS_MAKE_PHASES" --jobs "$(JOBS)" \
	  --n-bootstrap "$(N_BOOTSTRAP)" $(if $(filter 0 no false,$(WAIT)),--no-wait)

snapshot: $(STAMP)
	@"$(PY)" -m cbs_rlvr snapshot --source "$$CBS_MAKE_SOURCE" --out "$$CBS_MAKE_OUT" \
	  --params-dir "$$CBS_MAKE_PARAMS" $(if $(filter 0 no false,$(WAIT)),--no-wait)

# --- checks --------------------------------------------------------------------------------
# the suite's files run in parallel, one file per worker (its module fixtures stay shared);
# test-quick leaves out the tests marked slow (builds, trainers, browsers, hunts): the edit loop
test: $(TEST_STAMP)
	"$(PY)" -m pytest -q -n auto --dist loadfile --no-loadscope-reorder

test-quick: $(TEST_STAMP)
	"$(PY)" -m pytest -q -n auto --dist loadfile --no-loadscope-reorder -m "not slow"

lint: $(LINT_STAMP)
	"$(PY)" -m ruff check .

bench: $(TEST_STAMP)
	"$(PY)" benchmarks/run.py
	"$(PY)" tests/decision_acceptance.py 0,1,2,3 200 benchmarks/decision_acceptance.md
	"$(PY)" tests/forecast_acceptance.py 0,1,2,3 400 benchmarks/forecast_acceptance.md

sync-notebooks: $(STAMP)
	@$(GIT_FILTER)
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
	@$(GIT_FILTER)
	$(LAB)

# Lab opens the copy (default_url), and the address it prints is the copy's, with the token
notebook: $(LAB_STAMP)
	@$(GIT_FILTER)
	@url="$$("$(PY)" -m cbs_rlvr.build.lab copy --nb "$(NB)" --phase "$(PHASE)" --source "$$CBS_MAKE_SOURCE" \
	  --params-dir "$$CBS_MAKE_PARAMS" --n-bootstrap "$(N_BOOTSTRAP)")" \
	  && $(LAB) --LabApp.default_url="$$url"

demo-data: $(STAMP)
	"$(PY)" data/demo/make_demo.py

clean:
	rm -rf "$$CBS_MAKE_OUT"/*/ "$$CBS_MAKE_OUT/index.html" "$$CBS_MAKE_OUT/.build"
