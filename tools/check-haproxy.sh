#!/usr/bin/env bash
# check-haproxy.sh - HAProxy in OpenSSL's async mode (ssl-mode-async) with
# the asyncjob provider, on asyncjob and on libcrypto's own jobs.
#
# Usage: tools/check-haproxy.sh DIR
#   DIR is a Release build tree or an install prefix of asyncjob: it needs
#   DIR/bin/asyncjob-run and the provider module (DIR/providers/asyncjob.so
#   in a build tree, DIR/lib.../ossl-modules/asyncjob.so when installed).
#   Nothing is built.
# Needs: haproxy (Debian 12's 2.6), curl, openssl, python3.
#
# Makes an RSA-2048 and an ECDSA P-256 self-signed certificate and runs
# haproxy with one loopback frontend per certificate that answers "ok"
# itself, with the configuration of docs/haproxy.md (ssl-mode-async,
# ssl-provider asyncjob + default, ssl-propquery ?provider=asyncjob), twice:
#   1. asyncjob: haproxy started by asyncjob-run --stats (asyncjob preloaded)
#   2. libcrypto: the same configuration, nothing preloaded: the provider on
#      libcrypto's ASYNC jobs (it supports both, docs/provider.md), so that
#      the only difference between the runs is the job implementation.
# and once more briefly with the launcher's own mechanism instead of the
# configuration lines (asyncjob-run --provider), in master-worker mode (-W:
# the provider is loaded in the master and the worker is forked from it).
# In each run: curl requests with full handshakes (one curl per request, no
# session id), over both certificates and TLS 1.2 and 1.3, in sequence and 8
# at a time, while other clients send a ClientHello and then reset or close
# the connection (mid-handshake, while the signature is being made); then
# handshake rates measured with openssl s_time -new (4 clients at a time).
# Checks: every curl request answered 200 "ok"; the provider signed on its
# workers (counters printed at exit: ASYNCJOB_STATS); asyncjob's own counters
# present in run 1 only; haproxy's open fds back to their count before the
# load; a soft stop (SIGUSR1) ends haproxy with status 0 and nothing in its
# log but the "Proxy ... stopped" notices and the counters. A last short run
# on asyncjob ends with SIGTERM (haproxy's hard stop, right after the aborts):
# status 143, as without asyncjob, and nothing in the log. Prints the
# handshake rates of runs 1 and 2 and their ratio.
set -euo pipefail

