//go:build tools

// Package tools pins the exporter the image runs: this module's go.mod and
// go.sum name postgres_exporter and every module it builds from, with their
// hashes. The image (images/postgres/Dockerfile) and the tests
// (e2e/setup/install-exporter.sh) build the same binary from it.
package tools

import _ "github.com/prometheus-community/postgres_exporter/cmd/postgres_exporter"
