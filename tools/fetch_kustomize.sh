#!/usr/bin/env bash
# Builds kustomize from the Go module proxy into .cache/bin (the manifest tests render
# deploy/k8s with it). Idempotent: does nothing when the pinned version is already there.
# v5.8.2 is the newest release that builds with Go 1.26 (v5.8.3 needs Go 1.27); it builds on
# sigs.k8s.io/kustomize/api v0.21.2.
set -euo pipefail

VERSION="${KUSTOMIZE_VERSION:-v5.8.2}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="${ROOT}/.cache/bin"
STAMP="${BIN_DIR}/.kustomize-${VERSION}"

if [[ -x "${BIN_DIR}/kustomize" && -f "${STAMP}" ]]; then
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "fetch_kustomize: no Go toolchain; the manifest tests will be skipped" >&2
  exit 0
fi
mkdir -p "${BIN_DIR}"
# GOTOOLCHAIN=local: never download another Go (v5.8.2 builds with the Go 1.26 here).
GOBIN="${BIN_DIR}" GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0 \
  go install "sigs.k8s.io/kustomize/kustomize/v5@${VERSION}"
rm -f "${BIN_DIR}"/.kustomize-*
touch "${STAMP}"
"${BIN_DIR}/kustomize" version
