#!/usr/bin/env bash
# Tests of the Go binding against a real broker:
#
#   RESILIENT_AMQP_TEST_URI=amqp://guest:guest@127.0.0.1:PORT/%2f \
#   RESILIENT_AMQP_TEST_CTL="<repo>/scripts/broker.sh ctl" \
#   bash bindings/go/test.sh
#
# RESILIENT_AMQP_LIB_DIR (default <repo>/target/release) holds
# libresilient_amqp.so, RESILIENT_AMQP_INCLUDE_DIR (default <repo>/include)
# resilient_amqp.h. Runs gofmt, go vet, go test -race (every test, the fault
# test included), a 2,000-message smoke run of the bench and the README's
# example across a broker restart (stop_app, start_app 2 s later). Installs
# nothing (see deps.sh); the Go build cache goes to <repo>/target/go-cache
# unless GOCACHE is set; no network (GOPROXY=off: the module has no
# dependencies).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LIB=${RESILIENT_AMQP_LIB_DIR:-$ROOT/target/release}
INC=${RESILIENT_AMQP_INCLUDE_DIR:-$ROOT/include}
: "${RESILIENT_AMQP_TEST_URI:?set RESILIENT_AMQP_TEST_URI (amqp URI of the test broker)}"
: "${RESILIENT_AMQP_TEST_CTL:?set RESILIENT_AMQP_TEST_CTL (command prefix running rabbitmqctl)}"
export RESILIENT_AMQP_TEST_URI RESILIENT_AMQP_TEST_CTL

if ! command -v go >/dev/null; then
    echo "bindings/go/test.sh: go not found (run bindings/go/deps.sh)" >&2
    exit 1
fi
if [[ ! -f $LIB/libresilient_amqp.so || ! -f $INC/resilient_amqp.h ]]; then
    echo "bindings/go/test.sh: no libresilient_amqp.so in $LIB or resilient_amqp.h in $INC" >&2
    exit 1
fi

export CGO_ENABLED=1
export CGO_CFLAGS="-I$INC"
export CGO_LDFLAGS="-L$LIB -Wl,-rpath,$LIB"
export GOCACHE=${GOCACHE:-$ROOT/target/go-cache}
export GOPATH=${GOPATH:-$ROOT/target/go-path}
export GOPROXY=off GOFLAGS=-mod=mod GOTOOLCHAIN=local GOTELEMETRY=off

cd "$HERE"
echo "== go: $(go version)"
unformatted=$(gofmt -l .)
if [[ -n $unformatted ]]; then
    echo "gofmt: not formatted: $unformatted" >&2
    exit 1
fi
echo "== go vet"
go vet ./...
echo "== go test -race"
go test -race -count=1 -timeout 200s -v .
echo "== bench smoke (2,000 x 64 B)"
go build -o "$GOCACHE/ra-go-bench" ./cmd/bench
timeout 60 "$GOCACHE/ra-go-bench" "$RESILIENT_AMQP_TEST_URI" "go-bench-smoke-$$" 2000 64
echo "== example: publish through a broker restart (stop_app / start_app)"
go build -o "$GOCACHE/ra-go-example-restart" ./cmd/example-restart
# whatever happens to the example, the broker is left running
trap 'sh -c "$RESILIENT_AMQP_TEST_CTL start_app" >/dev/null 2>&1 || true' EXIT
timeout 90 "$GOCACHE/ra-go-example-restart" "$RESILIENT_AMQP_TEST_URI" "$RESILIENT_AMQP_TEST_CTL" 2>/dev/null
echo "bindings/go: all tests passed"
