# pgsteward — the two commands a newcomer needs are `make run` and `make test`.
#
# Test dependencies (PostgreSQL majors, shellcheck, hadolint, buildx, helm, the
# local Kubernetes of e2e/node/ built from the Go module proxy, a
# Python venv) are installed once into $(PGSTEWARD_CACHE), outside the repo.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -Eeuo pipefail -c
.DEFAULT_GOAL := help

export PGSTEWARD_CACHE ?= /var/cache/pgsteward
# The majors the image tier runs against: the upgrade source and the current one.
export PGSTEWARD_TEST_MAJORS ?= 17 18

CARGO ?= cargo
# Generated cases per property of the parser tests (crates/pgsteward-operator/
# tests/parsers.rs): make test's fixed budget, a few seconds per target.
export PGSTEWARD_PARSER_CASES ?= 256

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: run
run: ## install the CRDs into the current kube context and run the operator
	@hack/run.sh

.PHONY: test
test: test-deps lint test-unit test-image test-chart test-cluster test-node test-make-run ## install test deps, then run every tier
	@echo "make test: all tiers finished"

.PHONY: test-deps
test-deps: ## install (once, cached) everything the tests need
	@e2e/setup/test-deps.sh

.PHONY: lint
lint: ## rustfmt, clippy, shellcheck, hadolint, CRD drift, bake matrix
	@hack/lint.sh

.PHONY: test-unit
test-unit: ## Rust unit and mocked-API tests, including those that run the image's scripts (ignored by a bare cargo test)
	$(CARGO) test --workspace --locked -- --include-ignored

.PHONY: test-image
test-image: ## the image's scripts against real PostgreSQL
	@e2e/run-tier.sh image

.PHONY: test-chart
test-chart: ## helm lint and rendered-manifest validation
	@e2e/run-tier.sh chart

.PHONY: test-cluster
test-cluster: ## the operator against a real API server: a local Kubernetes started and stopped around it
	@e2e/run-tier.sh cluster

.PHONY: test-node
test-node: ## a pod of a debootstrap-made image on a real node (kubelet, containerd, kube-proxy, a provisioner) reaches a Service (needs root)
	@e2e/run-tier.sh node

.PHONY: test-make-run
test-make-run: ## make run with no cluster starts the local one; kubectl apply of the minimal sample ends Ready (needs root)
	@e2e/run-tier.sh make-run

.PHONY: crds
crds: ## regenerate crds/ from the Rust types, and the chart's copies
	$(CARGO) run --quiet --locked -p pgsteward-api --bin crdgen -- crds
	@e2e/chart/sync.sh

.PHONY: bench-upgrade
bench-upgrade: test-deps ## upgrade wall time against data size (pg_upgrade --link)
	@e2e/run-tier.sh bench-upgrade

.PHONY: bench-scale
bench-scale: ## 500 instances against a reachable API server
	@e2e/run-tier.sh bench-scale

.PHONY: e2e-kind
e2e-kind: ## the built images on kind: README quickstart, backup, PITR, upgrade 17->18 (needs Docker, kind)
	@e2e/kind/run.sh all
