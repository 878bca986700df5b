# Everything a fresh machine needs: `make demo` and `make test` create .venv,
# install torch (pinned first, so no open range can pull a multi-GB CUDA build),
# then flextrain with its dev tools.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE ?= 1
export HF_HUB_DISABLE_PROGRESS_BARS ?= 1

.PHONY: install demo test test-postgres test-cluster test-export lint bench bench-dpo soak load clean security coverage

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# tcmalloc for the training workers (jobs/launch.py preloads it when present): 7-12%
# faster CPU training steps here. Best effort: without apt, workers use glibc's malloc.
TCMALLOC_STAMP := $(VENV)/.tcmalloc-stamp
$(TCMALLOC_STAMP): $(STAMP)
	test -e /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
		|| (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		libtcmalloc-minimal4) || echo "tcmalloc not installed: workers use glibc malloc"
	touch $@

install: $(STAMP) $(TCMALLOC_STAMP)

demo: install
	$(VENV)/bin/flextrain demo

# The whole suite on TEST_WORKERS processes (pytest-xdist; each test file stays on one,
# so its module fixtures are built once). Single-process CPU jobs start as forks of one
# process per worker that imported the training libraries once (FLEXTRAIN_FORK_SERVER).
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=15

# Line coverage of src/flextrain over the whole suite (a floor: it must not drop).
coverage: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --cov=flextrain --cov-report=term \
		--cov-fail-under=85

# The store, accounts, migration and API tests against a throw-away PostgreSQL
# cluster (installed from Debian packages if missing, removed afterwards).
test-postgres: install
	PY=$(PY) bash scripts/test-postgres.sh

# The Slurm and Ray executors on real engines started by the tests: a two-node Slurm
# cluster on this machine (Debian packages, installed if missing) and a local Ray head
# (flextrain[ray]); some 6 minutes on 2 cores.
test-cluster: install
	PY=$(PY) bash scripts/test-cluster.sh

# Exported GGUF files run in llama.cpp itself: installs the flextrain[gguf] extra, then
# the tests marked `export`. pip builds llama.cpp from source (about 4 minutes on 2
# cores), once per venv, for AVX2 rather than -march=native: the native build's
# AVX-512/AMX kernels crashed (segfault in decode) on a q8_0 file of the tiny test model
# on this project's Xeon. --no-cache-dir: a natively built wheel in pip's cache would be
# reused whatever CMAKE_ARGS say.
LLAMA_CPP_STAMP := .venv/.llama-cpp-avx2-stamp
LLAMA_CPP_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
$(LLAMA_CPP_STAMP): $(STAMP)
	CMAKE_ARGS="$(LLAMA_CPP_CMAKE)" $(PY) -m pip install --quiet --no-cache-dir \
		--force-reinstall --no-deps "llama-cpp-python==0.3.36"
	$(PY) -m pip install --quiet -e ".[gguf]"
	touch $@

test-export: install $(LLAMA_CPP_STAMP)
	$(PY) -m pytest -m export --durations=10

# Throughput against every batching a Trainer user has (about 35 minutes on 2 cores;
# appends to docs/benchmarks.md). Not part of `test`: it measures, it does not assert.
bench: install
	$(PY) benchmarks/throughput.py

# DPO throughput against TRL's DPOTrainer with its defaults (about 8 minutes on 2 cores;
# appends to docs/benchmarks.md).
bench-dpo: install
	$(PY) benchmarks/dpo_throughput.py

# Fault soak (bounded): workers and the API server killed at random moments mid-run;
# every job must end completed with no corrupt checkpoint (appends to docs/reliability.md).
soak: install
	$(PY) benchmarks/soak.py --minutes $(or $(SOAK_MINUTES),5)

# API load (about 2 minutes per run): 50 clients polling a server with 1,000 jobs while
# one trains; p99 latency and the training's slowdown (appends to docs/reliability.md).
load: install
	$(PY) benchmarks/load.py
	$(PY) benchmarks/load.py --reserved-cpus 1

# ruff (style, complexity, banned module-level imports), mypy, and the layering
# contracts of pyproject.toml [tool.importlinter] (no import cycles, the pure core, the
# front ends apart): a forbidden import fails here.
lint: install
	$(VENV)/bin/ruff check src tests examples benchmarks tools
	$(VENV)/bin/ruff format --check src tests examples benchmarks tools
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Headless Chromium from Debian for the browser tests (tests/web), driven by
# Python Playwright with executable_path=/usr/bin/chromium (never `playwright install`).
CHROMIUM_STAMP := $(VENV)/.chromium-stamp
.PHONY: chromium
$(CHROMIUM_STAMP):
	test -x /usr/bin/chromium || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)
	mkdir -p $(VENV)
	touch $(CHROMIUM_STAMP)
chromium: $(CHROMIUM_STAMP)
test: $(CHROMIUM_STAMP)
coverage: $(CHROMIUM_STAMP)

# The security probes alone (also part of `make test`): Host and Origin checks, sizes,
# hostile YAML, confinement, audit, headers, the browser's cross-site attacks, fuzzing.
security: install $(CHROMIUM_STAMP)
	$(PY) -m pytest tests/api/test_security.py tests/web/test_cross_site.py \
		tests/api/test_fuzz.py tests/api/test_limits.py tests/api/test_paths.py \
		tests/api/test_confinement.py tests/api/test_error_fields.py
