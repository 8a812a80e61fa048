#!/usr/bin/env bash
# What the Ruby binding needs: Ruby, ruby-ffi and minitest, from Debian's
# packages. Idempotent; quiet when all is there.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if command -v ruby >/dev/null && ruby -e 'require "ffi"; require "minitest"' >/dev/null 2>&1; then
    exit 0
fi
bash "$ROOT/scripts/apt-install.sh" ruby ruby-ffi ruby-minitest
