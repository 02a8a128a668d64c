#!/bin/sh
# `openssl speed -async_jobs 16` signing through the asyncjob provider with
# libasyncjob preloaded: it completes and reports RSA-2048 and ECDSA P-256
# results, asyncjob ran the jobs, and the provider's engine paused them.
#
#   speed.sh OPENSSL PROVIDER_DIR LIBASYNCJOB
#
# openssl speed 3.0 makes its keys and contexts without a property query
# (it ignores -propquery), and a fetch without one takes the first loaded
# provider that offers the algorithm: asyncjob is loaded before default for
# that reason. The counters confirm that the provider signed.
set -eu
openssl=$1
provider_dir=$2
library=$3
out=$(mktemp)
trap 'rm -f "$out"' EXIT

LD_PRELOAD=$library ASYNCJOB_STATS=1 timeout 120 "$openssl" speed \
  -provider-path "$provider_dir" -provider asyncjob -provider default \
  -async_jobs 16 -seconds 1 -mr rsa2048 ecdsap256 \
  >"$out" 2>&1 || { cat "$out"; echo "openssl speed failed"; exit 1; }
cat "$out"
grep -q '^+F2:' "$out" || { echo "no RSA result line"; exit 1; }
grep -q '^+F4:' "$out" || { echo "no ECDSA result line"; exit 1; }

jobs_line=$(grep '^asyncjob: ' "$out") || { echo "asyncjob did not run the jobs"; exit 1; }
job_pauses=$(echo "$jobs_line" | sed 's/.* \([0-9]*\) pauses,.*/\1/')
[ "$job_pauses" -gt 0 ] || { echo "asyncjob saw no pauses"; exit 1; }

line=$(grep '^asyncjob provider: ' "$out") || { echo "no provider counters"; exit 1; }
submitted=$(echo "$line" | sed 's/^asyncjob provider: \([0-9]*\) signatures submitted.*/\1/')
pauses=$(echo "$line" | sed 's/.* \([0-9]*\) job pauses.*/\1/')
# Two algorithms for a second each: far more than 16 signatures each.
[ "$submitted" -ge 100 ] || { echo "expected the engine to sign, it signed $submitted"; exit 1; }
[ "$pauses" -ge "$submitted" ] || { echo "expected at least $submitted pauses, got $pauses"; exit 1; }
[ "$job_pauses" -ge "$pauses" ] ||
  { echo "asyncjob saw $job_pauses pauses, fewer than the provider's $pauses"; exit 1; }
echo "ok: $submitted signatures on the provider's engine, $pauses pauses; asyncjob: $job_pauses pauses"
