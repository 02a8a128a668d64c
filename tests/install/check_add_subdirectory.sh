#!/bin/sh
# install.add_subdirectory: consumer/ pulls asyncjob's source tree in with
# add_subdirectory: asyncjob is not the top-level project there, so it
# defines its libraries (asyncjob::asyncjob, asyncjob::asyncjob_static,
# asyncjob::loop, asyncjob::offload) and none of its tests, demo, examples or
# benchmarks (consumer/CMakeLists.txt checks); the consumer's programs build
# with asyncjob's default options and run.
. "$(dirname "$0")/common.sh"
WORK=$ASYNCJOB_TEST_WORK/add_subdirectory.$$
rm -rf "$WORK"
mkdir -p "$WORK"
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

build=$WORK/consumer-build
set -- -S "$ASYNCJOB_TEST_SRC/consumer" -B "$build" \
  "-DASYNCJOB_SOURCE=$ASYNCJOB_SOURCE_DIR" \
  "-DCMAKE_C_COMPILER=$CC" "-DCMAKE_CXX_COMPILER=$CXX"
if [ -n "${ASYNCJOB_GENERATOR:-}" ]; then
  set -- "$@" -G "$ASYNCJOB_GENERATOR"
  [ -z "${ASYNCJOB_MAKE_PROGRAM:-}" ] || set -- "$@" "-DCMAKE_MAKE_PROGRAM=$ASYNCJOB_MAKE_PROGRAM"
fi
run_logged "$WORK/configure.log" "$ASYNCJOB_CMAKE" "$@"
# Only what the consumer links: asyncjob's libraries, no more.
run_logged "$WORK/build.log" "$ASYNCJOB_CMAKE" --build "$build" --parallel 2 \
  --target consumer consumer_static consumer_c_static
for prog in consumer consumer_static consumer_c_static; do
  "$build/$prog" || fail "$prog failed (exit status $?)"
done
say "ok: built as a subproject, asyncjob defined its libraries only"
