#!/bin/sh
# The teardown harness on asyncjob and on libcrypto's own jobs, in both
# notification modes, with the per-teardown figures side by side: RSS, the
# part of it that is OpenSSL's heap, jobs never given back and fds. A
# report, not a check (teardown.tls_asyncjob_* are the checks): it passes
# whatever the figures, and says so when a run crashed or failed.
#
#   tls_teardown_compare.sh ASYNCJOB_BUILD LIBCRYPTO_BUILD PROVIDER_DIR TEARDOWNS
set -u
on_asyncjob=$1 on_libcrypto=$2 providers=$3 teardowns=$4

row() {  # implementation mode program
  output=$("$3" --provider-dir "$providers" --teardowns "$teardowns" --notify "$2" 2>&1)
  status=$?
  figures=$(echo "$output" | sed -n 's/^figures: //p')
  echo "$output" | grep -v '^figures: ' | sed 's/^/  /' >&2
  if [ -n "$figures" ]; then
    echo "$figures" | awk '{
      for (i = 3; i <= NF; ++i) { split($i, kv, "="); v[kv[1]] = kv[2] }
      printf "%-10s %-9s %9s %11s %11s %9s %7s\n", $1, $2, v["teardowns"], v["rss_bytes"],
             v["heap_bytes"], v["jobs"], v["fds"] }'
  elif [ "$status" -gt 128 ]; then
    printf "%-10s %-9s crashed (signal %d) before its figures\n" "$1" "$2" $((status - 128))
  else
    printf "%-10s %-9s failed (exit status %d) before its figures\n" "$1" "$2" "$status"
  fi
}

echo "Runs:" >&2
table=$(
  for mode in fds callback; do
    row asyncjob "$mode" "$on_asyncjob"
    row libcrypto "$mode" "$on_libcrypto"
  done
)
echo
echo "Per teardown (a connection freed while its handshake was paused in a job):"
printf "%-10s %-9s %9s %11s %11s %9s %7s\n" jobs notify teardowns "RSS bytes" "heap bytes" \
  "jobs held" fds
echo "$table"
echo "(heap: OpenSSL's own allocations still held, libcrypto's job stacks included;"
echo " jobs held: asyncjob's in use and tombstones, libcrypto's job stacks not freed)"
exit 0
