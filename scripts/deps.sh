#!/usr/bin/env bash
# Install what a fresh Debian 12 machine (with Rust already installed) needs to
# build and test resilient-amqp:
#   rabbitmq-server   the broker the tests run (as a private node, scripts/broker.sh)
#   gcc g++ make      C/C++ programs in tests/c and examples-c, the C++ header check
#   pkg-config cmake  the install test (scripts/install-test.sh) and the C++ binding
#   librabbitmq-dev   rabbitmq-c, for the header-coexistence test and benchmarks
#   valgrind          memory checks of the C programs
#   git               the header-unchanged check of scripts/test.sh
#   openssl           the TLS tests' certificates (scripts/tls-certs.sh); the
#                     library itself uses rustls, no OpenSSL
#   cargo-fuzz        the fuzz step (scripts/fuzz.sh; cargo install, pinned)
# Only missing packages are installed (`dpkg -s`), with one `apt-get update`.
# Installing rabbitmq-server does not start the default RabbitMQ service here
# (see scripts/apt-install.sh); we never rely on it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/apt-install.sh \
    rabbitmq-server gcc g++ make cmake pkg-config librabbitmq-dev valgrind git ca-certificates openssl

# Rust components used by scripts/test.sh (rustup installs them; without
# rustup, the toolchain must already have them).
if [[ -f $HOME/.cargo/env ]] && ! command -v cargo >/dev/null; then
    # shellcheck source=/dev/null
    . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null; then
    echo "deps.sh: WARNING: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 1
fi
for comp in rustfmt clippy; do
    sub=${comp/rustfmt/fmt}
    if ! cargo "$sub" --version >/dev/null 2>&1; then
        if command -v rustup >/dev/null; then
            echo "deps.sh: adding rust component $comp"
            rustup component add "$comp" || echo "deps.sh: WARNING: could not add $comp" >&2
        else
            echo "deps.sh: WARNING: cargo $sub is missing and rustup is not available" >&2
        fi
    fi
done
# cargo-fuzz for scripts/fuzz.sh (the stable toolchain runs it with
# RUSTC_BOOTSTRAP=1; libFuzzer itself is built by libfuzzer-sys with g++).
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "deps.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2 ||
        echo "deps.sh: WARNING: could not install cargo-fuzz" >&2
fi
echo "deps.sh: ok"
