#!/usr/bin/env bash
# The installed library works the way a C user gets it (issue 17):
#
#   RESILIENT_AMQP_TEST_URI=amqp://... bash scripts/install-test.sh
#
#   1. exports   nm -D --defined-only of target/release/libresilient_amqp.so and of
#                the installed (stripped) copy equal abi/exports.txt; SONAME .so.MAJOR
#   2. install   scripts/install.sh into a temporary prefix
#   3. pkg-config  examples-c/publisher.c, consumer.c and tests/install/version.c,
#                copied out of the checkout, built with `pkg-config --cflags --libs`
#                alone (PKG_CONFIG_PATH = the prefix) and run against the broker;
#                ldd must resolve the library in the prefix
#   4. cmake     tests/install/ (copied) configured with CMAKE_PREFIX_PATH = the
#                prefix: find_package(resilient_amqp), the shared, static and C++
#                targets; publisher and consumer run against the broker
#   5. deb       scripts/deb.sh; as root with a working apt-get: apt-get install -y
#                the two .debs, steps 3 and 4 again against /usr with no
#                PKG_CONFIG_PATH / CMAKE_PREFIX_PATH, then apt-get remove -y
#                (skipped with a note otherwise, or with RA_INSTALL_TEST_DEB=0)
#
# Needs RESILIENT_AMQP_TEST_URI (the broker; scripts/test.sh sets it) and
# optionally RESILIENT_AMQP_TEST_CTL (to delete the queues it made).
# NO_BUILD=1: do not run cargo build --release first.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

URI=${RESILIENT_AMQP_TEST_URI:-}
if [[ -z $URI ]]; then
    echo "install-test.sh: set RESILIENT_AMQP_TEST_URI (bash scripts/test.sh does)" >&2
    exit 2
fi
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
MAJOR=${VERSION%%.*}
MULTIARCH=$(gcc -print-multiarch)
COUNT=2000

work=$(mktemp -d /tmp/resilient-amqp-install-test.XXXXXX)
queues=()
deb_installed=0
cleanup() {
    if [[ $deb_installed == 1 ]]; then
        apt-get remove -y -q libresilient-amqp-dev "libresilient-amqp$MAJOR" >/dev/null 2>&1 || true
    fi
    if [[ -n ${RESILIENT_AMQP_TEST_CTL:-} ]]; then
        for q in "${queues[@]}"; do
            sh -c "$RESILIENT_AMQP_TEST_CTL delete_queue '$q'" >/dev/null 2>&1 || true
        done
    fi
    rm -rf "$work"
}
trap cleanup EXIT

step() { echo "== install-test: $*"; }
fail() {
    echo "install-test: FAIL: $*" >&2
    exit 1
}

# --- 1. exports ------------------------------------------------------------------
if [[ ${NO_BUILD:-0} != 1 ]]; then
    cargo build --release --quiet
fi
exports() { nm -D --defined-only "$1" | awk '{print $3}' | LC_ALL=C sort; }
expected=$(grep -v '^#' abi/exports.txt | sed '/^$/d' | LC_ALL=C sort)
check_exports() { # check_exports SO
    local got
    got=$(exports "$1")
    if [[ $got != "$expected" ]]; then
        diff <(echo "$expected") <(echo "$got") >&2 || true
        fail "$1 exports differ from abi/exports.txt (< listed, > exported)"
    fi
    readelf -d "$1" | grep -q "Library soname: \[libresilient_amqp.so.$MAJOR\]" ||
        fail "$1: SONAME is not libresilient_amqp.so.$MAJOR"
}
step "exports of target/release/libresilient_amqp.so = abi/exports.txt ($(echo "$expected" | wc -l) symbols)"
check_exports target/release/libresilient_amqp.so

# --- 2. install into a temporary prefix ----------------------------------------------
prefix=$work/prefix
step "install into $prefix"
NO_BUILD=1 PREFIX=$prefix bash scripts/install.sh >"$work/install.log"
libdir=$prefix/lib/$MULTIARCH
check_exports "$libdir/libresilient_amqp.so.$VERSION"
[[ -L $libdir/libresilient_amqp.so.$MAJOR && -L $libdir/libresilient_amqp.so ]] ||
    fail "the .so.$MAJOR / .so links are missing"
size=$(stat -c %s "$libdir/libresilient_amqp.so.$VERSION")
step "installed libresilient_amqp.so.$VERSION: $size bytes (target/release: $(stat -c %s target/release/libresilient_amqp.so))"

# The programs, copied out of the checkout.
src=$work/src
mkdir -p "$src"
cp examples-c/publisher.c examples-c/consumer.c tests/install/version.c tests/install/version.cpp \
    tests/install/CMakeLists.txt "$src/"

# run_examples TAG DIR EXPECTED_LIB: version, publisher then consumer from DIR;
# ldd of each must name EXPECTED_LIB.
run_examples() {
    local tag=$1 dir=$2 lib=$3 q out loaded
    for prog in version publisher consumer; do
        loaded=$(cd "$work" && ldd "$dir/$prog" | awk '/libresilient_amqp/ {print $3}')
        [[ -n $loaded && $(realpath "$loaded") == $(realpath "$lib") ]] ||
            fail "$tag: $prog loads '$loaded', not $lib"
    done
    out=$(cd "$work" && "$dir/version") || fail "$tag: version: $out"
    [[ $out == "resilient-amqp $VERSION abi "* ]] || fail "$tag: version printed '$out'"
    q=resilient-amqp-install-test-$tag-$$
    queues+=("$q")
    out=$(cd "$work" && timeout 60 "$dir/publisher" "$URI" "$q" "$COUNT") ||
        fail "$tag: publisher exited $?: $out"
    grep -q "published $COUNT messages" <<<"$out" && grep -q "unsent: 0" <<<"$out" ||
        fail "$tag: publisher: $out"
    out=$(cd "$work" && timeout 60 "$dir/consumer" "$URI" "$q" "$COUNT" 30) ||
        fail "$tag: consumer exited $?: $out"
    grep -q "received $COUNT messages" <<<"$out" || fail "$tag: consumer: $out"
    step "$tag: version, publisher ($COUNT messages) and consumer ran against $lib"
}

