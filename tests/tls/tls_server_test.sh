#!/bin/sh
# tls_server with SSL_MODE_ASYNC, the asyncjob provider and asyncjob
# preloaded, in one notification mode with one key type:
#   - an unmodified openssl s_client completes a handshake and gets its
#     line echoed back;
#   - the load generator completes 1,000 handshakes, 100 at a time, one in
#     twenty clients leaving right after its ClientHello;
#   - every handshake paused in its job (the provider offloaded the
#     signature), the notification mode was the one asked for, the server
#     freed every connection and ends with the fds it started with.
# An eighth argument, free, runs the server with --on-abort free: clients
# that leave mid-handshake have their connection freed at once, the job
# still paused. Then some were (freed while paused > 0), those pauses are
# never completed, and every job started ended (none left in use, no
# tombstone kept).
set -eu
server=$1 loadgen=$2 openssl=$3 library=$4 providers=$5 mode=$6 key=$7 on_abort=${8:-finish}

work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || :; fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
fail() { echo "FAIL: $*"; echo "--- server output:"; cat "$work/server.out" 2>/dev/null || :; exit 1; }

case $key in
  rsa) "$openssl" req -x509 -newkey rsa:2048 -nodes -keyout "$work/key.pem" -out "$work/cert.pem" \
         -days 1 -subj /CN=localhost 2>/dev/null ;;
  ec) "$openssl" ecparam -name prime256v1 -genkey -noout -out "$work/key.pem" &&
      "$openssl" req -x509 -key "$work/key.pem" -out "$work/cert.pem" -days 1 -subj /CN=localhost \
         2>/dev/null ;;
esac

connections=1000
concurrency=100
abort_every=20
expected_clients=$((connections + 1))  # the load plus one s_client

: >"$work/server.out"  # exists before the background shell opens it
LD_PRELOAD=$library ASYNCJOB_STATS=1 "$server" --cert "$work/cert.pem" --key "$work/key.pem" \
  --notify "$mode" --provider-path "$providers" --provider asyncjob --provider default \
  --propquery '?provider=asyncjob' --exit-after "$expected_clients" --on-abort "$on_abort" \
  >"$work/server.out" 2>&1 &
server_pid=$!

port=
for _ in $(seq 1 100); do
  port=$(sed -n 's/^listening on \([0-9][0-9]*\).*/\1/p' "$work/server.out" || :)
  [ -n "$port" ] && break
  kill -0 "$server_pid" 2>/dev/null || fail "the server exited early"
  sleep 0.1
done
[ -n "$port" ] || fail "the server did not start listening"

# 1. An unmodified s_client: handshake, one line out, the same line back.
(echo "hello from s_client"; sleep 2) |
  timeout 20 "$openssl" s_client -connect "127.0.0.1:$port" -quiet -no_ign_eof \
    >"$work/s_client.out" 2>"$work/s_client.err" || :
grep -q "hello from s_client" "$work/s_client.out" ||
  { cat "$work/s_client.err"; fail "s_client did not get its line echoed"; }
echo "ok: s_client handshake and echo"

# 2. The load generator.
"$loadgen" --port "$port" --connections "$connections" --concurrency "$concurrency" \
  --abort-every "$abort_every" --timeout 200 >"$work/loadgen.out" 2>&1 ||
  { cat "$work/loadgen.out"; fail "the load generator reported failures"; }
cat "$work/loadgen.out"
handshakes=$(sed -n 's/^tls_loadgen: \([0-9]*\) handshakes.*/\1/p' "$work/loadgen.out")
[ "$handshakes" -ge $((connections - connections / abort_every)) ] ||
  fail "only $handshakes handshakes"
peak=$(sed -n 's/.* \([0-9]*\) concurrent.*/\1/p' "$work/loadgen.out")
[ "$peak" -ge "$concurrency" ] || fail "only $peak concurrent connections"

# The server exits once every client is gone and prints its counters.
for _ in $(seq 1 300); do
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$server_pid" 2>/dev/null; then fail "the server did not finish"; fi
wait "$server_pid" || fail "the server failed"
server_pid=
cat "$work/server.out"

