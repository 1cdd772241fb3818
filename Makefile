# MTSAM-Tune developer commands. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint format bench bench-full bench-pareto mlflow-ui cluster-down cluster-smoke slurm-smoke dist-smoke clean

# (Re)install whenever pyproject.toml changes.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) tune/search.py $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider $(ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow" $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check mtsam tune analysis benchmarks tests

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format mtsam tune analysis benchmarks tests

bench: $(STAMP)
	$(PY) benchmarks/run.py --quick $(ARGS)

bench-full: $(STAMP)
	$(PY) benchmarks/run.py --full $(ARGS)

# The same Pareto sweep (tune/configs/pareto.yaml) under FIFO and MO-ASHA, seeds 0 1 2: trial-epochs
# and the final front's hypervolume (~5 min on 2 quiet cores; see BENCHMARKS.md). ARGS="--seeds 0".
bench-pareto: $(STAMP)
	$(PY) benchmarks/pareto_schedulers.py $(ARGS)

# Local MLflow UI on the default store of `python tune/search.py` (binds 127.0.0.1 only).
mlflow-ui: $(STAMP)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/runs/mlflow.db --host 127.0.0.1 --port 5000 --workers 1

# Tear a launcher cluster down, MLflow server included: `ray down` runs only `ray stop` on the head,
# so on machines that outlive the cluster (cluster-onprem.yaml) the server would keep running.
CLUSTER ?= cluster-onprem.yaml
cluster-down: $(STAMP)
	-RAY_AUTH_MODE=token $(VENV)/bin/ray exec $(CLUSTER) 'bash ~/mtsam-tune/tune/mlflow-server.sh stop --dir ~/mlflow'
	RAY_AUTH_MODE=token $(VENV)/bin/ray down -y $(CLUSTER)

# Real-parts smoke tests of the cluster paths (root, Debian; not in `make test`: minutes each).
# See docs/CLUSTER.md for what they do and their measured times.
cluster-smoke: $(STAMP)
	bash tests/smoke/cluster-smoke.sh

slurm-smoke: $(STAMP)
	bash tests/smoke/slurm-smoke.sh

# Two 2-worker (Ray Train, gloo) trials on a real two-node ray.cluster_utils.Cluster, one worker
# process SIGKILLed mid-trial and the trial retried (no root needed; named by path: pytest's
# default collection, hence `make test`, skips tests/smoke/ since no file there is test_*.py).
dist-smoke: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -s tests/smoke/dist_smoke.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
