#!/bin/sh
# install.exports: the installed libasyncjob.so exports functions only, and
# only the API: OpenSSL's 22 ASYNC_* functions and the asyncjob_* functions
# that <asyncjob/async.h> declares. No C++ symbols, no internal helpers, no
# data.
. "$(dirname "$0")/common.sh"
install_tree exports
need_tool "$NM" binutils

lib=$LIBDIR/libasyncjob.so
openssl_api='
ASYNC_init_thread
ASYNC_cleanup_thread
ASYNC_start_job
ASYNC_pause_job
ASYNC_get_current_job
ASYNC_get_wait_ctx
ASYNC_block_pause
ASYNC_unblock_pause
ASYNC_is_capable
ASYNC_set_mem_functions
ASYNC_get_mem_functions
ASYNC_WAIT_CTX_new
ASYNC_WAIT_CTX_free
ASYNC_WAIT_CTX_set_wait_fd
ASYNC_WAIT_CTX_get_fd
ASYNC_WAIT_CTX_get_all_fds
ASYNC_WAIT_CTX_get_changed_fds
ASYNC_WAIT_CTX_clear_fd
ASYNC_WAIT_CTX_set_callback
ASYNC_WAIT_CTX_get_callback
ASYNC_WAIT_CTX_set_status
ASYNC_WAIT_CTX_get_status
'

# "ADDRESS TYPE NAME@@VERSION" -> "TYPE NAME VERSION". The version nodes
# themselves appear as absolute symbols ("A NODE", or "A NODE@@NODE" with
# some binutils): exactly OpenSSL's two and asyncjob's own may exist.
LC_ALL=C "$NM" -D --defined-only "$lib" |
  awk 'NF == 3 && $2 == "A" { sub(/@.*/, "", $3); print $3 >"'"$WORK/nodes"'"; next }
       NF == 3 { split($3, part, "@@"); print $2, part[1], part[2] }' |
  sort -k2 >"$WORK/exported"
[ -s "$WORK/exported" ] || fail "nm -D found no defined symbols in $lib"

status=0
printf '%s\n' ASYNCJOB_0 OPENSSL_3.0.0 OPENSSL_3.2.0 >"$WORK/nodes_expected"
if ! sort "$WORK/nodes" | diff "$WORK/nodes_expected" - >"$WORK/diff_nodes"; then
  say "version nodes differ from OPENSSL_3.0.0, OPENSSL_3.2.0, ASYNCJOB_0:"
  cat "$WORK/diff_nodes"
  status=1
fi
while read -r type name version; do
  case $name in
    ASYNC_set_mem_functions | ASYNC_get_mem_functions) want=OPENSSL_3.2.0 ;;
    ASYNC_*) want=OPENSSL_3.0.0 ;;
    asyncjob_*) want=ASYNCJOB_0 ;;
    *) say "not API: $type $name"; status=1; continue ;;
  esac
  # OpenSSL's functions carry OpenSSL's version nodes so that libssl,
  # engines and providers bind to them when asyncjob comes first.
  [ "$version" = "$want" ] || { say "$name has version '$version', want $want"; status=1; }
  # T: a global function in .text. Anything else (data, weak, indirect
  # functions) has no place in this ABI.
  [ "$type" = T ] || { say "not a plain function: $type $name"; status=1; }
done <"$WORK/exported"

awk '{ print $2 }' "$WORK/exported" >"$WORK/exported_names"

# Exactly OpenSSL's ASYNC_* functions, all 22 of them.
# shellcheck disable=SC2086 # one name a word
printf '%s\n' $openssl_api | sort >"$WORK/openssl_api"
grep '^ASYNC_' "$WORK/exported_names" >"$WORK/exported_async" || :
if ! diff "$WORK/openssl_api" "$WORK/exported_async" >"$WORK/diff_async"; then
  say "ASYNC_* exports differ from OpenSSL's API (< missing, > extra):"
  cat "$WORK/diff_async"
  status=1
fi
[ "$(wc -l <"$WORK/openssl_api")" -eq 22 ] || fail "test bug: the list must have 22 names"

# Exactly the asyncjob_* functions the installed header declares: an
# internal helper named asyncjob_* would slip through the version script's
# wildcard, and a declared one missing would not link.
cat "$INCLUDEDIR"/asyncjob/*.h | tr '\n' ' ' |
  grep -o 'ASYNCJOB_EXPORT [^;(]*(' |
  sed 's/.*[^A-Za-z0-9_]\([A-Za-z_][A-Za-z0-9_]*\) *($/\1/' | sort -u >"$WORK/declared"
grep '^ASYNC_' "$WORK/declared" >"$WORK/declared_async" || :
if ! diff "$WORK/openssl_api" "$WORK/declared_async" >"$WORK/diff_declared"; then
  say "ASYNC_* functions declared in <asyncjob/async.h> differ from OpenSSL's API:"
  cat "$WORK/diff_declared"
  status=1
fi
grep '^asyncjob_' "$WORK/declared" >"$WORK/declared_ext" || :
grep '^asyncjob_' "$WORK/exported_names" >"$WORK/exported_ext" || :
[ -s "$WORK/declared_ext" ] || fail "found no asyncjob_* declarations in the header"
if ! diff "$WORK/declared_ext" "$WORK/exported_ext" >"$WORK/diff_ext"; then
  say "asyncjob_* exports differ from <asyncjob/async.h> (< declared only, > exported only):"
  cat "$WORK/diff_ext"
  status=1
fi

[ "$status" -eq 0 ] || fail "libasyncjob.so exports the wrong set of symbols"
say "ok: $(wc -l <"$WORK/exported_names") exports:" \
    "$(wc -l <"$WORK/exported_async") ASYNC_* and $(wc -l <"$WORK/exported_ext") asyncjob_* functions"
