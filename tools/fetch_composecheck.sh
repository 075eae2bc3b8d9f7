#!/usr/bin/env bash
# Builds tools/composecheck (compose-go, the Compose file loader of `docker compose`) into
# .cache/bin, so tests/deploy/test_docker_compose.py can validate docker-compose.yml without Docker.
# Idempotent: rebuilds only when the binary is missing or older than its sources.
# Needs Go >= 1.24 (modules from the Go module proxy); without Go it says so and exits 0, and
# the tests that need the binary are skipped with that reason.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
src="$root/tools/composecheck"
bin="${COMPOSECHECK_BIN:-$root/.cache/bin/composecheck}"

if ! command -v go >/dev/null 2>&1; then
  echo "go is not installed: docker-compose.yml schema tests will be skipped" >&2
  exit 0
fi
if [ -x "$bin" ] && [ -z "$(find "$src" -newer "$bin" -type f)" ]; then
  exit 0
fi
mkdir -p "$(dirname "$bin")"
# GOTOOLCHAIN=local: use the machine's Go, never download another (go.mod asks for 1.24).
cd "$src" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly go build -trimpath -o "$bin" .
echo "built $bin"
