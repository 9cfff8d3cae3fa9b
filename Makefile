# kubeserve developer commands. Each target sets up what it needs (a virtualenv in .venv).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CRD := crds/serving.kubeserve.dev_inferenceservices.yaml
EXAMPLE ?= examples/ab-sticky.yaml

.PHONY: help install nginx models test lint crd images demo up render kind-up kind-down bench clean

help:
	@echo "make demo       set up, then run an A/B test locally: which variant serves whom, then a verdict on simulated outcomes"
	@echo "make test       set up, then run the linters and the whole test suite"
	@echo "make up         run EXAMPLE (default $(EXAMPLE)) locally until Ctrl-C"
	@echo "make render     print what the operator would create for EXAMPLE"
	@echo "make kind-up    create a kind cluster, install kubeserve with Helm, call an example"
	@echo "make kind-down  delete that cluster"
	@echo "make crd        regenerate $(CRD) (and the chart's copy) from the API models"
	@echo "make images     build the operator and server images (needs Docker)"
	@echo "make bench      run the operator, router and server benchmarks (BENCH=router for one; see bench/README.md)"

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[operator,server,test,plot]"
	touch $@

install: $(BIN)/.installed

# The router of the local run and of the data-plane tests is Debian's nginx.
nginx:
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx; \
	  else echo "nginx is needed: install it (Debian/Ubuntu: sudo apt-get install nginx)"; exit 1; fi; }

models: install
	@[ -f models/digits-onnx/v1/model.onnx ] || $(BIN)/python scripts/train_example_models.py --out models
	@[ -f models/mobilenet/v1/model.onnx ] || $(BIN)/python scripts/build_image_model.py --out models

lint: install
	$(BIN)/ruff check --no-cache .
	$(BIN)/ruff format --no-cache --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache --no-logo

# The kserve SDK, a client the tests use as users do, pins its own kubernetes client and
# web stack: it gets a virtualenv of its own (about 35 s the first time).
KSERVE_VENV := .venv-kserve
$(KSERVE_VENV)/.installed:
	$(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(KSERVE_VENV)/bin/python -m pip install --quiet "kserve==0.21.0"
	touch $@

test: install nginx lint $(KSERVE_VENV)/.installed
	@if [ -x scripts/install-test-tools.sh ]; then scripts/install-test-tools.sh; fi
	PATH="$(CURDIR)/.tools/bin:$$PATH" KSERVE_PYTHON="$(CURDIR)/$(KSERVE_VENV)/bin/python" $(BIN)/python -m pytest

demo: install nginx models
	$(BIN)/python scripts/demo.py

up: install nginx models
	$(BIN)/kubeserve up -f $(EXAMPLE)

render: install
	$(BIN)/kubeserve validate -f $(EXAMPLE)
	$(BIN)/kubeserve render -f $(EXAMPLE)

crd: install
	$(BIN)/kubeserve crd -o $(CRD)
	cp $(CRD) charts/kubeserve/files/crds/

images:
	docker build -f images/operator.Dockerfile -t kubeserve-operator:dev .
	docker build -f images/server.Dockerfile -t kubeserve-server:dev .

kind-up:
	scripts/kind-up.sh

kind-down:
	scripts/kind-down.sh

# Each benchmark writes bench/<name>/results-latest.json; the written-up figures are in
# docs/benchmarks.md. The lock keeps two benchmarks off the same CPUs. The server benchmark
# runs kubeserve alone here: its peers need virtual environments of their own (bench/server/README.md).
BENCH ?= operator router server
BENCH_LOCK := flock /tmp/kubeserve-bench.lock

bench: install nginx
	@command -v wrk >/dev/null 2>&1 || { echo "wrk is needed for the router and server benchmarks (Debian: apt-get install wrk)"; exit 1; }
	@for b in $(BENCH); do case $$b in \
	  operator) echo "== bench/operator: 1,000 InferenceServices against the API emulator"; \
	    $(BENCH_LOCK) $(BIN)/python bench/operator/bench_operator.py --count 1000 --resync-seconds 30 --json bench/operator/results-latest.json || exit 1;; \
	  router) echo "== bench/router: what the nginx router adds to a request"; \
	    $(BENCH_LOCK) $(BIN)/python bench/router/run_router_bench.py --rounds 3 --out bench/router/results-latest.json || exit 1;; \
	  server) echo "== bench/server: kubeserve alone (peers: bench/server/README.md)"; \
	    $(BENCH_LOCK) $(BIN)/python bench/server/run_benchmark.py --servers kubeserve,kubeserve-sklearn --json bench/server/results-latest.json --png "" || exit 1;; \
	  image) echo "== bench/image: the image model, kubeserve alone (peers: bench/image/README.md)"; \
	    $(BENCH_LOCK) $(BIN)/python bench/image/run_image_bench.py --servers kubeserve --json bench/image/results-latest.json || exit 1;; \
	  *) echo "unknown benchmark '$$b' (operator, router, server, image)"; exit 2;; \
	esac; done

clean:
	rm -rf $(VENV) $(KSERVE_VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis .tools
