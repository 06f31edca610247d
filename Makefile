# One-command setup for a fresh clone.
#   make demo    create .venv, install qdc-trainer, run the main job (the packaged recipe arithmetic/sft_qdc)
#                (DEMO_ARGS adds flags, e.g. make demo DEMO_ARGS="--smoke true")
#   make test    create .venv, install qdc-trainer with its dev tools, run the tests
#   make lint    ruff (lint and format check; settings in pyproject.toml)
#   make docs    build the documentation site into site/, warnings as errors (mkdocs.yml)
#   make dist    build the wheel and the sdist into dist/ and check their metadata (twine check)
#   make wheel-check   install the wheel from dist/ in a fresh environment outside the repository and run the
#                packaged main recipe there in smoke mode
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

.PHONY: demo test lint docs dist wheel-check bench clean

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

$(VENV)/.release: $(VENV)/.dev
	$(PIP) install --quiet -e ".[docs,release]"
	touch $@

demo: $(VENV)/.demo
	$(VENV)/bin/qdc train --config arithmetic/sft_qdc $(DEMO_ARGS)

test: $(VENV)/.dev
	$(PY) -m pytest tests qdc_trainer -q

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check qdc_trainer tests benchmarks
	$(VENV)/bin/ruff format --check qdc_trainer tests benchmarks

docs: $(VENV)/.release
	$(VENV)/bin/mkdocs build --strict

dist: $(VENV)/.release
	rm -rf dist
	$(PY) -m build --outdir dist .
	$(VENV)/bin/twine check --strict dist/*

# A fresh virtual environment in a temporary folder, the wheel and what the recipe needs, and the packaged
# main recipe run from that folder (no file of the repository in reach).
wheel-check:
	@test -n "$$(ls dist/*.whl 2>/dev/null)" || { echo "no wheel in dist/: run make dist first" >&2; exit 1; }
	set -e; work=$$(mktemp -d); trap 'rm -rf "$$work"' EXIT; \
	wheel=$$(ls "$$PWD"/dist/*.whl); \
	$(PYTHON) -m venv "$$work/venv"; \
	"$$work/venv/bin/python" -m pip install --quiet --upgrade pip; \
	"$$work/venv/bin/python" -m pip install --quiet "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS); \
	"$$work/venv/bin/python" -m pip install --quiet "$$wheel[plot,tensorboard]"; \
	cd "$$work"; \
	"$$work/venv/bin/qdc" recipes | grep -q "^arithmetic/sft_qdc "; \
	"$$work/venv/bin/qdc" train --config arithmetic/sft_qdc --smoke true --output_dir "$$work/run"; \
	for f in results.json report/report.html; do test -s "$$work/run/$$f" || { echo "the wheel's recipe did not write $$f" >&2; exit 1; }; done; \
	echo "wheel-check: the installed wheel ran arithmetic/sft_qdc outside the repository"

bench: $(VENV)/.dev
	$(PY) benchmarks/bench_metrics.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis dist site
