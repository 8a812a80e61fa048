#!/usr/bin/env bash
# What the C++ binding needs: g++ (C++17) and cmake (Debian's package).
# Idempotent; quiet when all is there.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v g++ >/dev/null || missing+=(g++)
if ((${#missing[@]})); then
    bash "$ROOT/scripts/apt-install.sh" "${missing[@]}"
fi
