#!/usr/bin/env bash
# What the Go binding needs: a Go toolchain (Debian's golang-go unless a
# `go` is on PATH already) and a C compiler for cgo (gcc). Idempotent, quiet
# when everything is there. The module itself has no dependencies.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
pkgs=()
command -v go >/dev/null || pkgs+=(golang-go)
command -v gcc >/dev/null || pkgs+=(gcc)
if ((${#pkgs[@]})); then
    bash "$ROOT/scripts/apt-install.sh" "${pkgs[@]}"
fi
