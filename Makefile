# The two commands of the README: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first, pinned to the local CPU wheel, so that the project's range resolves to it and no
# CUDA packages are pulled in.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The main job on the embedded default data.
run: $(STAMP)
	$(BIN)/recsys-hyper data synth --preset default --out data/default --overwrite
	$(BIN)/recsys-hyper data validate data/default
	$(BIN)/recsys-hyper data describe data/default

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_data.py

clean:
	rm -rf $(VENV) data/default build *.egg-info .pytest_cache
