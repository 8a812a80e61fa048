#!/usr/bin/env bash
# Installs the Node binding's dependencies (koffi, pinned in
# package-lock.json) into bindings/node/node_modules with `npm ci`;
# idempotent and quiet when they are there. Needs node and npm.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "node deps.sh: node and npm are needed" >&2
    exit 1
fi
want=$(node -p "require('./package-lock.json').packages['node_modules/koffi'].version")
have=$(node -p "try { require('./node_modules/koffi/package.json').version } catch (_) { '' }")
if [ "$want" != "$have" ]; then
    # koffi ships prebuilt binaries: its install script only picks one, so
    # --ignore-scripts changes nothing and keeps npm quiet.
    npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null
fi