# build_pkgconfig TAG OUT RPATH: the three C programs with pkg-config's flags.
build_pkgconfig() {
    local tag=$1 out=$2 rpath=$3 flags
    mkdir -p "$out"
    flags=$(pkg-config --cflags --libs resilient_amqp) || fail "$tag: pkg-config found no resilient_amqp"
    [[ $(pkg-config --modversion resilient_amqp) == "$VERSION" ]] || fail "$tag: pkg-config version"
    for prog in version publisher consumer; do
        # shellcheck disable=SC2086 # the flags are words
        (cd "$work" && cc -std=c11 -Wall -Wextra -Werror -pthread "$src/$prog.c" $flags \
            ${rpath:+-Wl,-rpath,$rpath} -o "$out/$prog") || fail "$tag: cc $prog.c"
    done
    echo "   cc ... $flags"
}

# build_cmake TAG OUT [CMAKE ARGS]: tests/install/ configured and built.
build_cmake() {
    local tag=$1 out=$2
    shift 2
    cmake -S "$src" -B "$out" -DCMAKE_BUILD_TYPE=Release "$@" >"$out.log" 2>&1 ||
        { cat "$out.log" >&2; fail "$tag: cmake configure"; }
    grep -o 'resilient_amqp [0-9.]* from .*' "$out.log" | sed 's/^/   /'
    cmake --build "$out" -j 2 >>"$out.log" 2>&1 || { cat "$out.log" >&2; fail "$tag: cmake build"; }
    for prog in version_static version_cpp; do
        (cd "$work" && "$out/$prog" >/dev/null) || fail "$tag: $prog"
    done
    ! ldd "$out/version_static" | grep -q libresilient_amqp || fail "$tag: version_static loads the .so"
}

# --- 3. pkg-config alone ----------------------------------------------------------------
step "pkg-config (PKG_CONFIG_PATH=$libdir/pkgconfig)"
PKG_CONFIG_PATH=$libdir/pkgconfig PKG_CONFIG_LIBDIR= \
    build_pkgconfig prefix-pkgconfig "$work/pc" "$libdir"
run_examples prefix-pkgconfig "$work/pc" "$libdir/libresilient_amqp.so.$MAJOR"

# --- 4. CMake alone ---------------------------------------------------------------------
step "cmake (CMAKE_PREFIX_PATH=$prefix)"
build_cmake prefix-cmake "$work/cm" -DCMAKE_PREFIX_PATH="$prefix"
run_examples prefix-cmake "$work/cm" "$libdir/libresilient_amqp.so.$MAJOR"

# --- 5. the .deb ------------------------------------------------------------------------
step "deb: scripts/deb.sh"
mapfile -t debs < <(NO_BUILD=1 OUT="$work/deb" bash scripts/deb.sh)
[[ ${#debs[@]} == 2 ]] || fail "deb.sh made ${#debs[@]} packages: ${debs[*]}"
for d in "${debs[@]}"; do
    echo "   $(basename "$d"): $(stat -c %s "$d") bytes"
done
if [[ ${RA_INSTALL_TEST_DEB:-1} == 0 ]]; then
    step "deb: not installed (RA_INSTALL_TEST_DEB=0)"
elif [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
    step "deb: not installed (needs root and apt-get)"
elif dpkg -s "libresilient-amqp$MAJOR" >/dev/null 2>&1; then
    step "deb: not installed (libresilient-amqp$MAJOR is already installed on this machine; left alone)"
else
    step "deb: apt-get install -y ${debs[*]}"
    deb_installed=1
    apt-get install -y -q -o DPkg::Lock::Timeout=120 --no-install-recommends "${debs[@]}" \
        >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; fail "apt-get install"; }
    syslib=/usr/lib/$MULTIARCH/libresilient_amqp.so.$MAJOR
    step "deb: pkg-config against /usr (no PKG_CONFIG_PATH)"
    (unset PKG_CONFIG_PATH PKG_CONFIG_LIBDIR && build_pkgconfig deb-pkgconfig "$work/deb-pc" "") ||
        exit 1
    run_examples deb-pkgconfig "$work/deb-pc" "$syslib"
    step "deb: cmake against /usr (no CMAKE_PREFIX_PATH)"
    (unset CMAKE_PREFIX_PATH && build_cmake deb-cmake "$work/deb-cm") || exit 1
    run_examples deb-cmake "$work/deb-cm" "$syslib"
    step "deb: apt-get remove -y"
    apt-get remove -y -q -o DPkg::Lock::Timeout=120 libresilient-amqp-dev "libresilient-amqp$MAJOR" \
        >>"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; fail "apt-get remove"; }
    deb_installed=0
    [[ ! -e $syslib ]] || fail "$syslib still there after apt-get remove"
fi
step "PASS"
