#!/bin/sh
# install.find_package: a separate CMake project (consumer/) finds the
# installed package with find_package(asyncjob) and -DCMAKE_PREFIX_PATH, links
# asyncjob::asyncjob (and asyncjob::asyncjob_static from C++ and C), builds,
# and its programs run.
. "$(dirname "$0")/common.sh"
install_tree find_package

build=$WORK/consumer-build
# Only the prefix may supply the package: no package registries, no
# asyncjob_DIR/asyncjob_ROOT from the caller's environment.
unset asyncjob_DIR asyncjob_ROOT ASYNCJOB_DIR ASYNCJOB_ROOT 2>/dev/null || :
set -- -S "$ASYNCJOB_TEST_SRC/consumer" -B "$build" \
  "-DCMAKE_PREFIX_PATH=$PREFIX" \
  "-DASYNCJOB_EXPECTED_VERSION=$ASYNCJOB_VERSION" \
  "-DCMAKE_C_COMPILER=$CC" "-DCMAKE_CXX_COMPILER=$CXX" \
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
  -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF
if [ -n "${ASYNCJOB_GENERATOR:-}" ]; then
  set -- "$@" -G "$ASYNCJOB_GENERATOR"
  [ -z "${ASYNCJOB_MAKE_PROGRAM:-}" ] || set -- "$@" "-DCMAKE_MAKE_PROGRAM=$ASYNCJOB_MAKE_PROGRAM"
fi
if [ -n "$SAN" ]; then
  set -- "$@" "-DCMAKE_C_FLAGS=$SAN" "-DCMAKE_CXX_FLAGS=$SAN" "-DCMAKE_EXE_LINKER_FLAGS=$SAN"
fi
run_logged "$WORK/configure.log" "$ASYNCJOB_CMAKE" "$@"
grep 'asyncjob .* from ' "$WORK/configure.log" || :

found_dir=$(cat "$build/asyncjob_dir.txt")
case "$(cd "$found_dir" && pwd -P)/" in
  "$(cd "$PREFIX" && pwd -P)"/*) ;;
  *) fail "find_package found asyncjob in $found_dir, not in the prefix $PREFIX" ;;
esac

run_logged "$WORK/build.log" "$ASYNCJOB_CMAKE" --build "$build"

# The shared-library consumer runs from its build RPATH, which must lead to
# the prefix, not to the build tree.
resolved=$(ldd "$build/consumer" |
           sed -n 's/^[[:space:]]*libasyncjob\.so[.0-9]* => \([^ ]*\) .*/\1/p')
case "$(cd "$(dirname "${resolved:-/nonexistent}")" 2>/dev/null && pwd -P)/" in
  "$(cd "$LIBDIR" && pwd -P)"/) say "ok: consumer loads $resolved" ;;
  *) fail "consumer loads libasyncjob from '$resolved', not from $LIBDIR" ;;
esac
if needed_libs "$build/consumer_static" | grep libasyncjob; then
  fail "consumer_static depends on the shared library"
fi

for prog in consumer consumer_static consumer_c_static; do
  "$build/$prog" || fail "$prog failed (exit status $?)"
done
