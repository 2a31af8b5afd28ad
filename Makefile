# Two commands: `make run` and `make test`. Both create .venv and install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run serve test lint bench install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned to the CPU wheel that lies on disk; anything unpinned would pull a CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps 'sentence-transformers>=5,<7' 'transformers>=4.41,<6'
	$(BIN)/pip install -q 'regex>=2023.1' 'typer>=0.12,<1'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/recforge quickstart

# Leave a server running: the newest bundle under runs/ (make run writes one), else a demo.
serve: $(STAMP)
	$(BIN)/recforge serve --demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks && $(BIN)/ruff format --check src tests benchmarks

# Peers for side-by-side benchmarks (deepctr-torch without deps so torch stays on the CPU wheel).
$(VENV)/.bench: $(STAMP)
	$(BIN)/pip install -q --no-deps 'deepctr-torch==0.3.0' 'recbole==1.2.0' 'thop>=0.1.1.post2209072238' 'kmeans-pytorch==0.3'
	$(BIN)/pip install -q 'requests>=2,<3' 'colorlog==4.7.2' 'colorama==0.4.4' 'texttable>=1.6,<2' 'tensorboard>=2.5,<3'
	touch $(VENV)/.bench

# Benchmarks live in benchmarks/ (repository tools, not the installed package).
bench: $(VENV)/.bench
	$(BIN)/python -m benchmarks all

clean:
	rm -rf $(VENV) runs .pytest_cache
