#!/usr/bin/env bash
# Builds and runs the C++ binding's tests (CMake, -Wall -Wextra -Werror) against
# the broker in RESILIENT_AMQP_TEST_URI; the fault test runs
# "$RESILIENT_AMQP_TEST_CTL close_all_connections test" every 0.5 s.
#
#   RESILIENT_AMQP_TEST_URI      amqp URI of the broker (required)
#   RESILIENT_AMQP_TEST_CTL      command prefix that runs rabbitmqctl (required: fault test)
#   RESILIENT_AMQP_LIB_DIR       directory with libresilient_amqp.so (default <repo>/target/release)
#   RESILIENT_AMQP_INCLUDE_DIR   directory with resilient_amqp.h (default <repo>/include)
#   RESILIENT_AMQP_CPP_ASAN=0    skip the second run under -fsanitize=address,undefined
#   RESILIENT_AMQP_CPP_BUILD     build directory (default <repo>/target/bindings/cpp)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
: "${RESILIENT_AMQP_TEST_URI:?RESILIENT_AMQP_TEST_URI is not set}"
: "${RESILIENT_AMQP_TEST_CTL:?RESILIENT_AMQP_TEST_CTL is not set}"
export RESILIENT_AMQP_LIB_DIR=${RESILIENT_AMQP_LIB_DIR:-$ROOT/target/release}
export RESILIENT_AMQP_INCLUDE_DIR=${RESILIENT_AMQP_INCLUDE_DIR:-$ROOT/include}
BUILD=${RESILIENT_AMQP_CPP_BUILD:-$ROOT/target/bindings/cpp}

say() { echo "cpp/test.sh: $*"; }

# The header alone, as C++17 and C++20, warnings as errors.
for std in c++17 c++20; do
    echo '#include <resilient_amqp.hpp>' |
        g++ -std=$std -Wall -Wextra -Werror -Wpedantic -fsyntax-only -x c++ \
            -I"$HERE/include" -I"$RESILIENT_AMQP_INCLUDE_DIR" -
done
say "header compiles alone (C++17, C++20)"

build() { # DIR EXTRA_CMAKE_ARGS...
    local dir=$1
    shift
    cmake -S "$HERE" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DRESILIENT_AMQP_LIB_DIR="$RESILIENT_AMQP_LIB_DIR" \
        -DRESILIENT_AMQP_INCLUDE_DIR="$RESILIENT_AMQP_INCLUDE_DIR" "$@" >"$dir.cmake.log" 2>&1 ||
        { cat "$dir.cmake.log" >&2; return 1; }
    cmake --build "$dir" -j2 >"$dir.build.log" 2>&1 || { cat "$dir.build.log" >&2; return 1; }
}

mkdir -p "$(dirname "$BUILD")"
build "$BUILD"
say "built (test_cpp, bench_cpp)"
"$BUILD/test_cpp"

if [[ ${RESILIENT_AMQP_CPP_ASAN:-1} != 0 ]]; then
    build "$BUILD-asan" -DRESILIENT_AMQP_SANITIZE=ON
    say "again under -fsanitize=address,undefined"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$BUILD-asan/test_cpp"
fi
say "all passed"
