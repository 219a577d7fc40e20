# cbs-rlvr. The two commands:   make report   (build every report on the demo data)
#                                make test     (run the test suite)
# Both create .venv in the project root (unless a virtual or conda environment is active)
# and install the dependencies from pyproject.toml first.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

SOURCE ?= data/demo
OUT ?= outputs
JOBS ?= 2
N_BOOTSTRAP ?= 1000
PARAMS ?= params
ALL_PHASES := $(sort $(basename $(notdir $(wildcard $(PARAMS)/*.yaml))))
PHASES ?= $(ALL_PHASES)
# the code every report depends on: the notebooks' API and the package behind it
CODE := cbs_helpers.py $(wildcard cbs_rlvr/*.py cbs_rlvr/*/*.py)

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

.PHONY: help setup snapshot report report-notebooks report-html test lint bench sync-notebooks clean demo-data
help:
	@echo "make report [SOURCE=data/demo|wandb:entity/project|<offline dir>|<export dir>] [OUT=outputs] [PHASES=\"p1 p2b\"] [JOBS=2] [PARAMS=params]"
	@echo "make test          run the test suite"
	@echo "make snapshot      only pull the source into OUT/data/"
	@echo "make bench         benchmarks -> benchmarks/results.md"
	@echo "make sync-notebooks  re-pair notebooks/*.py with their .ipynb twins"

setup: $(STAMP)

# --- snapshot ------------------------------------------------------------------------------
SNAPSHOT := $(OUT)/data/manifest.json
SNAPSHOT_STAMP := $(OUT)/.make/snapshot.stamp
ifneq ($(findstring wandb:,$(SOURCE)),)
SOURCE_FILES := FORCE
else
SOURCE_FILES := $(shell find "$(SOURCE)" -type f 2>/dev/null)
endif
ifneq ($(filter report report-notebooks report-html snapshot,$(MAKECMDGOALS)),)
# Remember which source OUT was built from, so that switching SOURCE rebuilds the snapshot.
$(shell mkdir -p "$(OUT)/.make"; [ "$$(cat "$(OUT)/.make/source.txt" 2>/dev/null)" = "$(SOURCE)" ] \
        || printf '%s\n' "$(SOURCE)" > "$(OUT)/.make/source.txt")
endif

snapshot: $(STAMP)
	@"$(PY)" -m cbs_rlvr snapshot --source "$(SOURCE)" --out "$(OUT)" --params-dir "$(PARAMS)"
	@mkdir -p "$(OUT)/.make" && touch "$(SNAPSHOT_STAMP)"

# The snapshot command rewrites manifest.json only when the content changed, so the
# notebooks (which depend on the manifest) re-run only when the data did. The params files
# decide which runs a phase selects (the others are listed in excluded_runs.csv).
$(SNAPSHOT_STAMP): $(SOURCE_FILES) $(OUT)/.make/source.txt $(CODE) $(wildcard $(PARAMS)/*.yaml) | $(STAMP)
	@"$(PY)" -m cbs_rlvr snapshot --source "$(SOURCE)" --out "$(OUT)" --params-dir "$(PARAMS)"
	@touch $@
$(SNAPSHOT): $(SNAPSHOT_STAMP)
FORCE:

# --- report --------------------------------------------------------------------------------
# The plan (which sections apply to which phase) comes from params/*.yaml; it is generated
# into OUT and included, so make can schedule the notebooks JOBS at a time and re-run only
# those whose notebook, params file, helper module or snapshot changed.
REPORT_MK := $(OUT)/.make/report.mk
ifneq ($(filter report report-notebooks,$(MAKECMDGOALS)),)
include $(REPORT_MK)
endif
$(REPORT_MK): $(wildcard $(PARAMS)/*.yaml) notebooks Makefile | $(STAMP)
	@mkdir -p $(dir $@)
	@"$(PY)" -m cbs_rlvr plan --params-dir "$(PARAMS)" --notebooks-dir notebooks --out "$(OUT)" \
	  --n-bootstrap $(N_BOOTSTRAP) > $@.tmp && mv $@.tmp $@

# The .py percent file is the source of truth; make re-pairs its .ipynb twin when the .py is
# newer, and papermill executes the twin.
notebooks/%.ipynb: notebooks/%.py | $(STAMP)
	@"$(PY)" -m jupytext --sync --quiet $<
	@touch $@

report: $(STAMP)
	@$(MAKE) --no-print-directory -k -j$(JOBS) report-notebooks PHASES="$(PHASES)"; nb=$$?; \
	 $(MAKE) --no-print-directory report-html PHASES="$(PHASES)"; html=$$?; \
	 if [ $$nb -ne 0 ]; then echo "report: some notebooks failed (see the lines starting with FAILED above)" >&2; exit 1; fi; \
	 exit $$html

report-notebooks: $(foreach p,$(PHASES),$(NOTEBOOKS_$(p))) $(SUMMARY_NB)
	@:

# One nbconvert call converts every executed notebook newer than its HTML, then the index.
report-html: $(OUT)/index.html
	@:
# (report.mk is not included here, so existing notebooks are plain files: nothing re-runs)
$(OUT)/index.html: $(wildcard $(OUT)/*/[0-9][0-9]_*.ipynb) $(wildcard $(OUT)/.make/status.stamp)
	@"$(PY)" -m cbs_rlvr html --out "$(OUT)" --params-dir "$(PARAMS)"

# --- checks --------------------------------------------------------------------------------
test: $(STAMP)
	"$(PY)" -m pytest -q

lint: $(STAMP)
	"$(PY)" -m ruff check .

bench: $(STAMP)
	"$(PY)" benchmarks/run.py

sync-notebooks: $(STAMP)
	"$(PY)" -m jupytext --sync notebooks/*.py
	"$(PY)" -m nbconvert --clear-output --inplace notebooks/*.ipynb

demo-data: $(STAMP)
	"$(PY)" data/demo/make_demo.py

clean:
	rm -rf "$(OUT)"/*/ "$(OUT)/index.html" "$(OUT)/.make"
