#!/usr/bin/env bash
# Install resilient-amqp as a C library: the versioned shared object, the static
# archive, the header, a pkg-config file and CMake package config files.
#
#   bash scripts/install.sh                       # into /usr/local (as root)
#   PREFIX=$HOME/.local bash scripts/install.sh   # any prefix
#   DESTDIR=/tmp/stage PREFIX=/usr bash scripts/install.sh   # staged (packaging)
#
# Variables:
#   PREFIX     default /usr/local
#   LIBDIR     default $PREFIX/lib/<multiarch> (Debian/Ubuntu: `gcc -print-multiarch`,
#              e.g. lib/x86_64-linux-gnu, where the system's pkg-config, CMake and
#              ld.so look), $PREFIX/lib where there is no multiarch
#   INCLUDEDIR default $PREFIX/include
#   DESTDIR    staging root prepended to every path written (the files still name
#              PREFIX); empty by default
#   NO_BUILD=1 use the existing target/release build instead of `cargo build --release`
#   DEBUG_FILE=0  do not keep the debug info (default 1: LIBDIR/.debug/<lib>.debug,
#              linked with --add-gnu-debuglink, where gdb finds it)
#
# What it writes (VERSION from Cargo.toml, MAJOR its first number):
#   LIBDIR/libresilient_amqp.so.VERSION   stripped, SONAME libresilient_amqp.so.MAJOR
#   LIBDIR/libresilient_amqp.so.MAJOR -> libresilient_amqp.so.VERSION
#   LIBDIR/libresilient_amqp.so       -> libresilient_amqp.so.MAJOR
#   LIBDIR/libresilient_amqp.a            debug info stripped (symbols kept)
#   LIBDIR/pkgconfig/resilient_amqp.pc
#   LIBDIR/cmake/resilient_amqp/resilient_amqpConfig.cmake, ...ConfigVersion.cmake
#       targets resilient_amqp::resilient_amqp (shared), resilient_amqp::static,
#       resilient_amqp::cpp (the header-only C++ binding, C++17)
#   INCLUDEDIR/resilient_amqp.h, INCLUDEDIR/resilient_amqp.hpp
#   LIBDIR/.debug/libresilient_amqp.so.VERSION.debug   (DEBUG_FILE=1)
# Prints the installed files. Runs ldconfig when installing into the live system
# as root (no DESTDIR).
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=${PREFIX:-/usr/local}
PREFIX=${PREFIX%/}
if [[ -z ${LIBDIR:-} ]]; then
    multiarch=$(gcc -print-multiarch 2>/dev/null || true)
    LIBDIR=$PREFIX/lib${multiarch:+/$multiarch}
fi
INCLUDEDIR=${INCLUDEDIR:-$PREFIX/include}
DESTDIR=${DESTDIR:-}
DESTDIR=${DESTDIR%/}
DEBUG_FILE=${DEBUG_FILE:-1}

VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
MAJOR=${VERSION%%.*}
if [[ ! $VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    echo "install.sh: cannot read the version from Cargo.toml (got '$VERSION')" >&2
    exit 1
fi
NAME=libresilient_amqp
REAL=$NAME.so.$VERSION
SONAME=$NAME.so.$MAJOR

if [[ ${NO_BUILD:-0} != 1 ]]; then
    cargo build --release --quiet
fi
for f in target/release/$NAME.so target/release/$NAME.a include/resilient_amqp.h; do
    [[ -f $f ]] || { echo "install.sh: $f missing (cargo build --release)" >&2; exit 1; }
done
built_soname=$(readelf -d target/release/$NAME.so | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
if [[ $built_soname != "$SONAME" ]]; then
    echo "install.sh: target/release/$NAME.so has SONAME '$built_soname', expected $SONAME" >&2
    exit 1
fi
# The static archive's system libraries, as the build wrote them (build.rs).
LIBS_PRIVATE=$(sed -n 's/^Libs.private: //p' target/release/resilient_amqp.pc)

lib=$DESTDIR$LIBDIR
inc=$DESTDIR$INCLUDEDIR
install -d "$lib" "$lib/pkgconfig" "$lib/cmake/resilient_amqp" "$inc"

# Shared object: stripped; its debug info in a separate file if asked.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp target/release/$NAME.so "$tmp/$REAL"
if [[ $DEBUG_FILE == 1 ]]; then
    install -d "$lib/.debug"
    objcopy --only-keep-debug "$tmp/$REAL" "$tmp/$REAL.debug"
    strip --strip-unneeded "$tmp/$REAL"
    (cd "$tmp" && objcopy --add-gnu-debuglink="$REAL.debug" "$REAL")
    install -m 644 "$tmp/$REAL.debug" "$lib/.debug/$REAL.debug"
else
    strip --strip-unneeded "$tmp/$REAL"
fi
install -m 755 "$tmp/$REAL" "$lib/$REAL"
ln -sfn "$REAL" "$lib/$SONAME"
ln -sfn "$SONAME" "$lib/$NAME.so"

# Static archive: debug info out, symbols kept (they are what links).
cp target/release/$NAME.a "$tmp/$NAME.a"
strip --strip-debug "$tmp/$NAME.a"
install -m 644 "$tmp/$NAME.a" "$lib/$NAME.a"

install -m 644 include/resilient_amqp.h "$inc/resilient_amqp.h"
install -m 644 bindings/cpp/include/resilient_amqp.hpp "$inc/resilient_amqp.hpp"

# pkg-config: paths relative to ${prefix} where they are under it.
rel() { # rel PATH: ${prefix}/... when PATH is under PREFIX
    case $1 in
        "$PREFIX"/*) printf '${prefix}/%s' "${1#"$PREFIX"/}" ;;
        *) printf '%s' "$1" ;;
    esac
}
cat >"$lib/pkgconfig/resilient_amqp.pc" <<EOF
prefix=$PREFIX
libdir=$(rel "$LIBDIR")
includedir=$(rel "$INCLUDEDIR")

Name: resilient_amqp
Description: RabbitMQ (AMQP 0-9-1) client that does not lose messages when the broker goes away
Version: $VERSION
Cflags: -I\${includedir}
Libs: -L\${libdir} -lresilient_amqp
Libs.private: $LIBS_PRIVATE
EOF
chmod 644 "$lib/pkgconfig/resilient_amqp.pc"

# CMake: relocatable (paths from the config file's own place).
inc_from_lib=$(realpath -m --relative-to="$LIBDIR" "$INCLUDEDIR")
static_libs=$(for l in $LIBS_PRIVATE; do
    case $l in -lpthread) ;; -l*) printf '%s;' "${l#-l}" ;; esac
done)
cat >"$lib/cmake/resilient_amqp/resilient_amqpConfig.cmake" <<EOF
# CMake package of resilient-amqp $VERSION (written by scripts/install.sh).
#
#   find_package(resilient_amqp $MAJOR.0 REQUIRED)
#   target_link_libraries(app PRIVATE resilient_amqp::resilient_amqp)  # shared
#   target_link_libraries(app PRIVATE resilient_amqp::static)          # static
#   target_link_libraries(app PRIVATE resilient_amqp::cpp)             # C++17 binding
if(TARGET resilient_amqp::resilient_amqp)
  return()
endif()
get_filename_component(_ra_libdir "\${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)
get_filename_component(_ra_includedir "\${_ra_libdir}/$inc_from_lib" ABSOLUTE)
include(CMakeFindDependencyMacro)
find_dependency(Threads)

add_library(resilient_amqp::resilient_amqp SHARED IMPORTED)
set_target_properties(resilient_amqp::resilient_amqp PROPERTIES
  IMPORTED_LOCATION "\${_ra_libdir}/$REAL"
  IMPORTED_SONAME "$SONAME"
  INTERFACE_INCLUDE_DIRECTORIES "\${_ra_includedir}"
  INTERFACE_LINK_LIBRARIES Threads::Threads)

if(EXISTS "\${_ra_libdir}/$NAME.a")
  add_library(resilient_amqp::static STATIC IMPORTED)
  set_target_properties(resilient_amqp::static PROPERTIES
    IMPORTED_LOCATION "\${_ra_libdir}/$NAME.a"
    INTERFACE_INCLUDE_DIRECTORIES "\${_ra_includedir}"
    INTERFACE_LINK_LIBRARIES "Threads::Threads;${static_libs%;}")
endif()

add_library(resilient_amqp::cpp INTERFACE IMPORTED)
set_target_properties(resilient_amqp::cpp PROPERTIES
  INTERFACE_LINK_LIBRARIES resilient_amqp::resilient_amqp
  INTERFACE_COMPILE_FEATURES cxx_std_17)

set(resilient_amqp_VERSION "$VERSION")
set(resilient_amqp_INCLUDE_DIRS "\${_ra_includedir}")
set(resilient_amqp_LIBRARIES resilient_amqp::resilient_amqp)
unset(_ra_libdir)
unset(_ra_includedir)
EOF
cat >"$lib/cmake/resilient_amqp/resilient_amqpConfigVersion.cmake" <<EOF
# Version check of the resilient_amqp package (written by scripts/install.sh):
# compatible with a requested version that is not newer and has the same major
# number (the SONAME's), exact when equal; 64-bit only.
set(PACKAGE_VERSION "$VERSION")
if(PACKAGE_FIND_VERSION AND PACKAGE_VERSION VERSION_LESS PACKAGE_FIND_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
elseif(PACKAGE_FIND_VERSION AND NOT PACKAGE_FIND_VERSION_MAJOR STREQUAL "$MAJOR")
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if(PACKAGE_FIND_VERSION STREQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
endif()
if(NOT CMAKE_SIZEOF_VOID_P STREQUAL "" AND NOT CMAKE_SIZEOF_VOID_P STREQUAL "8")
  set(PACKAGE_VERSION "\${PACKAGE_VERSION} (64bit)")
  set(PACKAGE_VERSION_UNSUITABLE TRUE)
endif()
EOF
chmod 644 "$lib/cmake/resilient_amqp/"*.cmake

if [[ -z $DESTDIR && $(id -u) == 0 ]] && command -v ldconfig >/dev/null; then
    ldconfig
fi
for f in "$lib/$REAL" "$lib/$SONAME" "$lib/$NAME.so" "$lib/$NAME.a" \
    "$lib/pkgconfig/resilient_amqp.pc" "$lib/cmake/resilient_amqp/resilient_amqpConfig.cmake" \
    "$lib/cmake/resilient_amqp/resilient_amqpConfigVersion.cmake" \
    "$inc/resilient_amqp.h" "$inc/resilient_amqp.hpp"; do
    echo "installed $f"
done
if [[ $DEBUG_FILE == 1 ]]; then
    echo "installed $lib/.debug/$REAL.debug"
fi
