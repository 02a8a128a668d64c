#!/bin/sh
# install.launcher: the installed asyncjob-run (and the build tree's copy)
# runs existing programs on asyncjob.
#   - `openssl speed -async_jobs 4` through it runs its jobs on asyncjob
#     (--stats: the counters show the jobs and libcrypto connected);
#   - --provider adds the asyncjob provider next to the configuration the
#     program would read anyway (`openssl list -providers` shows both, the
#     written file .include's the program's OPENSSL_CONF);
#   - a static program, a program with libcrypto linked in, and setuid and
#     setgid programs are refused before they start, with a message;
#   - a program whose ASYNC_start_job is its own is reported after start-up.
. "$(dirname "$0")/common.sh"
install_tree launcher

run=$PREFIX/bin/asyncjob-run
[ -x "$run" ] || fail "$run is not installed"
openssl=$(command -v openssl) || fail "no openssl command; on Debian/Ubuntu install the package 'openssl'"
# The launcher's private files (the provider configuration) go here.
TMPDIR=$WORK/tmp
mkdir -p "$TMPDIR"
unset XDG_RUNTIME_DIR OPENSSL_CONF ASYNCJOB_STATS LD_PRELOAD 2>/dev/null || :
export TMPDIR

# launch LOG ARGS...: runs the installed launcher, stdout and stderr to LOG.
# Through a pipe, so that the check after start-up, which outlives the
# launcher's exec, has finished writing when this returns.
launch() {
  _log=$1
  shift
  { _status=0; "$run" "$@" 2>&1 || _status=$?; echo "exit status $_status"; } | cat >"$_log"
}
status_of() { sed -n 's/^exit status //p' "$1"; }
no_launcher_error() {
  if grep 'asyncjob-run' "$1"; then fail "$2: asyncjob-run reported a problem"; fi
}

# ----- openssl speed on asyncjob -----
launch "$WORK/speed.log" --stats "$openssl" speed -async_jobs 4 -seconds 1 -mr rsa2048
[ "$(status_of "$WORK/speed.log")" = 0 ] || { cat "$WORK/speed.log"; fail "openssl speed failed"; }
grep -q '^+F2:' "$WORK/speed.log" || { cat "$WORK/speed.log"; fail "no RSA result line"; }
no_launcher_error "$WORK/speed.log" "openssl speed"
line=$(grep '^asyncjob: ' "$WORK/speed.log") || { cat "$WORK/speed.log"; fail "--stats printed no counters"; }
started=$(printf '%s\n' "$line" | sed 's/^asyncjob: \([0-9]*\) jobs started.*/\1/')
[ "$started" -ge 4 ] || fail "expected at least 4 jobs on asyncjob, it saw $started: $line"
printf '%s\n' "$line" | grep -q 'libcrypto connected' || fail "libcrypto not connected: $line"
say "ok: openssl speed -async_jobs 4 ran $started jobs on asyncjob"

# Without --stats, nothing is added to the program's output.
launch "$WORK/plain.log" "$openssl" version
[ "$(status_of "$WORK/plain.log")" = 0 ] || { cat "$WORK/plain.log"; fail "openssl version failed"; }
[ "$(grep -c . "$WORK/plain.log")" = 2 ] || { cat "$WORK/plain.log"; fail "output added without --stats"; }

# The build tree's copy finds the build tree's library.
{ "$ASYNCJOB_BUILD_DIR/bin/asyncjob-run" --stats "$openssl" version 2>&1; } | cat >"$WORK/build_tree.log"
grep -q '^asyncjob: .*libcrypto connected' "$WORK/build_tree.log" ||
  { cat "$WORK/build_tree.log"; fail "the build tree's asyncjob-run did not run openssl on asyncjob"; }

# ----- --provider -----
launch "$WORK/providers.log" --provider "$openssl" list -providers
[ "$(status_of "$WORK/providers.log")" = 0 ] || { cat "$WORK/providers.log"; fail "openssl list -providers failed"; }
no_launcher_error "$WORK/providers.log" "openssl list -providers"
cat "$WORK/providers.log"
for name in asyncjob default; do
  awk -v p="$name" '$1 == p { found = 1; next } found && /status:/ { exit !($2 == "active") } END { exit !found }' \
    "$WORK/providers.log" || fail "provider $name is not listed as active"
done
# The provider signs under openssl speed.
launch "$WORK/provider_speed.log" --provider --stats "$openssl" speed -async_jobs 4 -seconds 1 -mr rsa2048
[ "$(status_of "$WORK/provider_speed.log")" = 0 ] || { cat "$WORK/provider_speed.log"; fail "speed with --provider failed"; }
submitted=$(sed -n 's/^asyncjob provider: \([0-9]*\) signatures submitted.*/\1/p' "$WORK/provider_speed.log")
[ "${submitted:-0}" -gt 0 ] || { cat "$WORK/provider_speed.log"; fail "the provider signed nothing"; }
say "ok: --provider: listed, and $submitted signatures on its engine"

