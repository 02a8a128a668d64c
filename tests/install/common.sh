# Shared by the install.* checks (POSIX sh; sourced, not run).
#
# Every check installs the already-built tree into a fresh prefix of its own
# under the build directory (so that checks run in parallel do not share one),
# then works only from that prefix, and removes everything it made on exit.
# Set ASYNCJOB_KEEP_INSTALL_TESTS=1 to keep the directory for inspection.
#
# The CTest registration (CMakeLists.txt next to this file) passes:
#   ASYNCJOB_CMAKE        the cmake running the build
#   ASYNCJOB_BUILD_DIR    the build tree to install
#   ASYNCJOB_SOURCE_DIR   the project's source tree
#   ASYNCJOB_TEST_SRC     this directory
#   ASYNCJOB_TEST_WORK    where the temporary directories go
#   ASYNCJOB_LIBDIR       CMAKE_INSTALL_LIBDIR, ASYNCJOB_INCLUDEDIR likewise
#   ASYNCJOB_VERSION      the project version
#   ASYNCJOB_CC, ASYNCJOB_CXX           the project's compilers
#   ASYNCJOB_SANITIZER_FLAGS            -fsanitize=... of a sanitizer build
#   ASYNCJOB_SANITIZER_C_LIBS           and what C programs add to the link
#   ASYNCJOB_NM, ASYNCJOB_READELF, ASYNCJOB_PKG_CONFIG   tools

# shellcheck disable=SC2034 # the variables set here are for the drivers
set -eu

fail() {
  printf 'FAIL: %s\n' "$*" >&2
  exit 1
}

say() {
  printf '%s\n' "$*"
}

# need_tool COMMAND DEBIAN-PACKAGE
need_tool() {
  command -v "$1" >/dev/null 2>&1 ||
    fail "'$1' not found; on Debian/Ubuntu install the package '$2'"
}

for _var in ASYNCJOB_CMAKE ASYNCJOB_BUILD_DIR ASYNCJOB_SOURCE_DIR ASYNCJOB_TEST_SRC ASYNCJOB_TEST_WORK \
            ASYNCJOB_LIBDIR ASYNCJOB_INCLUDEDIR ASYNCJOB_VERSION ASYNCJOB_CC ASYNCJOB_CXX; do
  eval "_val=\${$_var:-}"
  [ -n "$_val" ] || fail "$_var is not set; run this through ctest"
done
CC=$ASYNCJOB_CC
CXX=$ASYNCJOB_CXX
SAN=${ASYNCJOB_SANITIZER_FLAGS:-}
SAN_C_LIBS=${ASYNCJOB_SANITIZER_C_LIBS:-}
NM=${ASYNCJOB_NM:-nm}
READELF=${ASYNCJOB_READELF:-readelf}
PKG_CONFIG=${ASYNCJOB_PKG_CONFIG:-pkg-config}

# install_tree NAME: installs into $WORK/prefix, WORK being a new directory
# named after the check. Sets WORK, PREFIX, LIBDIR, INCLUDEDIR.
install_tree() {
  WORK=$ASYNCJOB_TEST_WORK/$1.$$
  rm -rf "$WORK"
  mkdir -p "$WORK"
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap 'exit 129' HUP
  PREFIX=$WORK/prefix
  LIBDIR=$PREFIX/$ASYNCJOB_LIBDIR
  INCLUDEDIR=$PREFIX/$ASYNCJOB_INCLUDEDIR
  # A DESTDIR in the environment would send the files elsewhere.
  if ! (unset DESTDIR; exec "$ASYNCJOB_CMAKE" --install "$ASYNCJOB_BUILD_DIR" --prefix "$PREFIX") \
       >"$WORK/install.log" 2>&1; then
    cat "$WORK/install.log" >&2
    fail "cmake --install $ASYNCJOB_BUILD_DIR --prefix $PREFIX failed"
  fi
}

cleanup() {
  _status=$?
  if [ -n "${WORK:-}" ] && [ -d "$WORK" ]; then
    if [ -n "${ASYNCJOB_KEEP_INSTALL_TESTS:-}" ]; then
      printf 'kept %s\n' "$WORK" >&2
    else
      rm -rf "$WORK"
    fi
  fi
  exit "$_status"
}

# use_pkg_config: pkg-config sees the prefix's .pc files and nothing else
# (not a system-wide asyncjob.pc, should one exist).
use_pkg_config() {
  need_tool "$PKG_CONFIG" pkgconf
  PKG_CONFIG_PATH=$LIBDIR/pkgconfig
  PKG_CONFIG_LIBDIR=$LIBDIR/pkgconfig
  export PKG_CONFIG_PATH PKG_CONFIG_LIBDIR
  unset PKG_CONFIG_SYSROOT_DIR 2>/dev/null || :
}

# run_logged LOG COMMAND...: runs COMMAND, output to LOG; shows LOG and fails
# when it fails.
run_logged() {
  _log=$1
  shift
  if ! "$@" >"$_log" 2>&1; then
    cat "$_log" >&2
    fail "command failed: $*"
  fi
}

# needed_libs ELF: its DT_NEEDED entries, one a line.
needed_libs() {
  LC_ALL=C "$READELF" -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p'
}
