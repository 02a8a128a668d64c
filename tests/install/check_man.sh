#!/bin/sh
# install.man: the installed manual pages render without a warning (mandoc
# -T lint, and groff -ww where installed), every asyncjob_* function that
# libasyncjob.so exports has a page under its own name (the family's page,
# or a one-line .so page leading to it, whose NAME section lists it), every
# ASYNCJOB_* constant of the installed headers and every ASYNCJOB_*
# environment variable the library reads is documented on some page.
. "$(dirname "$0")/common.sh"
install_tree man
need_tool "$NM" binutils

mandir=$PREFIX/share/man
[ -f "$mandir/man7/asyncjob.7" ] || fail "asyncjob(7) is not installed under $mandir"
[ -f "$mandir/man1/asyncjob-run.1" ] || fail "asyncjob-run(1) is not installed under $mandir"

have_mandoc=0
have_groff=0
command -v mandoc >/dev/null 2>&1 && have_mandoc=1
command -v groff >/dev/null 2>&1 && have_groff=1
[ $((have_mandoc + have_groff)) -gt 0 ] ||
  fail "neither mandoc nor groff found; on Debian/Ubuntu install the package 'mandoc'"

status=0
pages=0
# The real pages, and the .so pages that lead to them.
for page in "$mandir"/man[0-9]/*; do
  first=$(head -n 1 "$page")
  case $first in
    .so\ *)
      target=$mandir/${first#.so }
      [ -f "$target" ] || { say "$page leads to a missing $target"; status=1; continue; }
      name=$(basename "$page" | sed 's/\.[0-9]$//')
      grep -qx "\.Nm $name\( ,\)\{0,1\}" "$target" ||
        { say "$page leads to $target, whose NAME section does not list $name"; status=1; }
      continue
      ;;
  esac
  pages=$((pages + 1))
  if [ $have_mandoc = 1 ]; then
    (cd "$mandir" && mandoc -T lint -W warning "$page") >"$WORK/lint" 2>&1 || :
    [ ! -s "$WORK/lint" ] || { cat "$WORK/lint"; status=1; }
  fi
  if [ $have_groff = 1 ]; then
    groff -mandoc -ww -z "$page" >"$WORK/groff" 2>&1 || :
    [ ! -s "$WORK/groff" ] || { say "groff -ww on $page:"; cat "$WORK/groff"; status=1; }
  fi
done
[ "$status" -eq 0 ] || fail "the manual pages have warnings or broken links"
say "ok: $pages pages render without warnings"

# Every exported asyncjob_* function: a page of its own name in section 3.
LC_ALL=C "$NM" -D --defined-only "$LIBDIR/libasyncjob.so" |
  awk 'NF == 3 { sub(/@.*/, "", $3); print $3 }' | grep '^asyncjob_' | sort -u >"$WORK/exported"
[ -s "$WORK/exported" ] || fail "no asyncjob_* exports found"
while read -r name; do
  [ -f "$mandir/man3/$name.3" ] || { say "undocumented: $name (no page $mandir/man3/$name.3)"; status=1; }
done <"$WORK/exported"

# Every ASYNCJOB_* macro of the installed headers but their include guards
# and legacy.h's helper for its own compile error.
cat "$INCLUDEDIR"/asyncjob/*.h |
  sed -n 's/^#[[:space:]]*define[[:space:]]\{1,\}\(ASYNCJOB_[A-Z0-9_]*\).*/\1/p' |
  grep -v '_H$' | grep -vx 'ASYNCJOB_LEGACY_STATIC_ASSERT' | sort -u >"$WORK/constants"
[ -s "$WORK/constants" ] || fail "no ASYNCJOB_* constants found in the headers"
while read -r name; do
  grep -q "^\.\(Dv\|Nm\|Fn\|It Dv\) $name\([ ,]\|$\)" "$mandir"/man[0-9]/* ||
    { say "undocumented constant: $name"; status=1; }
done <"$WORK/constants"

# Every ASYNCJOB_* environment variable the library, the provider or the
# launcher reads: in asyncjob(7).
grep -rho 'getenv("ASYNCJOB_[A-Z0-9_]*")' "$ASYNCJOB_SOURCE_DIR/src" |
  sed 's/getenv("\(.*\)")/\1/' | sort -u >"$WORK/environment"
while read -r name; do
  grep -q "^\.It Ev $name\$" "$mandir/man7/asyncjob.7" ||
    { say "environment variable $name is not in asyncjob(7)"; status=1; }
done <"$WORK/environment"

[ "$status" -eq 0 ] || fail "some of the API is not documented"
say "ok: $(wc -l <"$WORK/exported") functions, $(wc -l <"$WORK/constants") constants and" \
    "$(wc -l <"$WORK/environment") environment variables documented"
