#!/bin/sh
# gdb_overflow_test.sh DEMO SCRIPT - a stack overflow seen from gdb: gdb runs
# `gdb_demo overflow`, whose fourth job recurses into its stack's guard; the
# library prints its overflow message and aborts. Stopped at that abort (as
# a core of the crash would be), `asyncjob stats` must count the overflow
# and `asyncjob jobs` must still list the three paused jobs. Exits 77
# (skipped) when gdb is missing or may not run the program under ptrace.
set -u
demo=$1
script=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }

command -v gdb >/dev/null 2>&1 || skip "gdb is not installed"
# The fault goes to the program (its handler reports the overflow); gdb
# stops at the SIGABRT that follows.
gdb -nx -batch -ex "handle SIGSEGV nostop noprint pass" -ex "handle SIGBUS nostop noprint pass" \
  -ex "handle SIGABRT stop print" -ex run -ex "source $script" -ex "asyncjob stats" \
  -ex "asyncjob jobs" --args "$demo" overflow >"$work/gdb" 2>&1
cat "$work/gdb"
if grep -q "ptrace: Operation not permitted\|Could not trace the inferior" "$work/gdb"; then
  skip "gdb may not run the program here"
fi
status=0
grep -q "asyncjob: stack overflow in job" "$work/gdb" ||
  { echo "FAIL: no overflow message"; status=1; }
grep -q "SIGABRT" "$work/gdb" || { echo "FAIL: gdb did not stop at the abort"; status=1; }
grep -q "^stack overflows caught: 1$" "$work/gdb" ||
  { echo "FAIL: asyncjob stats does not count the overflow"; status=1; }
for start in demo_wait_for_key demo_parse_message demo_handshake; do
  grep -q "paused .*function $start" "$work/gdb" ||
    { echo "FAIL: the paused job of $start is not listed"; status=1; }
done
exit $status
