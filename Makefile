# SoundSentry developer commands. `make test` is the one CI runs (.ci/run).
# Needs: Python >= 3.11; for the Kafka tests on a machine without Docker, a JDK 17+ and Maven.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
# Two installs: running SoundSentry (`make install`: the package and plots, under 1 GB) and
# developing it (`make test` and the other targets: test tools and PyTorch, which the tests use
# to train a tiny model; PyTorch from PyPI is about 5 GB with its CUDA packages).
RUN_STAMP := $(VENV)/.installed-run
STAMP  := $(VENV)/.installed
# The same folder `soundsentry kafka-local` and the test harness use by default: fetched once.
KAFKA_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/soundsentry/kafka
RUN_EXTRAS ?= plot
EXTRAS ?= dev,train,plot
# uv installs what pip does, five to ten times faster (measured: the run install 5 s against
# pip's 63 s, the development one 31 s against 156 s); INSTALLER=pip uses pip alone.
INSTALLER ?= uv
ifeq ($(INSTALLER),uv)
PIP_INSTALL = $(BIN)/uv pip install --python $(PY)
else
PIP_INSTALL = $(BIN)/pip install --progress-bar on
endif
export SOUNDSENTRY_KAFKA_CACHE := $(KAFKA_CACHE)

.PHONY: help install kafka mosquitto prometheus deploy-tools lint format proto docs dashboards test test-unit clean

help:
	@echo "make test      create .venv, install, fetch Kafka, install Mosquitto and Prometheus, build kustomize and composecheck, lint, type-check, run every test"
	@echo "make install   create .venv and install soundsentry to run it (no test tools, no PyTorch)"
	@echo "make kafka     fetch Apache Kafka's jars from Maven Central (once, into ~/.cache/soundsentry/kafka)"
	@echo "make lint      ruff check, ruff format --check, mypy, lint-imports (the import rules)"
	@echo "make format    apply ruff's fixes and formatting"
	@echo "make proto     regenerate shared/soundsentry/v1 from proto/"
	@echo "make docs      regenerate docs/configuration.md from the settings"
	@echo "make dashboards regenerate deploy/grafana/dashboards and the k8s PrometheusRule (from deploy/prometheus/rules)"
	@echo "make test-unit the tests that need no broker"

define make_venv
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is needed, found " + sys.version)'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip $(if $(filter uv,$(INSTALLER)),uv)
endef

$(RUN_STAMP): pyproject.toml
	$(make_venv)
	@echo "installing soundsentry[$(RUN_EXTRAS)] (about 0.8 GB)"
	$(PIP_INSTALL) -e '.[$(RUN_EXTRAS)]'
	@touch $@

$(STAMP): pyproject.toml
	$(make_venv)
	@echo "installing soundsentry[$(EXTRAS)] for development and tests (about 6 GB with PyTorch)"
	$(PIP_INSTALL) -e '.[$(EXTRAS)]'
	@touch $@ $(RUN_STAMP)

install: $(RUN_STAMP)

kafka: $(STAMP)
	$(PY) -m soundsentry.testing.kafka_broker fetch --cache $(KAFKA_CACHE)

# Debian packages some tests need, installed when missing if we may (root with apt-get);
# elsewhere those tests say they are skipped. $(1) package, $(2) check, $(3) who needs it.
define debian_package
	@{ $(2); } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's $(1) for $(3)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null; \
	  else \
	    echo "$(1) is missing and cannot be installed here: $(3) will be skipped"; \
	  fi; }
endef

# Mosquitto for the MQTT notification tests.
mosquitto:
	$(call debian_package,mosquitto,command -v mosquitto || test -x /usr/sbin/mosquitto,the MQTT tests)

# Prometheus for the dashboard test (every panel's query must return series), and its promtool
# for the Prometheus config and alert-rule tests.
prometheus:
	$(call debian_package,prometheus,command -v prometheus && command -v promtool,the dashboard and Prometheus config tests)

# Built from the Go module proxy into .cache/bin: kustomize renders deploy/k8s for its tests,
# composecheck validates docker-compose.yml with compose-go (what `docker compose` uses).
deploy-tools:
	bash tools/fetch_kustomize.sh
	bash tools/fetch_composecheck.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy benchmarks
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

proto: $(STAMP)
	$(PY) tools/gen_proto.py

docs: $(STAMP)
	$(PY) tools/gen_config_docs.py

dashboards: $(STAMP)
	$(PY) tools/gen_dashboards.py
	$(PY) tools/gen_prometheus_rule.py

test: $(STAMP)
	$(MAKE) --no-print-directory kafka
	$(MAKE) --no-print-directory mosquitto
	$(MAKE) --no-print-directory prometheus
	$(MAKE) --no-print-directory deploy-tools
	$(MAKE) --no-print-directory lint
	$(BIN)/pytest

test-unit: $(STAMP)
	$(BIN)/pytest -m "not kafka"

clean:
	rm -rf $(VENV) .kafka .mypy_cache .ruff_cache .pytest_cache build *.egg-info
