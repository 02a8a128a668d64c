#!/bin/sh
# ASYNC_start_job and ASYNC_pause_job must leave through the context switch
# (or its variant for starting a job) by a jump (a tail call), so that the switch returns straight into their
# callers: a return executed after a switch is one the CPU's return
# predictor gets wrong. Nothing fails when the compiler quietly turns the
# jump into a call (an address-taken local is enough), so this checks the
# optimized library's code itself.
set -eu
objdump=$1 library=$2

# One function's code: GNU objdump names it with --disassemble=, LLVM's
# (CMAKE_OBJDUMP of a Clang build) with --disassemble-symbols=, and prints
# jump targets with 0x.
disassemble() {
  "$objdump" -d --no-show-raw-insn "--disassemble=$1" "$library" 2>/dev/null ||
    "$objdump" -d --no-show-raw-insn "--disassemble-symbols=$1" "$library"
}

# Starting a job leaves through the switch that keeps the caller's FP
# control state; resuming and pausing through the ordinary one.
for check in ASYNC_start_job:asyncjob_context_switch_keep_fp \
             ASYNC_start_job:asyncjob_context_switch \
             ASYNC_pause_job:asyncjob_context_switch; do
  function=${check%%:*} switch=${check#*:}
  code=$(disassemble "$function")
  if ! printf '%s\n' "$code" |
       grep -Eq "[[:space:]](jmp|b)[[:space:]]+(0x)?[0-9a-f]+ <$switch>"; then
    printf '%s\n' "$code"
    echo "FAIL: $function does not leave through a tail call of $switch"
    exit 1
  fi
  echo "ok: $function jumps to $switch"
done