# The file it writes includes the program's own configuration, whose
# settings still apply: a configuration that names an init section of its
# own (here with no providers) keeps it, and gains the provider there.
cat >"$WORK/mine.cnf" <<CNF
openssl_conf = mine_init
[mine_init]
# nothing else
CNF
OPENSSL_CONF=$WORK/mine.cnf launch "$WORK/conf.log" --provider sh -c 'cat "$OPENSSL_CONF"'
grep -qxF ".include $WORK/mine.cnf" "$WORK/conf.log" || { cat "$WORK/conf.log"; fail "the written configuration does not include OPENSSL_CONF"; }
grep -qx '\[mine_init\]' "$WORK/conf.log" || { cat "$WORK/conf.log"; fail "the program's init section was not kept"; }
OPENSSL_CONF=$WORK/mine.cnf launch "$WORK/mine_providers.log" --provider "$openssl" list -providers
grep -q '^  asyncjob$' "$WORK/mine_providers.log" || { cat "$WORK/mine_providers.log"; fail "no provider with OPENSSL_CONF set"; }
# Without OPENSSL_CONF, the system's (libcrypto's OPENSSLDIR) is included.
openssldir=$("$openssl" version -d | sed -n 's/^OPENSSLDIR: "\(.*\)"$/\1/p')
if [ -f "$openssldir/openssl.cnf" ]; then
  launch "$WORK/sysconf.log" --provider sh -c 'cat "$OPENSSL_CONF"'
  grep -qxF ".include $openssldir/openssl.cnf" "$WORK/sysconf.log" ||
    { cat "$WORK/sysconf.log"; fail "the system's configuration is not included"; }
fi

# ----- Refusals before start -----
# refused LOG WHAT PATTERN: the launcher exited 126 with a message.
refused() {
  [ "$(status_of "$1")" = 126 ] || { cat "$1"; fail "$2 was not refused"; }
  grep -q "$3" "$1" || { cat "$1"; fail "$2: no clear message"; }
  say "ok: $2 refused: $(grep "$3" "$1")"
}
cc_log=$WORK/cc.log
"$CC" -o "$WORK/static_program" "$ASYNCJOB_TEST_SRC/launcher/uses_async.c" -static -lcrypto -pthread \
  >"$cc_log" 2>&1 || { cat "$cc_log"; fail "cannot link a static program with libcrypto.a (libssl-dev)"; }
launch "$WORK/static.log" "$WORK/static_program"
refused "$WORK/static.log" "a static program" "is statically linked"

run_logged "$cc_log" "$CC" -o "$WORK/libcrypto_inside" "$ASYNCJOB_TEST_SRC/launcher/uses_async.c" \
  -Wl,-Bstatic -lcrypto -Wl,-Bdynamic -pthread
run_logged "$cc_log" strip -o "$WORK/libcrypto_inside_stripped" "$WORK/libcrypto_inside"
for program in libcrypto_inside libcrypto_inside_stripped; do
  launch "$WORK/$program.log" "$WORK/$program"
  refused "$WORK/$program.log" "$program" "has libcrypto linked in statically"
done

run_logged "$cc_log" "$CC" -o "$WORK/shared_libcrypto" "$ASYNCJOB_TEST_SRC/launcher/uses_async.c" -lcrypto
launch "$WORK/shared.log" "$WORK/shared_libcrypto"
[ "$(status_of "$WORK/shared.log")" = 0 ] || { cat "$WORK/shared.log"; fail "a shared-libcrypto program was not run"; }
no_launcher_error "$WORK/shared.log" "a shared-libcrypto program"

cp "$openssl" "$WORK/openssl_setuid"
chmod u+s "$WORK/openssl_setuid"
launch "$WORK/setuid.log" "$WORK/openssl_setuid" version
refused "$WORK/setuid.log" "a setuid program" "is setuid or setgid"
cp "$openssl" "$WORK/openssl_setgid"
chmod g+s "$WORK/openssl_setgid"
launch "$WORK/setgid.log" "$WORK/openssl_setgid" version
refused "$WORK/setgid.log" "a setgid program" "is setuid or setgid"

# ----- The check after start-up -----
run_logged "$cc_log" "$CC" -o "$WORK/own_async" "$ASYNCJOB_TEST_SRC/launcher/own_async_start_job.c" \
  -rdynamic -lcrypto
launch "$WORK/own.log" "$WORK/own_async"
[ "$(status_of "$WORK/own.log")" = 0 ] || { cat "$WORK/own.log"; fail "own_async failed"; }
grep -q "does not run its jobs on asyncjob: its ASYNC_start_job is the one in $WORK/own_async" "$WORK/own.log" ||
  { cat "$WORK/own.log"; fail "a program whose ASYNC_start_job is its own was not reported"; }
say "ok: reported: $(grep 'does not run its jobs' "$WORK/own.log")"

# Nothing left behind but the reusable provider configuration.
leftovers=$(find "$TMPDIR" -mindepth 1 ! -path "$TMPDIR/asyncjob-run-*" | head -n 5)
[ -z "$leftovers" ] || fail "files left in TMPDIR: $leftovers"
