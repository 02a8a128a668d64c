#!/bin/sh
# `openssl speed -async_jobs 16` with asyncjob preloaded: it completes, reports
# results, and asyncjob's counters show that asyncjob ran its jobs.
set -eu
openssl=$1
library=$2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
LD_PRELOAD=$library ASYNCJOB_STATS=1 "$openssl" speed -async_jobs 16 -seconds 1 -mr rsa2048 \
  >"$out" 2>&1 || { cat "$out"; echo "openssl speed failed"; exit 1; }
cat "$out"
grep -q '^+F2:' "$out" || { echo "no RSA result line"; exit 1; }
line=$(grep '^asyncjob: ' "$out") || { echo "asyncjob did not run the jobs"; exit 1; }
started=$(echo "$line" | sed 's/^asyncjob: \([0-9]*\) jobs started.*/\1/')
[ "$started" -ge 16 ] || { echo "expected at least 16 jobs, asyncjob saw $started"; exit 1; }
echo "$line" | grep -q 'libcrypto connected' || { echo "libcrypto not connected"; exit 1; }
echo "ok: openssl speed -async_jobs 16 ran $started jobs on asyncjob"
