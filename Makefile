# Entry points. `make test` works on a fresh machine with only Python 3.11; so will `make serve`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# checkov and kubernetes-validate, in a venv of their own (see tools-constraints.txt for why).
TOOLS_VENV := .venv-tools
TOOLS_PY := $(TOOLS_VENV)/bin/python
TOOLS_STAMP := $(TOOLS_VENV)/.installed
# KServe and TensorFlow for `make bench-peers`, in a venv of their own (see peers-constraints.txt).
PEERS_VENV := .venv-peers
PEERS_PY := $(PEERS_VENV)/bin/python
PEERS_STAMP := $(PEERS_VENV)/.installed
MODELS := models
# The trained slim models that ship in the repository (see training/shipped.py).
SHIPPED := shipped-runs
# Every model of the contract registry (common/contract.py), asked of it when a target needs it.
DEMO_MODELS = $(shell $(PY) -c 'from common.contract import MODEL_NAMES; print(*MODEL_NAMES)')
# The docker compose command line, plus where the container's /models lives on this machine.
SERVE_FLAGS := --port=8500 --rest_api_port=8501 --model_config_file=serving/models.config \
	--allow_version_labels_for_unavailable_models --model_config_file_poll_wait_seconds=30 \
	--monitoring_config_file=serving/monitoring.config \
	--enable_batching --batching_parameters_file=serving/batching.config \
	--grpc_channel_arguments=grpc.max_connection_age_ms=60000 --base_path_map=/models=$(MODELS)

.PHONY: venv tools debian-tools test test-all served-models models serve demo demo-inputs golden-sets \
	judge-weights bench bench-peers peers soak curve lint clean

venv: $(STAMP)

## uv (pinned in constraints.txt) installs the same pinned tree as pip in about 25 s from its
## cache where pip takes 60 to 100 s; pip does it when uv cannot be installed or fails. Like
## pip, it writes the bytecode at install time (--compile-bytecode, about 20 of those 25 s):
## with PYTHONDONTWRITEBYTECODE set, every process would otherwise compile TensorFlow's
## modules again on import (about 5 s each: the export, the server, each test worker).
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt uv \
	  && $(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) \
	     -c constraints.txt -e ".[train,dev]" \
	  || { echo "uv unavailable or failed: installing with pip" >&2 \
	       && $(PY) -m pip install --quiet --upgrade pip \
	       && $(PY) -m pip install --quiet -c constraints.txt -e ".[train,dev]"; }
	touch $(STAMP)

## The deployment-file checkers that tests/docker/test_static_tools.py runs (about 10 s to build).
tools: $(TOOLS_STAMP)

$(TOOLS_STAMP): tools-constraints.txt constraints.txt
	test -x $(TOOLS_PY) || $(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_PY) -m pip install --quiet -c constraints.txt uv \
	  && $(TOOLS_VENV)/bin/uv pip install --quiet --compile-bytecode --python $(TOOLS_PY) \
	     -c tools-constraints.txt checkov kubernetes-validate \
	  || { echo "uv unavailable or failed: installing with pip" >&2 \
	       && $(TOOLS_PY) -m pip install --quiet --upgrade pip \
	       && $(TOOLS_PY) -m pip install --quiet -c tools-constraints.txt checkov kubernetes-validate; }
	touch $(TOOLS_STAMP)

## KServe 0.21.0 and TensorFlow 2.21 for `make bench-peers` (about 70 s to build from uv's cache).
peers: $(PEERS_STAMP)

$(PEERS_STAMP): peers-constraints.txt constraints.txt
	test -x $(PEERS_PY) || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_PY) -m pip install --quiet -c constraints.txt uv \
	  && $(PEERS_VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PEERS_PY) \
	     -c peers-constraints.txt kserve tensorflow \
	  || { echo "uv unavailable or failed: installing with pip" >&2 \
	       && $(PEERS_PY) -m pip install --quiet --upgrade pip \
	       && $(PEERS_PY) -m pip install --quiet -c peers-constraints.txt kserve tensorflow; }
	touch $(PEERS_STAMP)

## Debian packages the tests use, installed where missing (CI runs as root): g++ builds the
## conformance checker (export/conformance) against the TensorFlow wheel; prometheus (promtool
## and the server) checks and runs the monitoring files (tests/operations). The package's own
## service is stopped: the tests start their own Prometheus on a free port.
debian-tools:
	command -v g++ >/dev/null || (apt-get update && apt-get install -y g++)
	command -v promtool >/dev/null || { apt-get update \
	  && apt-get install -y --no-install-recommends prometheus \
	  && { service prometheus stop >/dev/null 2>&1 || true; }; } \
	  || echo "Debian's prometheus could not be installed: tests/operations/test_prometheus.py will skip" >&2

