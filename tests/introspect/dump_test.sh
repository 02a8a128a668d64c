#!/bin/sh
# dump_test.sh MODE DEMO - the dumps a program gets without a line of code:
#   exit:  ASYNCJOB_DUMP=exit dumps every job to stderr at exit;
#   file:  ASYNCJOB_DUMP_ON_FILE=path dumps when that file appears (gdb_demo
#          creates it once its jobs are paused), and removes it.
# gdb_demo's three jobs (and, for file, its polling job) must be listed,
# paused, with their start functions and the functions that paused them.
set -u
mode=$1
demo=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

case $mode in
  exit)
    ASYNCJOB_DUMP=exit "$demo" exit >/dev/null 2>"$work/err" || fail "gdb_demo failed"
    ;;
  file)
    ASYNCJOB_DUMP_ON_FILE=$work/request "$demo" file >/dev/null 2>"$work/err" ||
      fail "the request file was never taken"
    [ ! -e "$work/request" ] || fail "the request file is still there"
    ;;
  *) fail "unknown mode $mode" ;;
esac
cat "$work/err"
[ "$(grep -c '^asyncjob dump, pid' "$work/err")" -eq 1 ] || fail "not exactly one dump"
grep -q '^asyncjob stacks: .*deepest job used' "$work/err" || fail "no stack line"
status=0
for pair in demo_wait_for_key:demo_wait_for_key demo_parse_message:demo_read_record \
            demo_handshake:demo_sign_digest; do
  grep -q "paused .*function ${pair%%:*} .*paused in ${pair#*:} " "$work/err" ||
    { echo "FAIL: no job of ${pair%%:*} paused in ${pair#*:}"; status=1; }
done
if [ "$mode" = file ]; then
  grep -q "function demo_poll .*paused in demo_poll " "$work/err" ||
    { echo "FAIL: the polling job is missing"; status=1; }
fi
exit $status
