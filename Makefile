# The two commands of the README: `make demo` and `make test`. Both create .venv if needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test ui benchmark screenshots clean

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
	@echo "(MLflow opens an experiment on its GenAI overview: choose \"Model training\" to see the runs.)"

test: $(STAMP)
	$(PY) -m pytest -q

# Speed and memory figures (not tests): preprocessing, the training input on 48 and 96 px caches, the face detectors.
benchmark: $(STAMP)
	$(PY) benchmarks/preprocess.py
	$(PY) preprocess.py cache.size=48
	$(PY) preprocess.py cache.size=96
	$(PY) benchmarks/train_input.py
	$(PY) benchmarks/detectors.py

# Screenshots of the MLflow UI on fresh tiny runs (tests/browser/mlflow_ui.py; not part of `make test`),
# into outputs/screenshots. Chromium comes from Debian: apt-get install chromium.
BROWSER_STAMP := $(VENV)/.installed-browser

$(BROWSER_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[browser]'
	touch $(BROWSER_STAMP)

screenshots: $(BROWSER_STAMP)
	$(PY) tests/browser/mlflow_ui.py --out outputs/screenshots

ui: $(STAMP)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db

clean:
	rm -rf data caches runs outputs multirun mlflow.db mlflow.db.lock mlartifacts
