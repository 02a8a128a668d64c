#!/bin/sh
# install.layout: the installed tree has the files a user expects, the shared
# library's SONAME is libasyncjob.so.0, nothing installed refers back to the
# build or source tree, and the pkg-config files describe this prefix.
. "$(dirname "$0")/common.sh"
install_tree layout

need_tool "$READELF" binutils
need_tool "$NM" binutils

major=${ASYNCJOB_VERSION%%.*}
for f in \
    "$LIBDIR/libasyncjob.so" \
    "$LIBDIR/libasyncjob.so.$major" \
    "$LIBDIR/libasyncjob.so.$ASYNCJOB_VERSION" \
    "$LIBDIR/libasyncjob.a" \
    "$INCLUDEDIR/asyncjob/async.h" \
    "$INCLUDEDIR/asyncjob/errors.h" \
    "$INCLUDEDIR/asyncjob/legacy.h" \
    "$INCLUDEDIR/asyncjob/openssl-compat/openssl/async.h" \
    "$LIBDIR/cmake/asyncjob/asyncjobConfig.cmake" \
    "$LIBDIR/cmake/asyncjob/asyncjobConfigVersion.cmake" \
    "$LIBDIR/cmake/asyncjob/asyncjobTargets.cmake" \
    "$LIBDIR/pkgconfig/asyncjob.pc" \
    "$LIBDIR/pkgconfig/asyncjob-openssl.pc"; do
  [ -f "$f" ] || fail "missing: ${f#"$PREFIX"/}"
  say "ok: ${f#"$PREFIX"/}"
done

# The usual symlink chain: .so -> .so.MAJOR -> .so.VERSION (the real file).
for link in libasyncjob.so "libasyncjob.so.$major"; do
  [ -L "$LIBDIR/$link" ] || fail "$link is not a symbolic link"
done
[ ! -L "$LIBDIR/libasyncjob.so.$ASYNCJOB_VERSION" ] ||
  fail "libasyncjob.so.$ASYNCJOB_VERSION should be the file itself"

soname=$(LC_ALL=C "$READELF" -d "$LIBDIR/libasyncjob.so" |
         sed -n 's/.*(SONAME).*\[\(.*\)\]$/\1/p')
[ "$soname" = "libasyncjob.so.$major" ] ||
  fail "SONAME is '$soname', expected libasyncjob.so.$major"
say "ok: SONAME $soname"

# The gdb extension, where gdb auto-loads it for the library's real file.
gdb_script=$PREFIX/share/gdb/auto-load$LIBDIR/libasyncjob.so.$ASYNCJOB_VERSION-gdb.py
[ -f "$gdb_script" ] || fail "the gdb extension is not installed as $gdb_script"
say "ok: gdb extension installed for auto-loading"

# No RPATH/RUNPATH left pointing into the build tree.
if LC_ALL=C "$READELF" -d "$LIBDIR/libasyncjob.so" | grep -E '\((RPATH|RUNPATH)\)'; then
  fail "the installed libasyncjob.so carries an RPATH/RUNPATH"
fi

# The static library holds the same API.
"$NM" --defined-only "$LIBDIR/libasyncjob.a" 2>/dev/null | grep -q ' T ASYNC_start_job$' ||
  fail "libasyncjob.a does not define ASYNC_start_job"
say "ok: libasyncjob.a defines ASYNC_start_job"

# Installed text files must not point at the trees they came from.
for f in "$LIBDIR"/cmake/asyncjob/*.cmake "$LIBDIR"/pkgconfig/*.pc; do
  for tree in "$ASYNCJOB_BUILD_DIR" "$ASYNCJOB_SOURCE_DIR"; do
    if grep -F -e "$tree" "$f" >/dev/null; then
      fail "${f#"$PREFIX"/} mentions $tree"
    fi
  done
done
say "ok: no build or source paths in the CMake and pkg-config files"

# pkg-config: both modules valid, right version, and every directory they
# name lies in this prefix (not in the configure-time CMAKE_INSTALL_PREFIX).
use_pkg_config
real_prefix=$(cd "$PREFIX" && pwd -P)
for module in asyncjob asyncjob-openssl; do
  "$PKG_CONFIG" --exists "$module" || fail "pkg-config cannot find $module"
  version=$("$PKG_CONFIG" --modversion "$module")
  [ "$version" = "$ASYNCJOB_VERSION" ] ||
    fail "$module version is '$version', expected $ASYNCJOB_VERSION"
  pc_prefix=$("$PKG_CONFIG" --variable=prefix "$module")
  if ! [ -d "$pc_prefix" ] || [ "$(cd "$pc_prefix" && pwd -P)" != "$real_prefix" ]; then
    fail "$module: prefix=$pc_prefix is not the install prefix $PREFIX"
  fi
  for flag in $("$PKG_CONFIG" --cflags-only-I "$module") \
              $("$PKG_CONFIG" --libs-only-L "$module"); do
    dir=${flag#-?}
    [ -d "$dir" ] || fail "$module: $flag names no directory"
    case $(cd "$dir" && pwd -P)/ in
      "$real_prefix"/*) ;;
      *) fail "$module: $flag lies outside the prefix" ;;
    esac
  done
  say "ok: pkg-config $module $version: $("$PKG_CONFIG" --cflags --libs "$module")"
done
# The static link line carries what libasyncjob.a needs beyond libc.
static_libs=$("$PKG_CONFIG" --static --libs asyncjob)
case " $static_libs " in
  *" -pthread "*) ;;
  *) fail "pkg-config --static --libs asyncjob lacks -pthread: $static_libs" ;;
esac
say "ok: pkg-config --static --libs asyncjob: $static_libs"
