#!/usr/bin/env bash
# The Go binding's bench:  bash bindings/go/bench.sh URI QUEUE N SIZE
# builds cmd/bench against RESILIENT_AMQP_LIB_DIR / RESILIENT_AMQP_INCLUDE_DIR
# (defaults: <repo>/target/release, <repo>/include) and runs it; it prints
#   BENCH go publish <msg/s> consume <msg/s>
# (and the CPU time per message on stderr).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LIB=${RESILIENT_AMQP_LIB_DIR:-$ROOT/target/release}
INC=${RESILIENT_AMQP_INCLUDE_DIR:-$ROOT/include}
export CGO_ENABLED=1 CGO_CFLAGS="-I$INC" CGO_LDFLAGS="-L$LIB -Wl,-rpath,$LIB"
export GOCACHE=${GOCACHE:-$ROOT/target/go-cache}
export GOPATH=${GOPATH:-$ROOT/target/go-path}
export GOPROXY=off GOFLAGS=-mod=mod GOTOOLCHAIN=local GOTELEMETRY=off
(cd "$HERE" && go build -o "$GOCACHE/ra-go-bench" ./cmd/bench)
exec "$GOCACHE/ra-go-bench" "$@"
