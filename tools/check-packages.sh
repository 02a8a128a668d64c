#!/usr/bin/env bash
# Builds the Debian packages and tries them on this machine as a user would:
#
#   1. the workflow preset `package` (build/package/packages/*.deb);
#   2. lintian on the three packages: any error (E:) fails;
#   3. apt-get install of the three .deb files;
#   4. a C program built with `pkg-config --cflags --libs asyncjob`, an
#      <openssl/async.h> program with asyncjob-openssl, and the CMake project
#      tests/install/consumer with find_package(asyncjob), all against the
#      installed packages, and run;
#   5. OpenSSL loads the provider by its name alone (it is in libcrypto's
#      modules directory); asyncjob-run: `--stats` under `openssl speed
#      -async_jobs` (the program's jobs bound to asyncjob, counters printed)
#      and `--provider` under `openssl list -providers` (the provider active);
#   6. apt-get purge of the three packages, then checks that none of their
#      files, nor anything apt pulled in for them, is left.
#
# Run as root on a Debian 12 machine (CI runs it on a fresh one). It refuses
# to run when one of the packages is installed already, and purges what it
# installed however it ends. Needs: cmake, ninja-build, g++, libssl-dev,
# openssl, pkgconf, dpkg-dev, lintian.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(libasyncjob0 libasyncjob-dev asyncjob-openssl)
export DEBIAN_FRONTEND=noninteractive

