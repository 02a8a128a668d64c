#!/bin/bash
# The provider refuses to load, with an OpenSSL error naming it, instead of
# aborting the program: when its worker threads cannot start (256 workers,
# 8 MiB stacks each, under a 200 MB address-space limit), and when
# ASYNCJOB_PROVIDER_WORKERS or ASYNCJOB_PROVIDER_COMPLETION_BATCH_US is out
# of range or not a number. Then, without those, it loads.
#
#   load_failure.sh OPENSSL PROVIDER_DIR
set -u
openssl=$1
provider_dir=$2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
failures=0

# Runs `openssl list -providers` with the provider under the given shell
# limits and environment; expects a clean failure whose output holds $1.
# $3 is the number of workers, $4 (optional) the completion batch window.
expect_refused() {
  local expected=$1 limits=$2 workers=$3 batch=${4-250}
  bash -c "$limits; ASYNCJOB_PROVIDER_WORKERS='$workers' \
    ASYNCJOB_PROVIDER_COMPLETION_BATCH_US='$batch' exec '$openssl' list -providers \
    -provider-path '$provider_dir' -provider asyncjob" >"$out" 2>&1
  local status=$?
  if [ "$status" -eq 0 ]; then
    echo "FAIL: workers=$workers batch=$batch ($limits): the provider loaded"
    failures=$((failures + 1))
  elif [ "$status" -ge 128 ]; then
    echo "FAIL: workers=$workers batch=$batch ($limits): killed by signal $((status - 128))"
    failures=$((failures + 1))
  elif ! grep -q "$expected" "$out"; then
    echo "FAIL: workers=$workers batch=$batch ($limits): no \"$expected\" in the output"
    failures=$((failures + 1))
  elif ! grep -q "name=asyncjob" "$out"; then
    echo "FAIL: workers=$workers batch=$batch ($limits): the error does not name the provider"
    failures=$((failures + 1))
  else
    echo "ok: workers=$workers batch=$batch ($limits): refused with exit $status"
  fi
  cat "$out"
}

expect_refused "asyncjob: could not start 256 worker threads" "ulimit -s 8192; ulimit -v 200000" 256
for workers in 100000 0 -1 -2147483649 99999999999999999999 garbage 4x ""; do
  expect_refused "workers must be a number from 1 to 256" ":" "$workers"
done
expect_refused "workers must be a number from 1 to 256" "ulimit -s 8192; ulimit -v 200000" 100000
for batch in -1 1000001 99999999999999999999 garbage 10us ""; do
  expect_refused "completion_batch_us must be a number from 0 to 1000000" ":" 2 "$batch"
done

ASYNCJOB_PROVIDER_WORKERS=3 "$openssl" list -providers -provider-path "$provider_dir" \
  -provider asyncjob >"$out" 2>&1
if [ $? -ne 0 ] || ! grep -q "status: active" "$out"; then
  echo "FAIL: with 3 workers the provider did not load"; cat "$out"; failures=$((failures + 1))
fi

for batch in 0 1000000; do
  ASYNCJOB_PROVIDER_COMPLETION_BATCH_US=$batch "$openssl" list -providers \
    -provider-path "$provider_dir" -provider asyncjob >"$out" 2>&1
  if [ $? -ne 0 ] || ! grep -q "status: active" "$out"; then
    echo "FAIL: with a completion batch window of $batch us the provider did not load"
    cat "$out"; failures=$((failures + 1))
  fi
done

[ "$failures" -eq 0 ] || { echo "$failures failures"; exit 1; }
echo "ok: every refusal was a clean error naming the provider"
