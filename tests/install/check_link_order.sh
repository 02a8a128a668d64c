#!/bin/sh
# install.link_order: a program that also uses libcrypto, linked
#   cc ... $(pkg-config --libs asyncjob) -lcrypto
# (asyncjob named before libcrypto) gets asyncjob's ASYNC_start_job, although
# libcrypto defines one too: link_order.c checks with dladdr() where the
# function it calls lives and runs a job. Linked the other way round the
# program is only run to show where its functions come from then.
. "$(dirname "$0")/common.sh"
install_tree link_order
use_pkg_config
need_tool "$READELF" binutils

src=$ASYNCJOB_TEST_SRC/link_order.c
cflags=$("$PKG_CONFIG" --cflags asyncjob)
libs=$("$PKG_CONFIG" --libs asyncjob)

# A libcrypto to link with (libssl-dev).
printf '#include <openssl/crypto.h>\nint main(void) { return OpenSSL_version_num() == 0; }\n' \
  >"$WORK/probe.c"
if ! "$CC" "$WORK/probe.c" -o "$WORK/probe" -lcrypto >"$WORK/probe.log" 2>&1; then
  cat "$WORK/probe.log" >&2
  fail "cannot link with -lcrypto; on Debian/Ubuntu install the package 'libssl-dev'"
fi

# dladdr() is in libc since glibc 2.34, in libdl before: -ldl covers both.
# shellcheck disable=SC2086
run_logged "$WORK/build.log" "$CC" $SAN -Wall -Wextra -Werror $cflags "$src" \
  -o "$WORK/link_order" $libs -lcrypto -ldl $SAN_C_LIBS
needed_libs "$WORK/link_order" >"$WORK/needed"
say "DT_NEEDED: $(tr '\n' ' ' <"$WORK/needed")"
# The premise: both libraries are loaded, asyncjob's first.
first=$(grep -n -E '^libasyncjob\.' "$WORK/needed" | cut -d: -f1)
crypto=$(grep -n -E '^libcrypto\.' "$WORK/needed" | cut -d: -f1)
if [ -z "$first" ] || [ -z "$crypto" ] || [ "$first" -gt "$crypto" ]; then
  fail "expected libasyncjob before libcrypto among the needed libraries"
fi

status=0
LD_LIBRARY_PATH=$LIBDIR "$WORK/link_order" asyncjob || status=$?
[ "$status" -eq 0 ] || fail "linked -lasyncjob -lcrypto, the program did not get asyncjob's ASYNC_* (status $status)"
say "ok: -lasyncjob -lcrypto binds ASYNC_start_job to asyncjob"

# For the record: the other order.
# shellcheck disable=SC2086
if "$CC" $SAN $cflags "$src" -o "$WORK/link_order_reversed" -lcrypto $libs -ldl $SAN_C_LIBS \
     >"$WORK/build_reversed.log" 2>&1; then
  say "--- for information, linked -lcrypto -lasyncjob instead:"
  LD_LIBRARY_PATH=$LIBDIR "$WORK/link_order_reversed" report || :
fi