step() { echo; echo "== $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || fail "run as root: the packages are installed with apt-get"
installed() { dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q 'install ok installed'; }
for package in "${packages[@]}"; do
  ! installed "$package" ||
    fail "$package is installed already: this check installs and purges its own build"
done

work=$(mktemp -d "$PWD/build/check-packages.XXXXXX" 2>/dev/null ||
       { mkdir -p build && mktemp -d "$PWD/build/check-packages.XXXXXX"; })
dpkg-query -W -f='${db:Status-Abbrev} ${Package}:${Architecture}\n' |
  awk '$1 == "ii" { print $2 }' | sort >"$work/before"
we_installed=0
# purge_new: purges what apt-get installed for the packages (dependencies
# the machine lacked before), so that it is left as it was.
purge_new() {
  local new
  dpkg-query -W -f='${db:Status-Abbrev} ${Package}:${Architecture}\n' |
    awk '$1 == "ii" { print $2 }' | sort >"$work/after"
  new=$(comm -13 "$work/before" "$work/after")
  if [[ -n $new ]]; then
    echo "purging what was installed with them: $new"
    # shellcheck disable=SC2086 # package names
    apt-get purge -y -qq $new >/dev/null
  fi
}
cleanup() {
  local status=$?
  if ((we_installed)); then
    apt-get purge -y -qq "${packages[@]}" >/dev/null 2>&1 || :
    purge_new || :
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

start=$SECONDS
step "packages (cmake --workflow --preset package)"
rm -rf build/package/packages  # no package of an earlier version
cmake --workflow --preset package >"$work/package.log" 2>&1 ||
  { cat "$work/package.log"; fail "the package workflow failed"; }
debs=()
for package in "${packages[@]}"; do
  found=(build/package/packages/"${package}"_*.deb)
  [[ ${#found[@]} == 1 && -f ${found[0]} ]] || fail "no $package package in build/package/packages"
  debs+=("./${found[0]}")
done
for deb in "${debs[@]}"; do
  echo "$deb: $(dpkg-deb -f "$deb" Version), depends: $(dpkg-deb -f "$deb" Depends)"
done
built=$SECONDS

step "lintian (errors fail)"
lintian --fail-on error "${debs[@]}" || fail "lintian reports errors"
echo "lintian: no errors"
linted=$SECONDS

step "apt-get install ${debs[*]}"
we_installed=1
apt-get install -y -qq "${debs[@]}" >"$work/install.log" 2>&1 ||
  { cat "$work/install.log"; fail "apt-get install failed"; }
for package in "${packages[@]}"; do
  installed "$package" || fail "$package is not installed"
done
modulesdir=$(pkg-config --variable=modulesdir libcrypto)
[[ -f $modulesdir/asyncjob.so ]] || fail "the provider is not in OpenSSL's modules directory $modulesdir"
echo "provider: $modulesdir/asyncjob.so"

step "a C consumer: cc main.c \$(pkg-config --cflags --libs asyncjob)"
# Only the system's pkg-config files: nothing from a build tree or a prefix.
unset PKG_CONFIG_PATH PKG_CONFIG_LIBDIR CMAKE_PREFIX_PATH asyncjob_DIR asyncjob_ROOT
# shellcheck disable=SC2046 # the flags are words
cc -Wall -Wextra -Werror -o "$work/consumer_c" tests/install/consumer/main.c \
  $(pkg-config --cflags --libs asyncjob)
ldd "$work/consumer_c" | grep -Eq 'libasyncjob\.so\.0 => (/usr)?/lib/' ||
  { ldd "$work/consumer_c"; fail "consumer_c does not load the installed libasyncjob.so.0"; }
"$work/consumer_c"
# shellcheck disable=SC2046
cc -Wall -Wextra -Werror -o "$work/openssl_api_program" tests/install/openssl_api_program.c \
  $(pkg-config --cflags --libs asyncjob-openssl)
"$work/openssl_api_program" >"$work/openssl_api_program.out"
diff -u tests/install/expected_output.txt "$work/openssl_api_program.out" ||
  fail "an <openssl/async.h> program built with asyncjob-openssl printed something else"
echo "openssl_api_program: the expected output"

step "a CMake consumer: find_package(asyncjob) (tests/install/consumer)"
version=$(dpkg-deb -f "${debs[0]}" Version)
version=${version%-*}
cmake -S tests/install/consumer -B "$work/consumer" -G Ninja \
  -DASYNCJOB_EXPECTED_VERSION="$version" >"$work/consumer.log" 2>&1 ||
  { cat "$work/consumer.log"; fail "configuring the consumer failed"; }
grep -qx '/usr/lib/[^/]*/cmake/asyncjob' "$work/consumer/asyncjob_dir.txt" ||
  fail "find_package found asyncjob in $(cat "$work/consumer/asyncjob_dir.txt"), not in the system"
cmake --build "$work/consumer" -j2 >>"$work/consumer.log" 2>&1 ||
  { cat "$work/consumer.log"; fail "building the consumer failed"; }
for program in consumer consumer_static consumer_c_static; do
  "$work/consumer/$program"
done

step "openssl list -providers -provider asyncjob (found in the modules directory)"
openssl list -providers -provider asyncjob >"$work/by_name.log" 2>&1 ||
  { cat "$work/by_name.log"; fail "OpenSSL does not find the asyncjob provider by its name"; }
grep -A3 '^  asyncjob$' "$work/by_name.log" | grep -q 'status: active' ||
  { cat "$work/by_name.log"; fail "the asyncjob provider is not active"; }
echo "the asyncjob provider loads by its name"

# asyncjob-run writes its provider configuration under XDG_RUNTIME_DIR or
# TMPDIR: here, so that nothing is left behind.
run() { env -u XDG_RUNTIME_DIR TMPDIR="$work" asyncjob-run "$@"; }

step "asyncjob-run --stats -- openssl speed -seconds 1 -async_jobs 4 rsa2048"
run --stats -- openssl speed -seconds 1 -async_jobs 4 -mr rsa2048 >"$work/speed.log" 2>&1 ||
  { cat "$work/speed.log"; fail "asyncjob-run openssl speed failed"; }
! grep 'asyncjob-run' "$work/speed.log" || fail "asyncjob-run reported a problem"
grep '^+F2:' "$work/speed.log" || { cat "$work/speed.log"; fail "openssl speed printed no RSA result"; }
counters=$(grep '^asyncjob: ' "$work/speed.log") || { cat "$work/speed.log"; fail "no counters printed"; }
echo "$counters"
jobs=${counters#asyncjob: }
jobs=${jobs%% jobs started*}
[[ $jobs =~ ^[0-9]+$ && $jobs -gt 0 ]] || fail "no job ran on asyncjob: $counters"
grep -q 'libcrypto connected' <<<"$counters" || fail "libcrypto is not connected: $counters"

step "asyncjob-run --provider -- openssl list -providers"
run --provider -- openssl list -providers >"$work/providers.log" 2>&1 ||
  { cat "$work/providers.log"; fail "asyncjob-run openssl list -providers failed"; }
cat "$work/providers.log"
grep -q '^  asyncjob$' "$work/providers.log" || fail "the asyncjob provider is not listed"
grep -A3 '^  asyncjob$' "$work/providers.log" | grep -q 'status: active' ||
  fail "the asyncjob provider is not active"
used=$SECONDS

step "apt-get purge ${packages[*]}"
for package in "${packages[@]}"; do
  dpkg-query -L "$package" >>"$work/files"
done
apt-get purge -y -qq "${packages[@]}" >"$work/purge.log" 2>&1 ||
  { cat "$work/purge.log"; fail "apt-get purge failed"; }
we_installed=0
for package in "${packages[@]}"; do
  ! dpkg-query -W -f='${Status}\n' "$package" 2>/dev/null | grep -qv 'not-installed' ||
    fail "$package is still known to dpkg: $(dpkg-query -W -f='${Status}' "$package")"
done
left=0
while read -r path; do
  # Directories the packages shared with the system stay.
  if [[ -e $path || -L $path ]] && ! [[ -d $path && ! -L $path ]]; then
    echo "left behind: $path"
    left=1
  fi
done <"$work/files"
while read -r path; do
  [[ -d $path ]] || continue
  case $path in
    */asyncjob | */asyncjob/* | */libasyncjob* | */asyncjob-openssl) echo "left behind: $path/"; left=1 ;;
  esac
done <"$work/files"
((left == 0)) || fail "files of the packages are left after the purge"
! ldconfig -p | grep -q libasyncjob || fail "libasyncjob is still in the dynamic loader's cache"
purge_new
dpkg-query -W -f='${db:Status-Abbrev} ${Package}:${Architecture}\n' |
  awk '$1 == "ii" { print $2 }' | sort >"$work/after"
diff -u "$work/before" "$work/after" || fail "the installed packages differ from before the check"
echo "purged: no files left, the same packages installed as before"

echo
echo "== packages checked: build $((built - start)) s, lintian $((linted - built)) s," \
     "install and use $((used - linted)) s, purge $((SECONDS - used)) s"
