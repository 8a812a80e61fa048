#!/usr/bin/env bash
# Regenerates the fuzz corpus (fuzz/corpus/reader, fuzz/corpus/frames) from
# real RabbitMQ traffic:   bash scripts/fuzz-corpus.sh
#
# Starts a private RabbitMQ node (scripts/broker.sh, port RA_BROKER_PORT,
# default 31790), runs examples/record_fuzz_corpus.rs (a plain lapin client
# through a recording TCP proxy: publishes with confirms, a consumer getting
# bodies of 0..9000 bytes at frame_max 4096, basic.return, channel.close 404
# and 406, a broker-side basic.cancel), writes the broker's bytes after the
# handshake, rewritten for the reader probe, over the committed corpus, and
# stops the node again. See docs/FUZZING.md.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SCRIPT=fuzz-corpus.sh
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
use_cargo_env
export_test_broker 31790

BROKER_STARTED=0
finish() {
    local rc=$?
    trap - EXIT
    if ((BROKER_STARTED)); then
        bash "$ROOT/scripts/broker.sh" stop >/dev/null || echo "$SCRIPT: WARNING: could not stop the broker" >&2
    fi
    exit "$rc"
}
install_traps

say "starting the private RabbitMQ node on 127.0.0.1:$RA_BROKER_PORT"
BROKER_STARTED=1
bash scripts/broker.sh start >/dev/null

say "building the recorder"
limited 1800 cargo build --release --example record_fuzz_corpus

say "recording"
rm -rf fuzz/corpus/reader fuzz/corpus/frames
limited 300 target/release/examples/record_fuzz_corpus "127.0.0.1:$RA_BROKER_PORT" fuzz/corpus
du -sh fuzz/corpus
