# Two commands do all set-up on a fresh clone: `make lab` and `make test`.
# Both install exactly uv.lock (torch and torchvision included) into .venv; uv itself is pinned
# and installed from PyPI into .tools/. `make lock` regenerates the lock after pyproject.toml changes.
VENV ?= .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
UV := .tools/bin/uv
STAMP := $(VENV)/.installed
NBVAL := --nbval-lax --sanitize-with notebooks/sanitize.cfg

export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never

.PHONY: lab test test-unit test-integration test-acceptance bench lock check-lock clean-venv

$(UV):
	python3 -m venv .tools
	.tools/bin/python -m pip install --quiet 'uv==$(UV_VERSION)'

# --locked: install the lock as it is, and fail if it no longer matches pyproject.toml (run `make lock`).
# --compile-bytecode: uv leaves .pyc to first import, which never writes them under PYTHONDONTWRITEBYTECODE
# (set on these machines): every kernel would then compile torch and sympy again, 20 s more per start.
$(STAMP): uv.lock pyproject.toml | $(UV)
	$(UV) sync --locked --compile-bytecode --extra notebooks --extra dev --extra ray --python python3
	touch $(STAMP)

lab: $(STAMP)
	# --allow-root only when run as root (containers): JupyterLab refuses root otherwise
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

# Tests run in parallel, one pytest worker per core (a notebook's cells stay on one worker: --dist loadfile),
# each worker and each notebook kernel on one torch thread: two threads per process on a shared core
# spin against each other (a tiny forward pass went from 20 ms to 1 s on 2 cores).
JOBS ?= auto
PARALLEL := -n $(JOBS) --dist loadfile

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest $(PARALLEL) tests notebooks $(NBVAL)

test-unit: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest $(PARALLEL) tests/unit

test-integration: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest $(PARALLEL) tests/integration

test-acceptance: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest $(PARALLEL) tests/acceptance notebooks $(NBVAL)

bench: $(STAMP)
	$(PY) -m benchmarks.run

lock: | $(UV)
	$(UV) lock --python python3

check-lock: | $(UV)
	$(UV) lock --check --python python3

clean-venv:
	rm -rf $(VENV) .tools
