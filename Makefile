# The two commands of the README: `make demo` and `make test`. Both create .venv if needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test ui benchmark clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Generates the synthetic AffectNet-format set, preprocesses it, trains, logs to MLflow.
demo: $(STAMP)
	$(PY) preprocess.py
	$(PY) train.py
	@echo
	@echo "Compare runs in the MLflow UI:  make ui   (or: $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db)"

test: $(STAMP)
	$(PY) -m pytest -q

# Speed and memory figures (not tests): preprocessing, then the training input on 48 and 96 px caches.
benchmark: $(STAMP)
	$(PY) benchmarks/preprocess.py
	$(PY) preprocess.py cache.size=48
	$(PY) preprocess.py cache.size=96
	$(PY) benchmarks/train_input.py

ui: $(STAMP)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db

clean:
	rm -rf data caches runs outputs multirun mlflow.db mlflow.db.lock mlartifacts
