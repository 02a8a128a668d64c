#!/bin/sh
# gdb_test.sh MODE DEMO SCRIPT - tools/gdb/asyncjob_gdb.py in gdb -batch on
# gdb_demo, whose three jobs pause in demo_wait_for_key (depth 1),
# demo_read_record (depth 2) and demo_sign_digest (depth 3).
#   attach: gdb attaches to the live program;
#   core:   gdb writes a core of it (gcore), which a second gdb opens.
# Both outputs must list the three jobs, paused, with their start functions
# and how long ago (live) or when (core) they paused,
# and each job's backtrace must hold the function that paused it and its
# callers. Exits 77 (skipped) when gdb is missing or may not attach.
set -u
mode=$1
demo=$2
script=$3
work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }

command -v gdb >/dev/null 2>&1 || skip "gdb is not installed"
scope=$(cat /proc/sys/kernel/yama/ptrace_scope 2>/dev/null || echo 0)
if [ "$scope" -ge 3 ]; then skip "kernel.yama.ptrace_scope=3: no process may attach"; fi
if [ "$scope" -ge 1 ] && [ "$(id -u)" -ne 0 ]; then
  skip "kernel.yama.ptrace_scope=$scope: only root may attach to a process it did not start"
fi

# With pause timestamps on: gdb says how long a job has been paused (live)
# or when it paused (core).
ASYNCJOB_PAUSE_TIMES=1 "$demo" >"$work/out" &
pid=$!
tries=0
until grep -q '^ready' "$work/out" 2>/dev/null; do
  tries=$((tries + 1))
  [ $tries -lt 600 ] || fail "gdb_demo did not get ready"
  kill -0 "$pid" 2>/dev/null || fail "gdb_demo died"
  sleep 0.1
done

# The commands: list the jobs, then a backtrace of each paused one.
gdb_commands() {
  cat <<COMMANDS
source $script
asyncjob jobs
asyncjob stats
python
import gdb
for line in gdb.execute("asyncjob jobs", to_string=True).splitlines():
    if " paused " in line:
        address = line.split()[1]
        gdb.write("== bt %s\n" % address)
        gdb.execute("asyncjob bt %s" % address)
end
COMMANDS
}
gdb_commands >"$work/commands"

case $mode in
  attach)
    gdb -nx -batch -p "$pid" -x "$work/commands" >"$work/gdb" 2>&1
    if grep -q "ptrace: Operation not permitted" "$work/gdb"; then
      skip "attaching is not permitted here: $(grep ptrace "$work/gdb" | head -n 1)"
    fi
    ;;
  core)
    gdb -nx -batch -p "$pid" -ex "gcore $work/core" >"$work/gcore" 2>&1
    if grep -q "ptrace: Operation not permitted" "$work/gcore"; then
      skip "attaching (to write the core) is not permitted here"
    fi
    [ -s "$work/core" ] || { cat "$work/gcore"; fail "gcore wrote no core"; }
    kill "$pid"
    wait "$pid" 2>/dev/null
    pid=
    gdb -nx -batch "$demo" "$work/core" -x "$work/commands" >"$work/gdb" 2>&1
    ;;
  *) fail "unknown mode $mode" ;;
esac
cat "$work/gdb"

status=0
for pair in demo_wait_for_key:demo_wait_for_key demo_parse_message:demo_read_record \
            demo_handshake:demo_sign_digest; do
  start=${pair%%:*}
  paused=${pair#*:}
  grep -q "paused .*function $start[ (].*paused in $paused" "$work/gdb" ||
    { echo "FAIL: no paused job started with $start and paused in $paused"; status=1; }
done
# Each backtrace: the pausing function first, then its callers.
awk '/^== bt/ { n++ } /^#0 / { print n ": " $0 }' "$work/gdb" >"$work/first"
for paused in demo_wait_for_key demo_read_record demo_sign_digest; do
  grep -q "^[0-9]*: #0 .* in $paused" "$work/first" ||
    { echo "FAIL: no backtrace starts in $paused"; status=1; }
done
grep -q "in demo_parse_message" "$work/gdb" && grep -q "in demo_make_signature" "$work/gdb" &&
  grep -q "in demo_handshake" "$work/gdb" ||
  { echo "FAIL: the backtraces lack the callers of the pausing functions"; status=1; }
case $mode in
  attach) when='paused in demo_sign_digest.* for [0-9]*\.[0-9]* s$' ;;
  core) when='paused in demo_sign_digest.* at [0-9]*\.[0-9]* s (CLOCK_MONOTONIC_COARSE)$' ;;
esac
grep -q "$when" "$work/gdb" || { echo "FAIL: no pause time ($mode)"; status=1; }
grep -q "^3 jobs" "$work/gdb" || grep -q "paused 3" "$work/gdb" ||
  { echo "FAIL: not three paused jobs"; status=1; }
exit $status
