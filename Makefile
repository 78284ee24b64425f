# The two commands of the README: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test bench evaluate clean

ML100K ?= ../shared/data/ml-100k

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first, pinned to the local CPU wheel, so that the project's range resolves to it and no
# CUDA packages are pulled in.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,spark]'
	touch $(STAMP)

install: $(STAMP)

# The main job: the nightly pipeline on the embedded default. A few days of synthetic landing
# data are generated if absent; every night not done yet runs (validate, merge, split, train,
# evaluate, gate, score, cold-start evaluation), tracked in mlflow.db; a summary is printed.
run: $(STAMP)
	@test -d data/landing || $(BIN)/recsys-hyper pipeline synth-landing --out data/landing --days 3
	$(BIN)/recsys-hyper pipeline nightly --all --landing data/landing --work artifacts/nightly

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The README's cold-start table: MovieLens 100K imported (into ignored artifacts/, never the
# repository: its licence forbids redistribution), every method, every k, one MLflow run.
evaluate: $(STAMP)
	$(BIN)/recsys-hyper data import-movielens $(ML100K) --out artifacts/data/ml-100k --overwrite
	$(BIN)/python pipelines/cold_start_eval.py --data artifacts/data/ml-100k --seed 0 --out artifacts/evaluation-ml-100k

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_model.py

clean:
	rm -rf $(VENV) data/default data/landing artifacts mlflow.db mlruns build *.egg-info .pytest_cache
