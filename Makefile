# Two commands do all set-up on a fresh machine:  make demo   and   make test.
# Both bootstrap .venv on first use (scripts/bootstrap.sh; a stamp makes re-runs instant).
PY      := .venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1
export RAY_AUTH_MODE ?= token
export TOKENIZERS_PARALLELISM ?= false

.PHONY: venv assets sample-data demo test test-fast ui bench docker-test lint clean

venv:
	@bash scripts/bootstrap.sh

assets: venv   ## offline model store (~/.cache/fovea/models or $$FOVEA_MODEL_STORE)
	@$(PY) -m fovea.model.store

sample-data: assets   ## embedded raw sample datasets (real media) under data/demo/raw
	@$(PY) jobs/make_sample_data.py --out data/demo/raw

demo: assets   ## preprocess -> stage-1 training on a local Ray cluster -> evaluation, tracked in MLflow
	@$(PY) jobs/demo.py

test: assets   ## the whole test suite (CPU)
	@$(PY) -m pytest tests -q --durations=30

ui: venv   ## MLflow UI on 127.0.0.1:5000 over the project's store; prints the links to the loss charts
	@$(PY) jobs/mlflow_ui.py

lint: venv
	@$(PY) -m pytest tests/test_docker_lint.py -q

docker-test: venv   ## real image build with podman + smoke in its rootfs (root; 5-7 min; docker/README.md)
	@bash docker/build_test.sh

clean:
	rm -rf runs data/demo
