#!/usr/bin/env bash
# Builds asyncjob's API-sequence fuzzer with clang, libFuzzer,
# AddressSanitizer and UndefinedBehaviorSanitizer in its own build directory,
# then runs it for a given time from the committed seed corpus. Its sources
# are in tests/reliability: api_fuzzer.cc (decodes inputs into API calls and
# checks each result), api_model.h/.cc (the reference model of the documented
# semantics) and fuzz_support.h/.cc (reporting, input reader, stack sources). Any crash, leak, timeout or model mismatch (an abort with a message
# saying what differed) makes it exit non-zero; the input that caused it is
# left in build/fuzz/artifacts/.
#
#   tools/run-fuzzer.sh [SECONDS] [LIBFUZZER_OPTION...]
#
#   SECONDS                 how long to fuzz (default 60)
#   LIBFUZZER_OPTION        passed on, e.g. -runs=1000000 or -workers=2 -jobs=2
#   ASYNCJOB_FUZZ_STACKS    library (default): the library's guarded and slab
#                           stacks; custom: a custom allocator that fails on
#                           the fuzzer's demand
#   ASYNCJOB_FUZZ_SANITIZER address (default): ASan + UBSan; undefined: UBSan
#                           only, which builds the job layer's return-free
#                           switching (the default build's fast path, which
#                           ASan's fibre annotations turn off) and runs faster
#   ASYNCJOB_FUZZ_BUILD     build directory (default build/fuzz, or
#                           build/fuzz-undefined for the UBSan-only build)
#
# New inputs that reach new code go to $ASYNCJOB_FUZZ_BUILD/corpus; the
# committed corpus (tests/reliability/corpus) is only read. To reproduce a
# failure with a trace of every op:
#   ASYNCJOB_FUZZ_TRACE=1 build/fuzz/tests/reliability/api_fuzzer build/fuzz/artifacts/crash-...
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60
if (($# > 0)) && [[ $1 =~ ^[0-9]+$ ]]; then
  seconds=$1
  shift
fi
sanitizer=${ASYNCJOB_FUZZ_SANITIZER:-address}
case $sanitizer in
  address)
    build=${ASYNCJOB_FUZZ_BUILD:-build/fuzz}
    sanitizer_options=(-DASYNCJOB_SANITIZER=address)
    ;;
  undefined)
    build=${ASYNCJOB_FUZZ_BUILD:-build/fuzz-undefined}
    ubsan="-fsanitize=undefined -fno-sanitize-recover=undefined"
    sanitizer_options=(-DASYNCJOB_SANITIZER= "-DCMAKE_C_FLAGS=$ubsan" "-DCMAKE_CXX_FLAGS=$ubsan"
                       "-DCMAKE_EXE_LINKER_FLAGS=$ubsan" "-DCMAKE_SHARED_LINKER_FLAGS=$ubsan")
    ;;
  *)
    echo "ASYNCJOB_FUZZ_SANITIZER must be address or undefined" >&2
    exit 2
    ;;
esac

cmake -S . -B "$build" -G Ninja \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "${sanitizer_options[@]}" \
  -DASYNCJOB_BUILD_FUZZER=ON \
  -DASYNCJOB_BUILD_TESTS=ON -DASYNCJOB_BUILD_DEMO=OFF >/dev/null
cmake --build "$build" --target api_fuzzer

mkdir -p "$build/corpus" "$build/artifacts"
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

echo "== fuzzing for ${seconds}s (stacks: ${ASYNCJOB_FUZZ_STACKS:-library}, sanitizer: $sanitizer)"
exec "$build/tests/reliability/api_fuzzer" \
  -max_total_time="$seconds" \
  -timeout=20 \
  -detect_leaks=1 \
  -print_final_stats=1 \
  -artifact_prefix="$build/artifacts/" \
  "$@" \
  "$build/corpus" tests/reliability/corpus
