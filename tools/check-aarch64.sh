#!/usr/bin/env bash
# check-aarch64.sh - verify the AArch64 context switch under qemu-user, and
# the same smoke test natively on x86-64.
#
# Builds the context unit (src/context/context.cc + the back end's .S) with
# tests/context/context_smoke.cc and runs it:
#   1. aarch64, -O2                          under qemu-aarch64
#   2. aarch64, -O0 -g                       under qemu-aarch64
#   3. aarch64, -O2 -mbranch-protection=standard, built as a shared library
#      that the dynamic loader maps BTI-guarded (see below), under qemu-aarch64
#   4. x86-64,  -O2, against context_x86_64_sysv.S, natively (x86-64 hosts)
# and checks with readelf -n that the aarch64 object carries the BTI property
# note (and claims nothing else).
#
# Why a shared library for the BTI run: Debian's C runtime start files
# (Scrt1.o, crti.o, crtbeginS.o) carry no BTI note, so an executable linked
# with them is never BTI-guarded. A shared library linked with -nostartfiles
# from BTI-marked objects only is, and ld.so maps it with PROT_BTI, which
# qemu-user enforces. A negative control (an indirect call to a function with
# no landing pad, which must die with SIGILL) proves the enforcement is on;
# if it is not (an old qemu), the BTI run still runs but is reported as
# unenforced.
#
# Usage: tools/check-aarch64.sh            (from anywhere in the repo)
# Needs: g++, g++-aarch64-linux-gnu, qemu-user, binutils; installs the
# missing ones with apt-get when running as root. Takes well under a minute
# once the packages are installed.
# Exit status: 0 when every step passed, non-zero otherwise.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