die() { echo "check-haproxy: $*" >&2; exit 1; }
[[ $# -eq 1 ]] || die "usage: $0 DIR (a Release build tree or install prefix)"
dir=$(cd "$1" && pwd) || die "no directory $1"
launcher=$dir/bin/asyncjob-run
[[ -x $launcher ]] || die "no $launcher"
module=
for candidate in "$dir"/providers/asyncjob.so "$dir"/lib*/ossl-modules/asyncjob.so \
                 "$dir"/lib*/*/ossl-modules/asyncjob.so; do
  [[ -f $candidate ]] && { module=$candidate; break; }
done
[[ -n $module ]] || die "no asyncjob.so provider module under $dir"
for tool in haproxy curl openssl python3; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/check-haproxy.XXXXXX")
haproxy_pid=
cleanup() {
  if [[ -n $haproxy_pid ]]; then
    # The worker of master-worker mode too.
    for pid in $(pgrep -P "$haproxy_pid" -x haproxy) "$haproxy_pid"; do kill -KILL "$pid" 2>/dev/null || :; done
  fi
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

echo "haproxy: $(haproxy -v | head -n 1)"
echo "asyncjob: $launcher, provider $module"

# ----- Certificates -----
openssl req -x509 -newkey rsa:2048 -nodes -keyout rsa.key -out rsa.crt -days 2 \
  -subj /CN=rsa.test -addext subjectAltName=DNS:rsa.test 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ec.key \
  -out ec.crt -days 2 -subj /CN=ec.test -addext subjectAltName=DNS:ec.test 2>/dev/null
cat rsa.crt rsa.key >rsa.pem
cat ec.crt ec.key >ec.pem

# Two free loopback ports (the kernel's choice).
read -r rsa_port ec_port < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')

# provider_lines=yes: the provider loaded by the configuration; no: left to
# the launcher (asyncjob-run --provider).
write_config() {
  {
    echo "global"
    echo "  nbthread 2"
    echo "  ssl-mode-async"
    if [[ $1 == yes ]]; then
      echo "  ssl-provider-path $(dirname "$module")"
      echo "  ssl-provider asyncjob"
      echo "  ssl-provider default"
      echo "  ssl-propquery ?provider=asyncjob"
    fi
    cat <<EOF
defaults
  mode http
  timeout connect 5s
  timeout client 10s
  timeout server 10s
frontend rsa
  bind 127.0.0.1:$rsa_port ssl crt $work/rsa.pem
  http-request return status 200 content-type text/plain string ok
frontend ec
  bind 127.0.0.1:$ec_port ssl crt $work/ec.pem
  http-request return status 200 content-type text/plain string ok
EOF
  } >haproxy.cfg
  haproxy -c -q -f haproxy.cfg || die "haproxy rejects its configuration"
}

# ----- Clients -----
# One request with a full handshake: "CERT TLS" (rsa|ec, 1.2|1.3).
cat >request.sh <<EOF
#!/bin/sh
case \$1 in rsa) port=$rsa_port ;; *) port=$ec_port ;; esac
out=\$(curl -sS --no-sessionid --max-time 10 --tlsv\$2 --tls-max \$2 --cacert $work/\$1.crt \\
  --resolve \$1.test:\$port:127.0.0.1 -w ' %{http_code}' https://\$1.test:\$port/ 2>&1)
[ "\$out" = "ok 200" ] && echo pass || echo "FAIL \$1 TLS \$2: \$out"
EOF
chmod +x request.sh

# Clients that abort mid-handshake: a ClientHello, then a reset at once, a
# reset after 0-2 ms, a reset once the server's first flight arrives, a
# normal close, or a reset half-way through the ClientHello.
cat >abort.py <<'EOF'
import random, socket, ssl, struct, sys, threading, time
ports, count, threads = [int(p) for p in sys.argv[1].split(",")], int(sys.argv[2]), int(sys.argv[3])
versions = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]
failures = []
def client_hello(version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = version
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    try:
        ctx.wrap_bio(incoming, outgoing).do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()
def reset(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
def one(i):
    hello = client_hello(versions[(i // 2) % 2])
    s = socket.create_connection(("127.0.0.1", ports[i % len(ports)]), timeout=10)
    mode = (i // 4) % 5
    if mode == 4:
        s.sendall(hello[: len(hello) // 2]); reset(s); return
    s.sendall(hello)
    if mode == 1:
        time.sleep(random.random() * 0.002)
    elif mode == 2:
        s.recv(1)
    if mode == 3:
        s.shutdown(socket.SHUT_WR); s.close()
    else:
        reset(s)
def worker(first):
    for i in range(first, count, threads):
        try:
            one(i)
        except OSError as e:
            failures.append(f"abort client {i}: {e}")
ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
for t in ts: t.start()
for t in ts: t.join()
for f in failures: print(f)
print(f"{count - len(failures)} aborted handshakes")
sys.exit(1 if failures else 0)
EOF

# The process that serves: haproxy itself, or its worker in master-worker
# mode (-W).
serving_pid() { pgrep -P "$haproxy_pid" -x haproxy || echo "$haproxy_pid"; }
fd_count() { find "/proc/$(serving_pid)/fd" -mindepth 1 -maxdepth 1 | wc -l; }

# Waits for haproxy's fds to fall back to $1 (connections close shortly after
# their clients); prints the count.
settle_fds() {
  local n tries=0
  while n=$(fd_count); ((n > $1 && tries < 100)); do
    sleep 0.1
    tries=$((tries + 1))
  done
  echo "$n"
}

# Full handshakes per second: 4 openssl s_time -new clients at once, two per
# TLS version, for $2 seconds against port $1. Prints the rate.
measure_rate() {
  local port=$1 seconds=$2 start end total=0 n i
  start=$(date +%s.%N)
  for i in 1 2 3 4; do
    openssl s_time -connect "127.0.0.1:$port" -new -www / -time "$seconds" \
      "$( ((i % 2)) && echo -tls1_3 || echo -tls1_2)" >"s_time.$port.$i" 2>&1 &
  done
  wait
  end=$(date +%s.%N)
  for i in 1 2 3 4; do
    n=$(sed -n 's/^\([0-9]*\) connections in [0-9]* real seconds.*/\1/p' "s_time.$port.$i")
    [[ -n $n ]] || { cat "s_time.$port.$i" >&2; die "s_time failed against port $port"; }
    total=$((total + n))
  done
  echo "$total handshakes" >>"rates.$port"
  awk -v n="$total" -v s="$start" -v e="$end" 'BEGIN { printf "%.0f\n", n / (e - s) }'
}

# run NAME MODE SIGNAL REQUESTS ABORTS RATE_SECONDS
#   MODE: asyncjob (config + asyncjob-run --stats), libcrypto (config,
#   nothing preloaded), launcher (asyncjob-run --provider --stats).
run() {
  local name=$1 mode=$2 signal=$3 requests=$4 aborts=$5 rate_seconds=$6
  local log=$work/$name.log start baseline after status i
  echo
  echo "== haproxy on $name"
  if [[ $mode == launcher ]]; then write_config no; else write_config yes; fi
  case $mode in
    asyncjob) "$launcher" --stats haproxy -db -f haproxy.cfg >"$log" 2>&1 & ;;
    launcher) "$launcher" --provider --stats haproxy -W -db -f haproxy.cfg >"$log" 2>&1 & ;;
    libcrypto) ASYNCJOB_STATS=1 haproxy -db -f haproxy.cfg >"$log" 2>&1 & ;;
  esac
  haproxy_pid=$!
  # Up and answering within 20 s (a handshake that never ends fails here).
  local deadline=$((SECONDS + 20))
  until curl -s -m 2 -o /dev/null -k "https://127.0.0.1:$ec_port/"; do
    kill -0 "$haproxy_pid" 2>/dev/null || { cat "$log"; die "$name: haproxy did not start"; }
    ((SECONDS < deadline)) || { cat "$log"; die "$name: haproxy does not answer"; }
    sleep 0.1
  done
  # Warm-up: each thread's lazily opened fds exist before the baseline.
  for i in 1 2 3 4 5 6 7 8; do ./request.sh rsa 1.3 >/dev/null; ./request.sh ec 1.2 >/dev/null; done
  baseline=$(fd_count)

  start=$(date +%s.%N)
  : >results
  # A quarter in sequence, the rest 8 at a time next to the aborting clients.
  for ((i = 0; i < requests / 4; i++)); do
    ./request.sh "$( ((i % 2)) && echo ec || echo rsa)" "$( (((i / 2) % 2)) && echo 1.3 || echo 1.2)" >>results
  done
  python3 abort.py "$rsa_port,$ec_port" "$aborts" 4 >aborts.out 2>&1 &
  local abort_pid=$!
  for ((i = requests / 4; i < requests; i++)); do
    echo "$( ((i % 2)) && echo ec || echo rsa) $( (((i / 2) % 2)) && echo 1.3 || echo 1.2)"
  done | xargs -P 8 -L 1 ./request.sh >>results
  wait "$abort_pid" || { cat aborts.out; die "$name: an aborting client could not connect"; }
  local elapsed passed
  elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
  passed=$(grep -c '^pass$' results || :)
  echo "$passed of $requests curl requests answered 200 ok, $(tail -n 1 aborts.out) at the same time ($elapsed s)"
  if ((passed != requests)); then
    grep -v '^pass$' results | sort | uniq -c | head -n 20
    die "$name: $((requests - passed)) requests failed"
  fi

  if ((rate_seconds > 0)); then
    rate_rsa[$name]=$(measure_rate "$rsa_port" "$rate_seconds")
    rate_ec[$name]=$(measure_rate "$ec_port" "$rate_seconds")
    echo "handshakes/s (openssl s_time -new, 4 clients): RSA-2048 ${rate_rsa[$name]}, ECDSA P-256 ${rate_ec[$name]}"
  fi

  after=$(settle_fds "$baseline")
  echo "haproxy's open fds: $baseline before the load, $after after it"
  ((after <= baseline)) || { ls -l "/proc/$haproxy_pid/fd"; die "$name: haproxy kept $((after - baseline)) fds"; }

  kill -"$signal" "$haproxy_pid"
  # SIGUSR1 is haproxy's soft stop: it exits 0 once its connections are
  # done. SIGTERM is its hard stop: the process ends by the signal (143),
  # with or without asyncjob, and prints no counters.
  local expected=0
  [[ $signal == USR1 ]] || expected=143
  status=0
  for i in $(seq 200); do kill -0 "$haproxy_pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$haproxy_pid" 2>/dev/null && { cat "$log"; die "$name: haproxy still running 20 s after SIG$signal"; }
  wait "$haproxy_pid" || status=$?
  haproxy_pid=
  echo "haproxy exited with status $status after SIG$signal"
  sed 's/^/  | /' "$log"
  ((status == expected)) || die "$name: haproxy exited with status $status, not $expected"
  # Nothing but the soft stop's notices and the counters (with the deepest
  # stack use).
  # In master-worker mode also the master's notices, and the worker's exit
  # with code 0.
  if grep -v -E '^\[WARNING\] +\([0-9]+\) : Proxy [^ ]+ stopped \(|^asyncjob: [0-9]+ jobs started|^asyncjob stacks: deepest job used |^asyncjob provider: ' \
       "$log" |
     grep -v -E '^\[NOTICE\] |^\[WARNING\] +\([0-9]+\) : (Exiting Master process|Current worker \([0-9]+\) exited with code 0 |All workers exited\. Exiting\.\.\. \(0\))' |
     grep -q .; then
    die "$name: unexpected lines in haproxy's log"
  fi
  [[ $signal == USR1 ]] || return 0

  local provider_line asyncjob_line submitted inline handshakes
  # The worker's line, in master-worker mode (the busiest).
  provider_line=$(grep '^asyncjob provider: ' "$log" | sort -t ' ' -k 3 -n -r | head -n 1)
  [[ -n $provider_line ]] || die "$name: no provider counters"
  submitted=$(sed -n 's/^asyncjob provider: \([0-9]*\) signatures submitted.*/\1/p' <<<"$provider_line")
  inline=$(sed -n 's/.* \([0-9]*\) signatures run inline.*/\1/p' <<<"$provider_line")
  handshakes=$((requests + 16))
  if ((rate_seconds > 0)); then
    handshakes=$((handshakes + $(cat "rates.$rsa_port" "rates.$ec_port" | awk '{ n += $1 } END { print n }')))
    rm -f "rates.$rsa_port" "rates.$ec_port"
  fi
  ((submitted >= handshakes)) ||
    die "$name: $submitted signatures submitted to the provider's workers for $handshakes completed handshakes"
  ((inline == 0)) || die "$name: $inline signatures were made inline, outside a job"
  echo "provider: $submitted signatures offloaded for $handshakes completed handshakes, none inline"
  # The busiest process's line (the master of -W prints one with no jobs).
  asyncjob_line=$(grep '^asyncjob: [0-9]* jobs started' "$log" | sort -t ' ' -k 2 -n -r | head -n 1) || asyncjob_line=
  if [[ $mode == libcrypto ]]; then
    [[ -z $asyncjob_line ]] || die "$name: asyncjob was loaded"
  else
    [[ -n $asyncjob_line ]] || die "$name: asyncjob's counters missing: it did not run the jobs"
  fi
}

declare -A rate_rsa rate_ec
run asyncjob asyncjob USR1 400 240 4
run libcrypto libcrypto USR1 400 240 4
run "asyncjob, provider by asyncjob-run --provider, master-worker mode" launcher USR1 60 40 0
run "asyncjob, hard stop" asyncjob TERM 40 40 0

echo
echo "== handshake rates (handshakes/s, openssl s_time -new, 4 clients, 2 cores shared with them)"
printf '%-12s %10s %10s %8s\n' "" asyncjob libcrypto ratio
for cert in RSA-2048 "ECDSA P-256"; do
  if [[ $cert == RSA-2048 ]]; then a=${rate_rsa[asyncjob]} l=${rate_rsa[libcrypto]}; else a=${rate_ec[asyncjob]} l=${rate_ec[libcrypto]}; fi
  printf '%-12s %10s %10s %8s\n' "$cert" "$a" "$l" "$(awk -v a="$a" -v l="$l" 'BEGIN { printf "%.2f", a / l }')"
done
echo
echo "haproxy on asyncjob: all checks passed"