## Run the whole suite except `slow` tests, a test file per worker (pytest-xdist), one worker
## per CPU up to 4: most tests wait on a server process, so two workers on two cores take
## 10 minutes where one took 17. Under --dist=loadfile the heaviest files go out first and
## files that share a server share a worker (tests/scheduling.py).
PYTEST_WORKERS = --numprocesses=auto --maxprocesses=4 --dist=loadfile
test: $(STAMP) $(TOOLS_STAMP) debian-tools
	$(PY) -m pytest -m "not slow" $(PYTEST_WORKERS)

## Everything, slow tests included.
test-all: $(STAMP) $(TOOLS_STAMP) debian-tools
	$(PY) -m pytest $(PYTEST_WORKERS)

## ruff (lint and format) and the import-linter layer contracts of docs/architecture.md.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

## Export the shipped slim models (shipped-runs/) into models/ where it has none, or where the
## newest version would not run under TF Serving's session loader (one line says why): no training.
served-models: $(STAMP)
	$(PY) -m export.served --runs $(SHIPPED) --base-path $(MODELS) $(DEMO_MODELS)

## Retrain the three slim models from scratch (about 25 min on 2 cores), rewrite shipped-runs/
## and its manifests, and export them into models/ as new versions.
models: $(STAMP)
	$(PY) -m training.shipped retrain
	@for model in $(DEMO_MODELS); do \
	  $(PY) -m export $$model --run $(SHIPPED)/$$model --base-path $(MODELS) || exit 1; \
	done

## Serve the three models in the foreground on 127.0.0.1:8500 (gRPC) and :8501 (REST).
serve: served-models
	$(PY) -m serving $(SERVE_FLAGS)

## Client demo against `make serve` (run that in another terminal); writes out/demo/.
demo: served-models
	$(PY) -m client.demo

## Regenerate the client demo's shipped input pictures (client/demo_inputs/).
demo-inputs: $(STAMP)
	$(PY) -m training.data.demo_inputs client/demo_inputs

## Regenerate the rollout gates' built-in golden sets (serving/rollout/golden/).
golden-sets: $(STAMP)
	$(PY) -m training.data.golden_sets serving/rollout/golden

## Retrain the generator's judge (the digit classifier) and ship its weights (client/canary/judge_weights/).
judge-weights: $(STAMP)
	$(PY) -m training.judge_weights client/canary/judge_weights

## Benchmarks (not part of `make test`): each prints ratios measured in one run, into out/bench/.
## The last lines print the fast-path table: each ratio beside its goal.
bench: served-models
	$(PY) -m benchmarks.serving_bench
	$(PY) -m benchmarks.client_bench
	$(PY) -m benchmarks.segment_bench
	$(PY) -m benchmarks.fallback_bench
	$(PY) -m benchmarks.summary

## Peer benchmark (not part of make test): this server and KServe (one worker each, .venv-peers)
## serve the same U-Net SavedModel; the in-process call and both servers over gRPC and REST are
## timed in turn, 1000 rounds (about 4 min); prints the table and each goal (ours / KServe
## <= 1.00), writes out/bench/peers.json.
bench-peers: served-models $(PEERS_STAMP)
	$(PY) -m benchmarks.peers

## Soak (not part of make test): 8 clients x 60 s of mixed gRPC and REST calls on the slim
## models; prints calls, errors (goal 0), p50/p99 and the server's RSS growth (goal < 10%).
soak: served-models
	$(PY) -m benchmarks.soak --clients 8 --seconds 60

## Latency-throughput curves (not part of make test) against `make serve` (run that in another
## terminal): open-loop Predict at rising rates, 8 s a step, for each shipped model over gRPC
## and the U-Net over REST; tables on stdout, JSON and PNG plots in out/bench/curve/.
CURVE := $(PY) -m benchmarks.curve --seconds 8 --warmup 2
curve: $(STAMP)
	$(CURVE) --grpc 127.0.0.1:8500 --model unet --rates 5,10,15,20,30,40,60,80 \
	  --out out/bench/curve/unet-grpc.json
	$(CURVE) --grpc 127.0.0.1:8500 --model localizer --rates 50,100,200,300,400,500,600 \
	  --out out/bench/curve/localizer-grpc.json
	$(CURVE) --grpc 127.0.0.1:8500 --model generator --rates 50,100,200,300,400,600,800 \
	  --out out/bench/curve/generator-grpc.json
	$(CURVE) --rest http://127.0.0.1:8501 --model unet --rates 5,10,15,20,30,40,60,80 \
	  --out out/bench/curve/unet-rest.json

clean:
	rm -rf $(VENV) $(TOOLS_VENV) $(PEERS_VENV) .pytest_cache .ruff_cache
