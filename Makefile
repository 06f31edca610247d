# One-command setup for a fresh clone.
#   make demo   create .venv, install qdc-trainer, run the main job (the packaged recipe arithmetic/sft_qdc)
#               (DEMO_ARGS adds flags, e.g. make demo DEMO_ARGS="--smoke true")
#   make test   create .venv, install qdc-trainer with its dev tools, run the tests
#   make lint   ruff (lint and format check; settings in pyproject.toml)
#
# torch is installed first, on its own, so that no CUDA build is pulled in.
# TORCH_PIP_ARGS chooses where the CPU build comes from; on a machine that can
# reach the PyTorch package index, use
#   make test TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"

PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_PIP_ARGS ?=
DEMO_ARGS ?=
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: demo test lint bench clean

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS)
	touch $@

$(VENV)/.demo: $(VENV)/.torch pyproject.toml
	$(PIP) install --quiet -e ".[embeddings,plot,tensorboard]"
	touch $@

$(VENV)/.dev: $(VENV)/.torch pyproject.toml
	$(PIP) install --quiet -e ".[embeddings,trl,plot,tensorboard,dev]"
	touch $@

demo: $(VENV)/.demo
	$(VENV)/bin/qdc train --config arithmetic/sft_qdc $(DEMO_ARGS)

test: $(VENV)/.dev
	$(PY) -m pytest tests qdc_trainer -q

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check qdc_trainer tests benchmarks
	$(VENV)/bin/ruff format --check qdc_trainer tests benchmarks

bench: $(VENV)/.dev
	$(PY) benchmarks/bench_metrics.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
