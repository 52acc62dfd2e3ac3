# Self-documenting: every target with a `## comment` shows up in `make help`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin

# REDIS_MODE=cluster: the online store is a Redis Cluster (devservices forms one locally on
# 7000-7005; REDIS_CLUSTER_NODES lists the startup nodes in Feast's format).
REDIS_MODE ?= standalone
REDIS_CLUSTER_NODES ?= 127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002
ifeq ($(REDIS_MODE),cluster)
export REDIS_TYPE := redis_cluster
export REDIS_CONNECTION_STRING := $(REDIS_CLUSTER_NODES)
else
export REDIS_TYPE ?= redis
export REDIS_CONNECTION_STRING ?= localhost:6379
endif
# KAFKA_BROKERS=3: a local KRaft cluster of that many brokers (devservices starts it on
# 9192.., controllers on +100); topics get min(3, brokers) replicas (core.kafka).
KAFKA_BROKERS ?= 1
ifeq ($(KAFKA_BROKERS),1)
export KAFKA_BOOTSTRAP_SERVERS ?= localhost:9092
else
export KAFKA_BOOTSTRAP_SERVERS := $(shell seq -s, -f '127.0.0.1:%g' 9192 $$((9191 + $(KAFKA_BROKERS))))
endif
# The default synthetic data covers the 28 days before today (see datagen).
MATERIALIZE_START ?= $(shell date -u -d '30 days ago' +%Y-%m-%dT00:00:00)
MATERIALIZE_END ?= $(shell date -u +%Y-%m-%dT%H:%M:%S)

.DEFAULT_GOAL := help
.PHONY: help install services-up services-down services-status data apply materialize train bench-feature-log \
	demo lint test clean serve bench-online bench-api-cpu stream produce bench-stream batch batch-backfill bench-batch \
	parity faults fuzz daily schemas

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,spark]'
	@touch $@

install: $(VENV)/.installed ## Create .venv and install the project with its dev tools (and Spark's s3a jars)
	@$(BIN)/python -m devservices.spark_jars

services-up: install ## Start (or reuse) Redis and a KRaft Kafka broker (KAFKA_BROKERS=3: a 3-broker cluster)
	$(BIN)/python -m devservices up

services-down: install ## Stop only what services-up started
	$(BIN)/python -m devservices down

services-status: install ## Show whether Redis and Kafka are up, and who started them
	$(BIN)/python -m devservices status

data: install ## Generate the synthetic data and backfill the window aggregates
	$(BIN)/python -m datagen
	$(BIN)/python -m batch aggregates

apply: install ## Register the feature definitions (feast apply)
	cd feature_repo && $(BIN)/feast apply

materialize: install ## Load the online store (feast materialize START END)
	cd feature_repo && $(BIN)/feast materialize $(MATERIALIZE_START) $(MATERIALIZE_END)

train: install ## Train the model on point-in-time-correct features
	$(BIN)/python -m training

stream: services-up ## Run the streaming dataflow (Kafka in, scores out; recovery in data/recovery)
	$(BIN)/fraud-stream -r data/recovery -s 5 -b 30

produce: install ## Replay the synthetic transactions into Kafka (RATE=events/s, default: fast)
	$(BIN)/fraud-produce $(if $(RATE),--rate $(RATE)) --retime

bench-stream: services-up data apply train ## Streaming benchmark: drain, freshness at 5k ev/s, naive push baseline
	flock /tmp/bench.lock $(BIN)/python -m bench.bench_stream

batch: install ## Score one day into data/scores (DATE=YYYY-MM-DD, default yesterday; PUBLISH=1)
	$(BIN)/python -m batch score $(if $(DATE),--date $(DATE)) $(if $(PUBLISH),--publish)

daily: install ## The daily chain for yesterday: materialize, score, publish, skew (DATE=YYYY-MM-DD; re-runnable)
	$(BIN)/python -m batch daily $(if $(DATE),--date $(DATE))

batch-backfill: install ## Score START..END in order, skipping finished dates (default: last 7)
	$(BIN)/python -m batch backfill --start $(or $(START),$(shell date -u -d '7 days ago' +%F)) \
		--end $(or $(END),$(shell date -u -d yesterday +%F))

bench-batch: services-up data apply train ## Batch benchmark: our job vs Feast retrieval (ROWS=1000000 by default; ENGINE=spark adds Spark)
	flock /tmp/bench.lock $(BIN)/python -m bench.bench_batch $(if $(ROWS),--rows $(ROWS)) $(if $(ENGINE),--engine $(ENGINE))

serve: install ## Run the prediction API (uvicorn, one worker per core) on SERVING_PORT (8000)
	$(BIN)/python -m serving

bench-online: services-up data apply train ## Online benchmark: our API vs feast serve vs a no-op floor (wrk); CHALLENGER=1: with a shadow-scored challenger
	flock /tmp/bench.lock $(BIN)/python -m bench.bench_online $(if $(CHALLENGER),--challenger)

bench-api-cpu: services-up data apply train ## The API's CPU per 100-record request in process (no HTTP, no wrk): the quiet A/B between trees
	flock /tmp/bench.lock $(BIN)/python -m bench.bench_api_cpu

bench-feature-log: services-up train ## What feature logging (FEATURE_LOG_DIR) costs the API: latency off vs on
	flock /tmp/bench.lock $(BIN)/python -m bench.bench_feature_log

demo: services-up data apply materialize train ## Run everything end to end on a fresh machine
	$(BIN)/python -m registry list
	$(BIN)/python -m batch score --publish
	$(BIN)/python -m scripts.demo_summary
	$(BIN)/python -m scripts.demo_stream

parity: services-up data apply train ## Score 10k transactions in batch, stream, API and a brute-force reference; compare
	$(BIN)/python -m verify.parity

faults: services-up data apply materialize train ## Kill Redis, Kafka, the stream and the batch job mid-work; print what survived
	flock /tmp/bench.lock $(BIN)/python -m verify.faults

fuzz: services-up data apply train ## Fuzz the API (schemathesis), the stream (malformed events) and batch inputs
	$(BIN)/python -m verify.fuzz

schemas: install ## Regenerate the event contract's JSON Schemas in schemas/ from core.events
	$(BIN)/python -m scripts.schemas

lint: install ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# REDIS_MODE=cluster runs the tests whose subject is the clusters, with the session's stack on
# the cluster under a Feast project of its own; not the rest (its two workers and its copies
# of feature_repo/ are kept apart by Redis database, and a cluster has only db 0). One process:
# test_redis_cluster flushes the cluster. Plain `make test` runs these files too.
CLUSTER_TESTS := tests/integration/test_kafka_cluster.py tests/integration/test_redis_cluster.py

test: lint services-up ## Lint, then every test against the real Redis, Kafka and feast CLI (REDIS_MODE=cluster: the cluster tests, on the cluster)
ifeq ($(REDIS_MODE),cluster)
	$(BIN)/pytest $(CLUSTER_TESTS)
else
	$(BIN)/pytest -n 2 --dist loadfile
endif

clean: ## Remove generated data and the model (keeps .venv and the Kafka jar cache)
	rm -rf data
