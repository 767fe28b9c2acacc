# Two commands do all set-up on a fresh machine with Python 3.11:
#   make demo   -- create .venv, install, run the main job on the embedded phantom default
#   make test   -- create .venv if needed, install, run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export TF_CPP_MIN_LOG_LEVEL ?= 2
export TF_ENABLE_ONEDNN_OPTS ?= 1

.PHONY: venv demo test clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Both papers' phantom experiments through papermill -> reports/paper_{a,b}/<run>/index.html.
# The kernelspec install makes notebooks opened in JupyterLab run on this venv's Python too.
demo: $(STAMP)
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (cxrlib .venv)" >/dev/null
	$(VENV)/bin/cxr demo

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
