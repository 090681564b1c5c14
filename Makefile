# DeepLab Lessons — `make lab` to learn, `make test` to check. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch/torchvision upper bounds: releases known to work with the lessons (and, on machines that
# keep them on local disk, found there instead of downloaded). Override on the command line.
TORCH_SPEC ?= torch>=2.1,<=2.14.1 torchvision>=0.16,<=0.29.1
NB      ?= notebooks/*.ipynb
LAB_IP  ?= 127.0.0.1
LAB_PORT ?= 8888
STAMP  := $(VENV)/.setup-done

.PHONY: help setup data lab run notebooks test test-unit test-notebooks bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

setup: $(STAMP)  ## create .venv with the package, JupyterLab and test tools (idempotent)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(foreach s,$(TORCH_SPEC),"$(s)")
	@$(PY) -m pip install --quiet -e '.[dev]' || { \
	  echo "!! pydensecrf2 (the C++ dense CRF) did not build: installing without it."; \
	  echo "!! Every lesson still runs, with the project's own PyTorch CRF."; \
	  $(PY) -m pip install --quiet -e . --no-deps && \
	  $(PY) -m pip install --quiet $$($(PY) -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print(' '.join(repr(d) for d in p['dependencies'] + p['optional-dependencies']['dev'] if not d.startswith('pydensecrf')))" | tr -d "'"); }
	@touch $(STAMP)
	@echo "setup done: $(VENV) ($$($(PY) -c 'import torch; print("torch", torch.__version__)'))"

data: setup  ## generate the embedded VOC-layout data set into data/ (once)
	@$(PY) -c "from deeplab_lessons import config; print('data:', config.voc_root())"

lab: data  ## open JupyterLab on notebooks/ (prints the URL; no browser on a headless machine)
	@if [ -n "$$DISPLAY$$WAYLAND_DISPLAY" ] || [ "$$(uname)" = Darwin ]; then nb=; else nb=--no-browser; fi; \
	root=; [ "$$(id -u)" = 0 ] && root=--allow-root; \
	echo "JupyterLab: open the http://$(LAB_IP):$(LAB_PORT)/lab?token=... URL printed below (Ctrl-C stops it)"; \
	$(VENV)/bin/jupyter lab --ip=$(LAB_IP) --port=$(LAB_PORT) $$nb $$root --notebook-dir=notebooks

run: data  ## execute every notebook headless into build/ (executed .ipynb + HTML)
	@mkdir -p build
	$(PY) tools/run_notebooks.py --out build $(NB)

notebooks: data  ## re-execute the notebooks in place, so the committed outputs are fresh
	$(PY) tools/run_notebooks.py --inplace $(NB)

test: test-unit test-notebooks  ## unit tests, then every notebook executed and checked with nbval

test-unit: setup  ## unit tests only (tests/, browser tests included when Chromium is installed)
	DEEPLAB_TEST=1 TQDM_DISABLE=1 MPLBACKEND=agg $(PY) -m pytest tests

test-notebooks: data  ## execute every notebook with nbval (NB=notebooks/05_*.ipynb for one)
	DEEPLAB_TEST=1 TQDM_DISABLE=1 $(PY) -m pytest --nbval-lax --nbval-current-env \
	  --nbval-sanitize-with notebooks/sanitize.cfg $(NB)

bench: setup data  ## benchmarks/: measured ratios against the references
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:  ## remove build outputs (keeps .venv and data/)
	rm -rf build .pytest_cache
