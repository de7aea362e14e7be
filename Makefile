# One entry point. `make reproduce` runs the pipeline; `make test` runs the test suite.
# Both create .venv and install the pinned lock first (idempotent: skipped when the lock is unchanged).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup reproduce test lab bench sweep sweep-train clean-venv

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

reproduce: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	@echo ""
	@echo "Done. Results:"
	@echo "  the paper's table        : results/eval/table_exact.md (figure: table_exact.png), scorecard_side_by_side.md"
	@echo "  the oracle               : results/oracle/<population>/table.md"
	@echo "  executed notebooks       : results/notebooks/"
	@echo "  metrics                  : results/metrics/*.json  ($(BIN)/dvc metrics show)"
	@echo "  training curves          : results/convergence*/<METHOD>.csv  ($(BIN)/dvc plots show)"

# Two workers (pytest-xdist), a test module per worker at a time so that a module's fixtures are built once; the
# tests are mostly single-threaded, so two workers use the two cores. TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=10

# A sweep (sweeps/<SWEEP>.yaml, outside the default DAG; docs/sweeps.md), in two steps with a commit between them:
# `make sweep` computes the oracle's predictions of every run (two runs at a time, one thread each) and their report;
# commit results/sweeps/<SWEEP>/, then `make sweep-train` trains every run (it refuses runs whose predictions are not
# committed) and writes the report of the results. Resumable: a finished step is skipped, an interrupted training
# resumes. Only some points or seeds: make sweep-train SWEEP_ARGS="--points e0.26 --seeds 1 2 3".
SWEEP ?= embellisher_share
SWEEP_ARGS ?=
sweep: $(STAMP)
	$(BIN)/python -m nlhf.pipeline.sweep predict sweeps/$(SWEEP).yaml --jobs 2 $(SWEEP_ARGS)
	$(BIN)/python -m nlhf.pipeline.sweep report sweeps/$(SWEEP).yaml
	@echo "Predictions in results/sweeps/$(SWEEP)/: commit them, then run make sweep-train"

sweep-train: $(STAMP)
	$(BIN)/python -m nlhf.pipeline.sweep train sweeps/$(SWEEP).yaml --jobs 2 $(SWEEP_ARGS)
	$(BIN)/python -m nlhf.pipeline.sweep report sweeps/$(SWEEP).yaml

# JupyterLab on the notebooks, offline: a read-only extension manager (no PyPI search), no news feed and no
# update check (both would fetch from the internet). Opened interactively a notebook re-plots the committed
# results (its `recompute` parameter is False); set recompute = True to rerun its stage.
# Extra options pass through LAB_ARGS, e.g. `make lab LAB_ARGS="--port=8889 --no-browser"`.
lab: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/jupyter lab --ServerApp.root_dir=notebooks \
		--LabApp.extension_manager=readonly --LabApp.news_url=None \
		--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate $(LAB_ARGS)

# Our Nash-MD-PG step vs TRL 1.13.0's NashMDTrainer (TRL lives in its own venv, outside the lock).
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed: requirements.lock
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet -r requirements.lock "trl==1.13.0" requests
	$(BENCH_VENV)/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

bench: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python benchmarks/bench_nashmd_vs_trl.py

clean-venv:
	rm -rf $(VENV)
