# a2nets: `make repro` sets up and runs the whole pipeline; `make test` runs the tests.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Test files spread over one worker per core (at most 4); a file's tests stay on one worker, so
# its module fixtures (servers, trained models) are made once; files go out in collection order
# (conftest puts the slow ones first), not xdist's most-tests-first. PARALLEL= runs one process.
PARALLEL ?= -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export GX_ANALYTICS_ENABLED := False
export PYTHONHASHSEED := 0

.DEFAULT_GOAL := help
.PHONY: help setup params lint test test-fast mutants repro exps data-docs bench gpu-check ablation ui server clean

help: ## Show the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(STAMP) ## Create .venv and install the project (pinned by requirements/constraints.txt)

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements/constraints.txt torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -c requirements/constraints.txt -e '.[dev]'
	touch $@

params: $(STAMP) ## Recompose params.yaml from pipeline/conf (what `dvc exp run` does)
	$(PY) -m pipeline.core.config

lint: $(STAMP) ## Lint and format check (ruff, configured in pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint ## Lint, then run every test, the slow end-to-end ones included
	$(PY) -m pytest -q $(PARALLEL) --timeout=900 --durations=15

test-fast: $(STAMP) ## Run the tests not marked slow
	$(PY) -m pytest -q $(PARALLEL) -m "not slow"

mutants: $(STAMP) ## Mutation testing (mutmut) of a seeded sample within an hour: kill rate, survivors (ARGS="--fraction 0.2 ...")
	$(PY) tools/mutants.py $(ARGS)

repro: $(STAMP) ## Run the whole pipeline (generate → … → register) with DVC
	$(VENV)/bin/dvc repro

data-docs: $(STAMP) ## Build the Great Expectations Data Docs site a fresh clone lacks (reports/validation/data_docs/)
	$(PY) -m pipeline.validate

exps: $(STAMP) ## The experiments in one readable table: model, changed params, headline metrics, version
	COLUMNS=$${COLUMNS:-160} $(VENV)/bin/dvc exp show --no-pager --only-changed --drop '/' \
	  --keep 'model.net.name|^video_top1|mean_class_accuracy|model_version'

bench: $(STAMP) ## Run the benchmarks (prints Markdown tables of measured ratios)
	@for b in models attention attention_profile preprocess loader train_step train_determinism ui_footprint serving attention_objects decode_bombs; do echo "== $$b"; $(PY) benchmarks/$$b.py || exit 1; done

gpu-check: ## One GPU check (≤ 8 min; a clean no-op without a GPU); needs only torch + a2model, no setup
	PYTHONPATH=. $(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/python,python3) benchmarks/gpu_check.py --out gpu_check $(ARGS)

ablation: $(STAMP) ## Miniature ablation on the synthetic set (writes docs/ablation/; ARGS="key=value ...")
	$(PY) -m pipeline.ablation $(ARGS)

ui: $(STAMP) ## MLflow UI on http://127.0.0.1:5000 over the project's store
	$(VENV)/bin/a2net ui

server: $(STAMP) ## A team's MLflow tracking server on PostgreSQL in mlflow-server/ (ARGS="--host 0.0.0.0 ...")
	$(VENV)/bin/a2net server $(ARGS)

clean: ## Remove generated data, models, reports and the local MLflow store (keeps .venv)
	rm -rf data models reports mlflow/mlflow.db mlflow/artifacts
