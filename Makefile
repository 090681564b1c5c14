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

.PHONY: help setup data lab run notebooks book test test-half-unit test-half-notebooks test-unit test-notebooks test-profiles bench experiments clean

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

run: data  ## execute every notebook headless into build/ (executed .ipynb + HTML), recording their run times
	@mkdir -p build
	$(PY) tools/run_notebooks.py --out build --record results/notebook_times.json $(NB)

notebooks: data  ## re-execute the notebooks in place, so the committed outputs are fresh
	$(PY) tools/run_notebooks.py --inplace --record results/notebook_times.json $(NB)

book: setup  ## the committed notebooks as a website in build/book/ (Jupyter Book; outputs as committed, not re-executed)
	@rm -rf build/book-src build/book build/book-out && mkdir -p build/book-src/notebooks
	@cp book/_config.yml book/_toc.yml build/book-src/ && cp notebooks/*.ipynb build/book-src/notebooks/
	$(VENV)/bin/jupyter-book build build/book-src --path-output build/book-out -W -n --keep-going
	@mv build/book-out/_build/html build/book && rm -rf build/book-out build/book-src
	@echo "book: open build/book/index.html"

test: setup book data  ## unit tests (and the book), every notebook with nbval and under each profile: two halves side by side
	@$(MAKE) --no-print-directory -j2 $(if $(filter 3.%,$(MAKE_VERSION)),,--output-sync=target) test-half-unit test-half-notebooks

# make test's halves take about as long on one core each (with GNU make >= 4 each half's output is printed when it ends):
# the unit tests then every notebook but lesson 05 under the gpu profile; nbval, then every notebook under the paper
# profile and lesson 05 under the gpu profile.
test-half-unit: data
	DEEPLAB_TEST=1 TQDM_DISABLE=1 MPLBACKEND=agg OMP_NUM_THREADS=1 $(PY) -m pytest -p no:cacheprovider tests \
	  -k "not test_lesson_runs_under_profile or (gpu and not 05_training)"

test-half-notebooks: data
	DEEPLAB_TEST=1 TQDM_DISABLE=1 OMP_NUM_THREADS=1 $(PY) -m pytest -p no:cacheprovider --nbval-lax --nbval-current-env \
	  --nbval-sanitize-with notebooks/sanitize.cfg notebooks/*.ipynb
	DEEPLAB_TEST=1 TQDM_DISABLE=1 MPLBACKEND=agg $(PY) -m pytest -p no:cacheprovider tests/test_profile_notebooks.py \
	  -k "paper or (gpu and 05_training)"

test-unit: setup book  ## unit tests only (tests/, browser tests of the lessons and the book when Chromium is installed)
	DEEPLAB_TEST=1 TQDM_DISABLE=1 MPLBACKEND=agg $(PY) -m pytest tests --ignore=tests/test_profile_notebooks.py

test-profiles: data  ## every notebook under the gpu and paper profiles' code paths (smoke sizes, CPU), two at a time
	DEEPLAB_TEST=1 TQDM_DISABLE=1 MPLBACKEND=agg $(PY) -m pytest -n 2 tests/test_profile_notebooks.py

test-notebooks: data  ## execute every notebook with nbval (NB=notebooks/05_*.ipynb for one)
	DEEPLAB_TEST=1 TQDM_DISABLE=1 $(PY) -m pytest --nbval-lax --nbval-current-env \
	  --nbval-sanitize-with notebooks/sanitize.cfg $(NB)

bench: setup data  ## benchmarks/: measured ratios against the references
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# The two halves take about as long on one core each: the CRF runs and v3's output-stride-8 training
# beside everything else. Each run is recorded as it finishes; a rerun skips what is recorded.
EXPERIMENTS_A ?= crf crf-rnn v3-output-stride
EXPERIMENTS_B ?= fov lr-policy aspp cue learnability v3-aspp

experiments: data  ## the papers' experiments, 3 seeds each, as two 1-thread processes (hours; resumable), then data/README's P1-P6
	OMP_NUM_THREADS=1 $(PY) -m deeplab_lessons.experiments $(EXPERIMENTS_A) & a=$$!; \
	OMP_NUM_THREADS=1 $(PY) -m deeplab_lessons.experiments $(EXPERIMENTS_B); b=$$?; \
	wait $$a && [ $$b = 0 ]
	$(PY) -m deeplab_lessons.experiments properties --write

clean:  ## remove build outputs (keeps .venv and data/)
	rm -rf build .pytest_cache
