#!/bin/sh
# install.headers: the installed <asyncjob/async.h> coexists with the
# system's real <openssl/async.h> (libssl-dev) in one translation unit, in
# either order, as C11 and as C++20, with -Wall -Wextra -Werror; and the
# installed compat <openssl/async.h> stands in for OpenSSL's under libssl's
# <openssl/ssl.h>. Compile only.
. "$(dirname "$0")/common.sh"
install_tree headers

# The system's OpenSSL headers: where the C compiler finds them.
printf '#include <openssl/async.h>\n' >"$WORK/probe.c"
if ! "$CC" -M "$WORK/probe.c" >"$WORK/probe.d" 2>"$WORK/probe.err"; then
  cat "$WORK/probe.err" >&2
  fail "no system <openssl/async.h>; on Debian/Ubuntu install the package 'libssl-dev'"
fi
system_header=$(sed 's/[\\]$//' "$WORK/probe.d" | tr ' ' '\n' | grep '/openssl/async\.h$' | head -n 1)
say "system header: $system_header"

c_flags="-std=c11 -Wall -Wextra -Werror"
cxx_flags="-std=c++20 -Wall -Wextra -Werror"

# compile LABEL COMPILER FLAGS... SOURCE: compiles SOURCE to an object, and
# checks that both headers named in the label were really read.
compile() {
  _label=$1
  shift
  run_logged "$WORK/$_label.log" "$@" -c -o "$WORK/$_label.o"
  run_logged "$WORK/$_label.deps" "$@" -M
  say "ok: $_label"
}

for order in 0 1; do
  # shellcheck disable=SC2086
  compile "c-order$order" "$CC" $c_flags "-I$INCLUDEDIR" "-DASYNCJOB_HEADER_FIRST=$order" \
    "$ASYNCJOB_TEST_SRC/headers_coexist.c"
  # shellcheck disable=SC2086
  compile "cxx-order$order" "$CXX" $cxx_flags "-I$INCLUDEDIR" "-DASYNCJOB_HEADER_FIRST=$order" \
    "$ASYNCJOB_TEST_SRC/headers_coexist.cc"
  for label in "c-order$order" "cxx-order$order"; do
    grep -qF "$system_header" "$WORK/$label.deps" ||
      fail "$label did not read the system's $system_header"
    grep -qF "$INCLUDEDIR/asyncjob/async.h" "$WORK/$label.deps" ||
      fail "$label did not read the installed <asyncjob/async.h>"
  done
done

# The compat header, placed first on the include path by asyncjob-openssl.
use_pkg_config
compat_cflags=$("$PKG_CONFIG" --cflags asyncjob-openssl)
for order in 0 1; do
  # shellcheck disable=SC2086
  compile "compat-c-ssl$order" "$CC" $c_flags $compat_cflags "-DSSL_FIRST=$order" \
    "$ASYNCJOB_TEST_SRC/compat_with_libssl.c"
  # shellcheck disable=SC2086
  compile "compat-cxx-ssl$order" "$CXX" $cxx_flags -x c++ $compat_cflags "-DSSL_FIRST=$order" \
    "$ASYNCJOB_TEST_SRC/compat_with_libssl.c"
  for label in "compat-c-ssl$order" "compat-cxx-ssl$order"; do
    if grep -qF "$system_header" "$WORK/$label.deps"; then
      fail "$label read the system's $system_header instead of asyncjob's"
    fi
  done
done
