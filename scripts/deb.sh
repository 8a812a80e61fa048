#!/usr/bin/env bash
# Build Debian packages of resilient-amqp with dpkg-deb alone (no debhelper,
# no cargo-deb): scripts/install.sh stages the install (PREFIX=/usr,
# DESTDIR=<stage>), the files are split into two packages, dpkg-deb --build.
#
#   bash scripts/deb.sh            # -> target/deb/*.deb, paths printed
#   sudo apt-get install ./target/deb/libresilient-amqp0_*.deb ./target/deb/libresilient-amqp-dev_*.deb
#
#   libresilient-amqp0      the shared object (/usr/lib/<multiarch>/libresilient_amqp.so.0*)
#   libresilient-amqp-dev   header, .so link, static archive, pkg-config and CMake files;
#                           depends on the exact runtime version
# The separate debug file is not packaged (a -dbgsym package is not built).
#
# Variables: NO_BUILD=1 (use target/release as it is), DEB_REVISION (default 1),
# OUT (default target/deb).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-target/deb}
REVISION=${DEB_REVISION:-1}
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
MAJOR=${VERSION%%.*}
ARCH=$(dpkg --print-architecture)
MULTIARCH=$(gcc -print-multiarch)
DESCRIPTION=$(sed -n 's/^description = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
LICENSE=$(sed -n 's/^license = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
RUNTIME=libresilient-amqp$MAJOR
DEV=libresilient-amqp-dev
FULL=$VERSION-$REVISION

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
DESTDIR=$stage/all PREFIX=/usr LIBDIR=/usr/lib/$MULTIARCH DEBUG_FILE=0 \
    bash scripts/install.sh >/dev/null

libdir=usr/lib/$MULTIARCH
rt=$stage/$RUNTIME
dev=$stage/$DEV
mkdir -p "$rt/$libdir" "$dev/$libdir" "$dev/usr"
mv "$stage/all/$libdir"/libresilient_amqp.so.* "$rt/$libdir/"
mv "$stage/all/$libdir"/* "$dev/$libdir/"
mv "$stage/all/usr/include" "$dev/usr/"

# The lowest glibc that has every versioned symbol the library uses.
glibc=$(objdump -T "$rt/$libdir/libresilient_amqp.so.$VERSION" |
    grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1)

# control PKGDIR NAME SECTION DEPENDS SUMMARY: DEBIAN/control and the
# copyright file.
control() {
    local dir=$1 name=$2 section=$3 depends=$4 summary=$5
    mkdir -p "$dir/DEBIAN" "$dir/usr/share/doc/$name"
    printf 'resilient-amqp %s\nLicense: %s\n' "$VERSION" "$LICENSE" \
        >"$dir/usr/share/doc/$name/copyright"
    (cd "$dir" && find usr -type f -print0 | sort -z | xargs -0 md5sum >DEBIAN/md5sums)
    cat >"$dir/DEBIAN/control" <<EOF
Package: $name
Version: $FULL
Architecture: $ARCH
Multi-Arch: same
Section: $section
Priority: optional
Maintainer: resilient-amqp <resilient-amqp@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$dir" | cut -f1)
Depends: $depends
Description: $summary
 $DESCRIPTION.
EOF
}

control "$rt" "$RUNTIME" libs "libc6 (>= $glibc), libgcc-s1 (>= 3.0)" \
    "RabbitMQ client library that does not lose messages (shared library)"
echo "libresilient_amqp $MAJOR $RUNTIME (>= $VERSION)" >"$rt/DEBIAN/shlibs"
echo "activate-noawait ldconfig" >"$rt/DEBIAN/triggers"
control "$dev" "$DEV" libdevel "$RUNTIME (= $FULL)" \
    "RabbitMQ client library that does not lose messages (development files)"

mkdir -p "$OUT"
for pkg in "$rt" "$dev"; do
    name=$(basename "$pkg")
    find "$pkg" -type d -exec chmod 755 {} +
    chmod 644 "$pkg/DEBIAN/"*
    dpkg-deb --root-owner-group -Zxz --build "$pkg" "$OUT/${name}_${FULL}_$ARCH.deb" >/dev/null
    echo "$OUT/${name}_${FULL}_$ARCH.deb"
done
