# directus-ws-broker — every habit has one entry point here.
#   make demo    a real Directus (SQLite) + the broker + a Flow pointing at it, ready to try
#   make test    the whole suite: lint, unit, integration (real Directus), fuzz smoke, browser, SDK
#   make bench   the benchmark table (see docs/benchmarks.md)
SHELL := /bin/bash
GO ?= go
BIN := bin/directus-ws-broker
# A count, not a duration: Go 1.26's fuzz coordinator can fail a duration run with a spurious
# "context deadline exceeded" at the deadline (golang/go#75804); counts have no deadline to race.
FUZZTIME ?= 100000x

.PHONY: build test lint unit integration fuzz sdk bench-quick demo demo-check bench clean directus-install chromium \
	gnuplot deploy-tools deploy-test image chaos chaos-quick verify-classes

# The version printed by `directus-ws-broker version` and logged at start.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) .

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

# Installs (once, cached outside the clone) what the integration tests start.
# Both at once: one's download overlaps the other's native builds (a cold pair takes ~6 minutes).
directus-install:
	scripts/directus.sh install --version 11.17.4 >/dev/null & p=$$!; \
	scripts/directus.sh install --version 12.3.1 >/dev/null; r=$$?; wait $$p && exit $$r

# Debian's chromium for the browser test of the example page.
chromium:
	scripts/ensure-chromium.sh

# Unit tests: the domain (broker, session) with fakes and everything else that needs no
# Directus, Redis, browser or deployment tool (nothing is installed); seconds.
UNIT_ENV := DIRECTUS_TESTS=0 REDIS_TESTS=0 PODMAN_TESTS=0 NGINX_TESTS=0 CADDY_TESTS=0 SYSTEMD_TESTS=0 COMPOSE_TESTS=0
unit:
	$(UNIT_ENV) $(GO) test -race -count=1 ./...
	# Allocation counts only mean something without the race detector.
	$(GO) test -count=1 -run 'Allocates' ./broker/

# Integration tests against real Directus (11.17.4 and 12.3.1), Redis, chromium and broker
# processes, started by the project's scripts (the unit tests run again with them: seconds).
integration: directus-install chromium
	$(GO) test -race -count=1 -timeout 20m ./...

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzNormalizeWebhook$$' -fuzztime $(FUZZTIME) ./directus/
	$(GO) test -run '^$$' -fuzz '^FuzzParseFrame$$' -fuzztime $(FUZZTIME) ./protocol/extension/
	$(GO) test -run '^$$' -fuzz '^FuzzParseFrame$$' -fuzztime $(FUZZTIME) ./protocol/realtime/

# The differential test of access classes, as many models as asked (a failure names its seed;
# VERIFY_SEED=<seed> VERIFY_CASES=1 replays it). make test runs 6.
VERIFY_CASES ?= 100
VERIFY_SEED ?= 1
verify-classes: directus-install
	VERIFY_CASES=$(VERIFY_CASES) VERIFY_SEED=$(VERIFY_SEED) $(GO) test -count=1 -timeout 120m -run '^TestDifferentialClasses$$' -v ./handlers/ | grep -v '^=== '

# The official @directus/sdk realtime client (/realtime) and the graphql-ws client (/graphql)
# against the broker and against Directus itself, the same suites on both.
sdk:
	scripts/sdk-test.sh

test: lint unit integration fuzz sdk demo-check bench-quick chaos-quick
	@echo "make test: all passed"

demo: build
	scripts/demo.sh

# The README's demo command, run to completion and checked (DEMO_EXIT=1).
demo-check: build
	d=$$(mktemp -d); DEMO_EXIT=1 DEMO_DIR=$$d scripts/demo.sh; rc=$$?; rm -rf $$d; exit $$rc

BENCH_FLAGS ?=
# Also draws bench-results/latency.png (scenario 6) with gnuplot.
bench: build gnuplot
	$(GO) run ./scripts/bench $(BENCH_FLAGS)

gnuplot:
	scripts/ensure-gnuplot.sh

# A 30-second smoke run of every scenario, so the benchmark tool keeps working (run by make test).
bench-quick: build
	$(GO) run ./scripts/bench -quick -json

# The fault scenarios (issue 15) against real Directus and Redis, every acknowledged event
# accounted per subscriber: Directus killed, Redis killed, SIGTERM under backlog, hostile clients.
# About 3 minutes; CHAOS_FLAGS=-strict makes missed performance targets fail it too.
CHAOS_FLAGS ?=
chaos: build directus-install
	$(GO) run ./scripts/chaos $(CHAOS_FLAGS)

# Their short version (about a minute), run by make test: accounting failures fail it.
chaos-quick: build directus-install
	$(GO) run ./scripts/chaos -quick

# The deployment files (Dockerfile, compose.yaml, deploy/) against podman, nginx, Caddy,
# systemd-analyze and docker-compose (installed when missing; see e2e/deploy). Not part of
# `make test`.
deploy-tools:
	scripts/ensure-podman.sh
	scripts/ensure-nginx.sh
	scripts/ensure-caddy.sh
	scripts/ensure-systemd.sh
	scripts/ensure-docker-compose.sh

deploy-test: directus-install deploy-tools
	$(GO) test -race -count=1 -timeout 15m ./e2e/deploy/

# The container image, where a Docker (or podman: CONTAINER=podman) engine can pull golang and
# build it.
CONTAINER ?= docker
image:
	$(CONTAINER) build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t directus-ws-broker:$(VERSION) .

clean:
	rm -rf bin .demo bench-results
