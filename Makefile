# Two commands do all set-up on a fresh clone: `make lab` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: lab test bench clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch and torchvision resolve together from the registry (see pyproject.toml)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lab: $(STAMP)
	# --allow-root only when run as root (containers): JupyterLab refuses root otherwise
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

test: $(STAMP)
	$(PY) -m pytest tests notebooks --nbval-lax --sanitize-with notebooks/sanitize.cfg

bench: $(STAMP)
	$(PY) -m benchmarks.run

clean-venv:
	rm -rf $(VENV)