log() { printf '==> %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# ----- Tools -----
need_pkgs=()
command -v aarch64-linux-gnu-g++ >/dev/null || need_pkgs+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || need_pkgs+=(qemu-user)
command -v readelf >/dev/null || need_pkgs+=(binutils)
host_arch=$(uname -m)
if [[ $host_arch == x86_64 ]] && ! command -v g++ >/dev/null; then
  need_pkgs+=(g++)
fi
if ((${#need_pkgs[@]})); then
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    fail "missing packages: ${need_pkgs[*]} (install them, or run as root on Debian/Ubuntu)"
  fi
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

CROSS_CXX=${CROSS_CXX:-aarch64-linux-gnu-g++}
QEMU=${QEMU:-qemu-aarch64}
SYSROOT=${AARCH64_SYSROOT:-/usr/aarch64-linux-gnu}
READELF=${READELF:-readelf}

work=$(mktemp -d "${TMPDIR:-/tmp}/check-aarch64.XXXXXX")
trap 'rm -rf "$work"' EXIT

CXXFLAGS_COMMON=(-std=c++20 -Wall -Wextra -Wshadow -Wconversion
                 -Wno-sign-conversion -Werror
                 -Isrc -Iinclude -DASYNCJOB_CONTEXT_UCONTEXT=0)
# fatal.cc: the message of the context unit's DCHECKs.
UNIT=(src/context/context.cc src/base/fatal.cc)
TEST=tests/context/context_smoke.cc

failures=0
run_step() {  # run_step NAME COMMAND...: runs the smoke test, expects "0 failed"
  local name=$1; shift
  log "run: $name"
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  printf '%s\n' "$out" | sed 's/^/    /'
  if ((rc != 0)) || ! grep -qE '^[0-9]+ passed, 0 failed$' <<<"$out"; then
    printf 'FAIL: %s (exit %d)\n' "$name" "$rc" >&2
    failures=$((failures + 1))
  fi
}

# ----- 1, 2: aarch64 executables -----
for opt in "-O2" "-O0 -g"; do
  tag=${opt//[^A-Za-z0-9]/}
  exe=$work/context_smoke-aarch64-$tag
  log "build: aarch64 $opt"
  # shellcheck disable=SC2086
  "$CROSS_CXX" "${CXXFLAGS_COMMON[@]}" $opt "${UNIT[@]}" \
    src/context/context_aarch64_aapcs.S "$TEST" -o "$exe"
  run_step "aarch64 $opt (qemu)" "$QEMU" -L "$SYSROOT" "$exe"
done

# ----- The BTI property note -----
log "check: .note.gnu.property of context_aarch64_aapcs.o"
"$CROSS_CXX" "${CXXFLAGS_COMMON[@]}" -O2 -c src/context/context_aarch64_aapcs.S \
  -o "$work/context_aarch64_aapcs.o"
notes=$("$READELF" -n "$work/context_aarch64_aapcs.o")
printf '%s\n' "$notes" | sed 's/^/    /'
grep -qE 'AArch64 feature: BTI$' <<<"$notes" ||
  fail "context_aarch64_aapcs.o has no BTI-only GNU property note"
# The GNU-stack note must keep the stack non-executable.
"$READELF" -S "$work/context_aarch64_aapcs.o" | grep -q '\.note\.GNU-stack' ||
  fail "context_aarch64_aapcs.o has no .note.GNU-stack section"

# ----- 3: BTI-guarded build -----
BTI_FLAGS=(-O2 -fPIC -mbranch-protection=standard)
log "build: aarch64 -O2 -mbranch-protection=standard (BTI-guarded shared library)"
# The negative control: an indirect call to code without a landing pad.
cat >"$work/bti_control.cc" <<'EOF'
extern "C" void bti_control_no_pad();
asm(".text\n.globl bti_control_no_pad\n.type bti_control_no_pad,%function\n"
    "bti_control_no_pad:\n nop\n ret\n.size bti_control_no_pad,.-bti_control_no_pad\n");
int bti_control() {
  void (*volatile fn)() = &bti_control_no_pad;
  fn();
  return 0;
}
EOF
cat >"$work/bti_driver.cc" <<'EOF'
#include <cstring>
int context_smoke_main();
int bti_control();
int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "control") == 0) return bti_control();
  return context_smoke_main();
}
EOF
# The smoke test's main() becomes context_smoke_main() inside the library.
"$CROSS_CXX" "${CXXFLAGS_COMMON[@]}" "${BTI_FLAGS[@]}" -shared -nostartfiles \
  -Dmain=context_smoke_main \
  "${UNIT[@]}" src/context/context_aarch64_aapcs.S "$TEST" "$work/bti_control.cc" \
  -o "$work/libcontext_smoke.so"
# shellcheck disable=SC2016  # $ORIGIN is for the dynamic loader
"$CROSS_CXX" -O2 "$work/bti_driver.cc" -L"$work" -lcontext_smoke \
  -Wl,-rpath,'$ORIGIN' -o "$work/context_smoke-aarch64-bti"
lib_notes=$("$READELF" -n "$work/libcontext_smoke.so")
grep -qE 'AArch64 feature: BTI' <<<"$lib_notes" ||
  fail "libcontext_smoke.so is not BTI-marked: some object in it lacks the note"
log "    libcontext_smoke.so: $(grep -E 'AArch64 feature' <<<"$lib_notes" | sed 's/^ *//')"
control_rc=0
# (In a group, so that the shell's own "Illegal instruction" report goes to
# /dev/null with the rest.)
{ "$QEMU" -L "$SYSROOT" "$work/context_smoke-aarch64-bti" control; } >/dev/null 2>&1 ||
  control_rc=$?
if ((control_rc == 132)); then  # 128 + SIGILL
  log "    BTI enforced: the negative control died with SIGILL"
  bti_label="enforced"
else
  log "    WARNING: BTI not enforced by this qemu (control exited $control_rc)"
  bti_label="NOT enforced"
fi
run_step "aarch64 -O2 -mbranch-protection=standard, BTI $bti_label (qemu)" \
  "$QEMU" -L "$SYSROOT" "$work/context_smoke-aarch64-bti"

# ----- 4: native x86-64 -----
if [[ $host_arch == x86_64 ]]; then
  log "build: x86-64 -O2 (native)"
  g++ "${CXXFLAGS_COMMON[@]}" -O2 "${UNIT[@]}" src/context/context_x86_64_sysv.S \
    "$TEST" -o "$work/context_smoke-x86_64"
  run_step "x86-64 -O2 (native)" "$work/context_smoke-x86_64"
else
  log "skip: native x86-64 run (host is $host_arch)"
fi

if ((failures)); then
  printf 'check-aarch64: %d step(s) failed\n' "$failures" >&2
  exit 1
fi
log "check-aarch64: all steps passed"
