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

# The main job on the embedded default data: generate and validate it, meta-train the
# hypernetwork (tracked in MLflow, registered as recsys-hyper@challenger), score every user.
run: $(STAMP)
	$(BIN)/recsys-hyper data synth --preset default --out data/default --overwrite
	$(BIN)/recsys-hyper data validate data/default
	$(BIN)/recsys-hyper data describe data/default
	$(BIN)/recsys-hyper train --data data/default --out artifacts/model
	$(BIN)/recsys-hyper recommend --model models:/recsys-hyper@challenger --data data/default --top-k 10 \
	    --out artifacts/recommendations.parquet
	$(BIN)/python -c "import pandas as pd; r = pd.read_parquet('artifacts/recommendations.parquet'); \
	    print(r.head(10).to_string(index=False)); print(f'... {len(r):,} rows for {r.user_id.nunique():,} users')"
	@echo "MLflow UI: $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db"

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
	rm -rf $(VENV) data/default artifacts mlflow.db mlruns build *.egg-info .pytest_cache
