#!/usr/bin/env bash
# Install Debian packages that are missing (checked with `dpkg -s`):
#
#   bash scripts/apt-install.sh PKG...
#
# - runs `apt-get update` once, and only when something is missing
# - `apt-get install -y --no-install-recommends`, noninteractive
# - uses sudo only when not root
# - while installing, a temporary /usr/sbin/policy-rc.d (exit 101) keeps
#   package scripts from starting services: installing rabbitmq-server would
#   otherwise start a default node (port 5672, epmd 4369) via invoke-rc.d or
#   systemd. We never use that node (scripts/broker.sh runs a private one), and
#   a start failure there would make the whole install fail. An existing
#   policy-rc.d is left as it is. The default service may still start at the
#   next boot (systemd enables it); that is harmless for us.
set -euo pipefail

if [[ $# -eq 0 ]]; then
    echo "usage: $0 PKG..." >&2
    exit 2
fi

missing=()
for pkg in "$@"; do
    if ! dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed'; then
        missing+=("$pkg")
    fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "apt-install: already installed: $*"
    exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    if ! command -v sudo >/dev/null; then
        echo "apt-install: need root (or sudo) to install: ${missing[*]}" >&2
        exit 1
    fi
    SUDO=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
POLICY=/usr/sbin/policy-rc.d
added_policy=0
remove_policy() {
    if ((added_policy)); then
        "${SUDO[@]}" rm -f "$POLICY" || true
    fi
}
trap remove_policy EXIT
if [[ ! -e $POLICY ]]; then
    printf '#!/bin/sh\n# temporary, added by resilient-amqp scripts/apt-install.sh\nexit 101\n' |
        "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
    added_policy=1
fi

echo "apt-install: installing: ${missing[*]}"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}" </dev/null
echo "apt-install: done"
