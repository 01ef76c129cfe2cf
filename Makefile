# Two commands do all set-up on a fresh machine:  make demo   and   make test.
# Both bootstrap .venv on first use (scripts/bootstrap.sh; a stamp makes re-runs instant).
PY      := .venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1
export RAY_AUTH_MODE ?= token
export TOKENIZERS_PARALLELISM ?= false

.PHONY: venv assets sample-data demo test test-extended ui bench docker-test lint clean

venv:
	@bash scripts/bootstrap.sh

assets: venv   ## offline model store (~/.cache/fovea/models or $$FOVEA_MODEL_STORE)
	@$(PY) -m fovea.model.store

sample-data: assets   ## embedded raw sample datasets (real media) under data/demo/raw
	@$(PY) jobs/make_sample_data.py --out data/demo/raw

demo: assets   ## preprocess -> stage-1 training on a local Ray cluster -> evaluation, tracked in MLflow
	@$(PY) jobs/demo.py

test: assets   ## every unit test and the README's end-to-end paths (submit, sweep, S3, two nodes); < 15 min on 2 cores
	@$(PY) -m pytest tests -q -m "not extended" --durations=20

test-extended: assets   ## the longer Ray scenarios (fault injection, stage chaining, UI in a browser, bench checks); CI runs it too
	@$(PY) -m pytest tests -q -m extended --durations=20

ui: venv   ## MLflow UI on 127.0.0.1:5000 over the project's store; prints the links to the loss charts
	@$(PY) jobs/mlflow_ui.py

lint: venv
	@$(PY) -m pytest tests/test_docker_lint.py -q

docker-test: venv   ## real image build with podman + smoke in its rootfs (root; 5-7 min; docker/README.md)
	@bash docker/build_test.sh

clean:
	rm -rf runs data/demo
