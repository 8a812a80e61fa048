#!/usr/bin/env bash
# Dependencies of the Python binding. The binding itself is pure Python over
# ctypes (standard library) and the tests use unittest: nothing to install
# for them. The pip-install check in test.sh builds the package offline with
# setuptools, which needs `wheel` (pinned, installed into bindings/python/.deps,
# never system-wide). Idempotent and quiet when all is there.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WHEEL=wheel==0.45.1
if ! command -v python3 >/dev/null 2>&1; then
    bash "$here/../../scripts/apt-install.sh" python3 python3-pip
fi
python3 - <<'PY'
import sys
if sys.version_info < (3, 8):
    sys.exit(f"bindings/python needs Python >= 3.8, found {sys.version.split()[0]}")
import ctypes  # noqa: F401
PY
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
if ! PYTHONPATH="$here/.deps" python3 -c "import setuptools" 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check --target "$here/.deps" setuptools==69.5.1
fi
if [[ ! -d $here/.deps/wheel-0.45.1.dist-info ]]; then
    python3 -m pip install --quiet --disable-pip-version-check \
        --target "$here/.deps" "$WHEEL"
fi
