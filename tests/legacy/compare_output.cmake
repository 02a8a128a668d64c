# Runs PROGRAM and compares its standard output, line by line, with the file
# EXPECTED. Fails on a non-zero exit status or the first differing line.
#   cmake -DPROGRAM=... -DEXPECTED=... -P compare_output.cmake
execute_process(COMMAND "${PROGRAM}"
  OUTPUT_VARIABLE actual
  ERROR_VARIABLE errors
  RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "${PROGRAM} exited with ${status}\nstdout:\n${actual}\nstderr:\n${errors}")
endif()
file(STRINGS "${EXPECTED}" expected_lines)
string(REGEX REPLACE "\n$" "" actual "${actual}")
string(REPLACE "\n" ";" actual_lines "${actual}")
list(LENGTH expected_lines expected_count)
list(LENGTH actual_lines actual_count)
math(EXPR last "${expected_count} - 1")
foreach(i RANGE ${last})
  list(GET expected_lines ${i} want)
  if(i LESS actual_count)
    list(GET actual_lines ${i} got)
  else()
    set(got "<missing>")
  endif()
  math(EXPR line "${i} + 1")
  if(NOT got STREQUAL want)
    message(FATAL_ERROR "line ${line}: expected \"${want}\", got \"${got}\"\nfull output:\n${actual}")
  endif()
  message(STATUS "line ${line} ok: ${got}")
endforeach()
if(NOT actual_count EQUAL expected_count)
  message(FATAL_ERROR "expected ${expected_count} lines, got ${actual_count}:\n${actual}")
endif()
