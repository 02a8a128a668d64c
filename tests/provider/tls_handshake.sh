#!/bin/sh
# `openssl s_server -async` signing through the asyncjob provider, with
# unmodified `openssl s_client`s connecting: each completes a handshake and
# fetches the server's status page, and the provider's counters show that
# every handshake's signature was submitted to its engine while the job that
# asked was paused.
#
#   tls_handshake.sh OPENSSL PROVIDER_DIR KEY_TYPE [LIBASYNCJOB]
#
# KEY_TYPE is rsa (RSA-2048) or ec (ECDSA P-256); the key and a self-signed
# certificate are made here. With LIBASYNCJOB the server runs with it
# preloaded (asyncjob runs the jobs and must report pauses); without it the
# jobs are libcrypto's own.
set -eu
openssl=$1
provider_dir=$2
key_type=$3
library=${4:-}

work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  for f in server.out server.err; do
    [ -f "$work/$f" ] && { echo "--- $f"; cat "$work/$f"; }
  done
  exit 1
}

case $key_type in
  rsa) newkey="-newkey rsa:2048" ;;
  ec) newkey="-newkey ec -pkeyopt ec_paramgen_curve:P-256" ;;
  *) fail "unknown key type $key_type" ;;
esac
# shellcheck disable=SC2086 # newkey is several arguments
"$openssl" req -x509 $newkey -nodes -subj /CN=localhost -days 1 \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>"$work/req.err" ||
  { cat "$work/req.err"; fail "could not make a $key_type key and certificate"; }

# Each client: TLS version and signature choices that exercise the
# provider differently (TLS 1.3 signs with RSA-PSS or ECDSA; TLS 1.2 with
# -sigalgs RSA+SHA256 forces PKCS#1 v1.5; -groups P-256 makes libssl
# generate its ECDHE key through the provider's EC key management).
if [ "$key_type" = rsa ]; then
  set -- "-tls1_3" "-tls1_2" "-tls1_2 -sigalgs RSA+SHA256" "-tls1_3 -groups P-256"
else
  set -- "-tls1_3" "-tls1_2" "-tls1_2 -groups P-256" "-tls1_3 -groups P-256"
fi
clients=$#

: >"$work/server.out"  # polled below, possibly before the server opens it
# Port 0: the server picks a free port and says which ("ACCEPT host:port").
# -naccept makes it exit after the last client, which runs its exit handlers
# and so prints the counters.
(
  if [ -n "$library" ]; then
    LD_PRELOAD=$library
    export LD_PRELOAD
  fi
  ASYNCJOB_STATS=1 exec timeout 60 "$openssl" s_server -async -www \
    -accept 127.0.0.1:0 -naccept "$clients" \
    -cert "$work/cert.pem" -key "$work/key.pem" \
    -provider-path "$provider_dir" -provider asyncjob -provider default \
    -propquery '?provider=asyncjob'
) >"$work/server.out" 2>"$work/server.err" </dev/null &
server_pid=$!

port=
i=0
while [ $i -lt 100 ]; do
  port=$(sed -n 's/^ACCEPT 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$work/server.out")
  [ -n "$port" ] && break
  kill -0 "$server_pid" 2>/dev/null || fail "s_server exited before accepting"
  sleep 0.1
  i=$((i + 1))
done
[ -n "$port" ] || fail "s_server did not report its port"
echo "s_server ($key_type key) listening on 127.0.0.1:$port"

for options in "$@"; do
  # -quiet implies -ign_eof: the client waits for the server to answer and
  # close (-www closes after the status page).
  # shellcheck disable=SC2086 # options are several arguments
  printf 'GET / HTTP/1.0\r\n\r\n' |
    timeout 20 "$openssl" s_client -connect "127.0.0.1:$port" -servername localhost \
      -quiet $options >"$work/client.out" 2>"$work/client.err" ||
    { cat "$work/client.err"; fail "s_client $options failed"; }
  head -n 1 "$work/client.out" | grep -q '^HTTP/1.0 200 ok' ||
    { cat "$work/client.out" "$work/client.err"; fail "s_client $options: no status page"; }
  echo "ok: s_client $options: handshake and status page"
done

# The server exits after the last client; wait for it (bounded).
i=0
while kill -0 "$server_pid" 2>/dev/null && [ $i -lt 100 ]; do
  sleep 0.1
  i=$((i + 1))
done
if kill -0 "$server_pid" 2>/dev/null; then fail "s_server did not exit after $clients clients"; fi
wait "$server_pid" || fail "s_server failed"
server_pid=
cat "$work/server.err"

# asyncjob provider: S signatures submitted to the engine, P job pauses, I signatures run inline (...)
line=$(grep '^asyncjob provider: ' "$work/server.err") || fail "no provider counters"
submitted=$(echo "$line" | sed 's/^asyncjob provider: \([0-9]*\) signatures submitted.*/\1/')
pauses=$(echo "$line" | sed 's/.* \([0-9]*\) job pauses.*/\1/')
inline=$(echo "$line" | sed 's/.* \([0-9]*\) signatures run inline.*/\1/')
[ "$submitted" -eq "$clients" ] ||
  fail "expected $clients signatures submitted (one per handshake), got $submitted"
[ "$pauses" -ge "$submitted" ] || fail "expected at least $submitted pauses, got $pauses"
[ "$inline" -eq 0 ] || fail "expected every signature in a job, $inline ran inline"

if [ -n "$library" ]; then
  # asyncjob: N jobs started, R resumes, P pauses, ...
  jobs_line=$(grep '^asyncjob: ' "$work/server.err") || fail "asyncjob did not run the jobs"
  job_pauses=$(echo "$jobs_line" | sed 's/.* \([0-9]*\) pauses,.*/\1/')
  [ "$job_pauses" -ge "$pauses" ] ||
    fail "asyncjob saw $job_pauses pauses, fewer than the provider's $pauses"
  echo "ok: asyncjob ran the jobs ($job_pauses pauses)"
else
  if grep -q '^asyncjob: ' "$work/server.err"; then fail "asyncjob ran although not preloaded"; fi
  echo "ok: libcrypto's own jobs"
fi
echo "ok: $submitted signatures submitted to the provider's engine, $pauses pauses"