summary=$(grep '^tls_server: ' "$work/server.out") || fail "no server summary"
field() { echo "$summary" | sed -n "s/.*[^0-9]\([0-9][0-9]*\) $1.*/\1/p"; }
want_async=$(field "WANT_ASYNC,")
callbacks=$(field "callbacks")
status_ok=$(echo "$summary" | sed -n 's/.*(\([0-9]*\) status OK.*/\1/p')
still_open=$(field "still open")
fds_now=$(echo "$summary" | sed -n 's/.* \([0-9]*\) fds open at exit.*/\1/p')
fds_start=$(echo "$summary" | sed -n 's/.*(\([0-9]*\) at start).*/\1/p')
server_handshakes=$(field "handshakes")
freed_while_paused=$(field "freed while paused")
# Pauses whose connection was freed at once are never completed.
completed_pauses=$((want_async - freed_while_paused))
if [ "$on_abort" = free ]; then
  [ "$freed_while_paused" -gt 0 ] || fail "no connection was freed while its job was paused"
else
  [ "$freed_while_paused" -eq 0 ] || fail "$freed_while_paused freed while paused in finish mode"
fi

[ "$want_async" -ge "$server_handshakes" ] ||
  fail "$want_async WANT_ASYNC for $server_handshakes handshakes: not every handshake paused"
[ "$still_open" -eq 0 ] || fail "$still_open connections never freed"
[ "$fds_now" -eq "$fds_start" ] || fail "fds leaked: $fds_now at exit, $fds_start at start"
if [ "$mode" = callback ]; then
  [ "$callbacks" -ge "$completed_pauses" ] || fail "$callbacks callbacks for $completed_pauses pauses"
  # Every way of setting the callback up was used and got its argument.
  for setup in "context callback with context arg" "context callback with connection arg" \
               "connection callback"; do
    count=$(echo "$summary" | sed -n "s/.*[^0-9]\([0-9][0-9]*\) $setup.*/\1/p")
    [ -n "$count" ] && [ "$count" -gt 0 ] || fail "no completion through: $setup"
  done
  [ "$status_ok" -ge "$completed_pauses" ] ||
    fail "SSL_get_async_status reported OK $status_ok times for $completed_pauses completions"
else
  [ "$callbacks" -eq 0 ] || fail "callbacks in fds mode"
fi

library_line=$(grep '^asyncjob: ' "$work/server.out") || fail "asyncjob did not run libssl's jobs"
pauses=$(echo "$library_line" | sed -n 's/.* \([0-9]*\) pauses.*/\1/p')
[ "$pauses" -ge "$server_handshakes" ] || fail "asyncjob saw $pauses pauses"
if [ "$on_abort" = free ]; then
  # Every job started ended: finished (cancelled ones included) or kept as
  # a tombstone and released since.
  library_field() { echo "$library_line" | sed -n "s/.*[^0-9]\([0-9][0-9]*\) $1.*/\1/p"; }
  started=$(echo "$library_line" | sed -n 's/^asyncjob: \([0-9]*\) jobs started.*/\1/p')
  finished=$(library_field "finished,")
  tombstones=$(library_field "tombstones,")
  released=$(library_field "released)")
  [ "$started" -eq $((finished + tombstones)) ] ||
    fail "$started jobs started, $finished finished, $tombstones tombstones: jobs left in use"
  [ "$tombstones" -eq "$released" ] || fail "$tombstones tombstones, $released released"
fi
provider_line=$(grep '^asyncjob provider: ' "$work/server.out") || fail "no provider counters"
provider_pauses=$(echo "$provider_line" | sed -n 's/.* \([0-9]*\) job pauses.*/\1/p')
[ "$provider_pauses" -ge "$server_handshakes" ] || fail "the provider paused $provider_pauses jobs"

echo "ok: $mode mode, $key key, on abort $on_abort: $server_handshakes handshakes, $want_async paused" \
  "($freed_while_paused freed while paused), $pauses asyncjob pauses"
