#!/bin/sh
# install.openssl_program: a program written for OpenSSL's <openssl/async.h>
# (openssl_api_program.c) builds unchanged against the installed tree with
#   cc $(pkg-config --cflags asyncjob-openssl) prog.c $(pkg-config --libs asyncjob-openssl)
# gets asyncjob's header and asyncjob's functions (not libcrypto's), prints
# exactly the expected output of ASYNC_start_job(3)'s example, and does the
# same when linked statically against libasyncjob.a.
. "$(dirname "$0")/common.sh"
install_tree openssl_program
use_pkg_config
need_tool "$READELF" binutils
need_tool "$NM" binutils

src=$ASYNCJOB_TEST_SRC/openssl_api_program.c
expected=$ASYNCJOB_TEST_SRC/expected_output.txt
real_prefix=$(cd "$PREFIX" && pwd -P)

# in_prefix PATH: true when PATH (an existing file) lies in the prefix.
in_prefix() {
  case "$(cd "$(dirname "$1")" && pwd -P)/" in
    "$real_prefix"/*) return 0 ;;
    *) return 1 ;;
  esac
}

cflags=$("$PKG_CONFIG" --cflags asyncjob-openssl)
libs=$("$PKG_CONFIG" --libs asyncjob-openssl)
say "cflags: $cflags"
say "libs:   $libs"

# 1. <openssl/async.h> resolves to asyncjob's, and no header of OpenSSL's own
#    is read at all. (The flags are split into words on purpose, as in a
#    makefile.)
# shellcheck disable=SC2086
run_logged "$WORK/deps.log" "$CC" $cflags -M "$src"
compat_header=
# shellcheck disable=SC2013 # make-style rules: whitespace-separated words
for dep in $(sed 's/\\$//' "$WORK/deps.log"); do
  case $dep in
    */openssl/*)
      in_prefix "$dep" || fail "the program read $dep, which is not asyncjob's"
      case $dep in */openssl-compat/openssl/async.h) compat_header=$dep ;; esac ;;
    */asyncjob/async.h)
      in_prefix "$dep" || fail "the program read $dep, not the installed header" ;;
  esac
done
[ -n "$compat_header" ] || fail "<openssl/async.h> did not resolve to asyncjob's compat header"
say "ok: <openssl/async.h> is $compat_header"

# 2. Dynamic link, run with the prefix's lib directory.
# shellcheck disable=SC2086
run_logged "$WORK/build.log" "$CC" $SAN -Wall -Wextra -Werror $cflags "$src" \
  -o "$WORK/openssl_api_program" $libs $SAN_C_LIBS
needed_libs "$WORK/openssl_api_program" >"$WORK/needed"
grep -qx 'libasyncjob\.so\.[0-9]*' "$WORK/needed" ||
  fail "the program does not need libasyncjob: $(cat "$WORK/needed")"
if grep -E 'libcrypto|libssl' "$WORK/needed"; then
  fail "the program depends on OpenSSL's libraries"
fi
say "ok: DT_NEEDED: $(tr '\n' ' ' <"$WORK/needed")"

# run_and_compare LABEL PROGRAM [ENV=VALUE...]
run_and_compare() {
  _label=$1
  _prog=$2
  shift 2
  _status=0
  env "$@" "$_prog" >"$WORK/$_label.out" 2>"$WORK/$_label.err" || _status=$?
  cat "$WORK/$_label.err" >&2
  if ! diff "$expected" "$WORK/$_label.out" >"$WORK/$_label.diff"; then
    say "$_label: output differs from the expected output (< expected, > actual):"
    cat "$WORK/$_label.diff"
    fail "$_label printed the wrong output"
  fi
  [ "$_status" -eq 0 ] || fail "$_label exited with status $_status"
  say "ok: $_label printed the expected $(wc -l <"$expected") lines and exited with 0"
}

run_and_compare shared "$WORK/openssl_api_program" "LD_LIBRARY_PATH=$LIBDIR"

# The loader found the installed library, and bound every ASYNC_* call of the
# program to it (LD_DEBUG is glibc's; elsewhere only ldd is consulted).
resolved=$(LD_LIBRARY_PATH=$LIBDIR ldd "$WORK/openssl_api_program" |
           sed -n 's/^[[:space:]]*libasyncjob\.so[.0-9]* => \([^ ]*\) .*/\1/p')
if [ -z "$resolved" ] || ! in_prefix "$resolved"; then
  fail "ldd resolves libasyncjob to '$resolved', not into the prefix"
fi
say "ok: ldd: libasyncjob => $resolved"
LD_LIBRARY_PATH=$LIBDIR LD_DEBUG=bindings "$WORK/openssl_api_program" \
  >/dev/null 2>"$WORK/bindings.log" || :
if grep -q 'binding file' "$WORK/bindings.log"; then
  grep "normal symbol \`ASYNC_" "$WORK/bindings.log" |
    grep 'binding file [^ ]*openssl_api_program ' >"$WORK/async_bindings" || :
  grep -q "\`ASYNC_start_job'" "$WORK/async_bindings" ||
    fail "LD_DEBUG=bindings shows no binding of ASYNC_start_job"
  if grep -v ' to [^ ]*/libasyncjob\.so[.0-9]* ' "$WORK/async_bindings"; then
    fail "ASYNC_* calls above were bound to something other than libasyncjob"
  fi
  say "ok: LD_DEBUG=bindings: $(wc -l <"$WORK/async_bindings") ASYNC_* symbols bound to libasyncjob"
fi

# 3. Static link against libasyncjob.a: the same link line from
#    `pkg-config --static`, with -lasyncjob pinned to the archive.
static_libs=
# shellcheck disable=SC2046
for word in $("$PKG_CONFIG" --static --libs asyncjob-openssl); do
  [ "$word" = -lasyncjob ] && word=-l:libasyncjob.a
  static_libs="$static_libs $word"
done
say "static libs:$static_libs"
# shellcheck disable=SC2086
run_logged "$WORK/build_static.log" "$CC" $SAN -Wall -Wextra -Werror $cflags "$src" \
  -o "$WORK/openssl_api_program_static" $static_libs $SAN_C_LIBS
if needed_libs "$WORK/openssl_api_program_static" | grep -E 'libasyncjob|libcrypto|libssl'; then
  fail "the statically linked program still needs the libraries above"
fi
"$NM" "$WORK/openssl_api_program_static" | grep -q ' T ASYNC_start_job$' ||
  fail "the statically linked program does not contain ASYNC_start_job"
run_and_compare static "$WORK/openssl_api_program_static"
