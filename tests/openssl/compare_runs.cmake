# Runs the same test program built twice, REFERENCE (on libcrypto alone) and
# CANDIDATE (with asyncjob), with the argument ARG, and compares their
# standard output line by line. Fails on a non-zero exit status of either,
# or, after listing every differing line, on any difference.
#   cmake -DREFERENCE=... -DCANDIDATE=... [-DCANDIDATE_WRAPPER=a;b;c] -DARG=...
#         -P compare_runs.cmake
function(run_program label output_variable)
  execute_process(COMMAND ${ARGN} ${ARG}
    OUTPUT_VARIABLE output
    ERROR_VARIABLE errors
    RESULT_VARIABLE status)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "${label} exited with ${status}\nstdout:\n${output}\nstderr:\n${errors}")
  endif()
  string(REGEX REPLACE "\n$" "" output "${output}")
  # Keep the lines a list: no ';' or '[' ']' may be taken for list syntax.
  string(REPLACE ";" "," output "${output}")
  string(REPLACE "[" "(" output "${output}")
  string(REPLACE "]" ")" output "${output}")
  string(REPLACE "\n" ";" output "${output}")
  set(${output_variable} "${output}" PARENT_SCOPE)
endfunction()

run_program("libcrypto's build" expected "${REFERENCE}")
run_program("asyncjob's build" actual ${CANDIDATE_WRAPPER} "${CANDIDATE}")

list(LENGTH expected expected_count)
list(LENGTH actual actual_count)
set(count ${expected_count})
if(actual_count GREATER count)
  set(count ${actual_count})
endif()
set(differences 0)
set(report "")
math(EXPR last "${count} - 1")
foreach(i RANGE ${last})
  set(want "<missing>")
  set(got "<missing>")
  if(i LESS expected_count)
    list(GET expected ${i} want)
  endif()
  if(i LESS actual_count)
    list(GET actual ${i} got)
  endif()
  math(EXPR line "${i} + 1")
  if(want STREQUAL got)
    if(want MATCHES "^# ")
      message(STATUS "${want}")
    endif()
  else()
    math(EXPR differences "${differences} + 1")
    string(APPEND report "line ${line}:\n  libcrypto: ${want}\n  asyncjob:  ${got}\n")
  endif()
endforeach()
if(differences GREATER 0)
  message("${report}")
  message(FATAL_ERROR "${differences} of ${count} lines differ (above; each line is a call, "
    "its result and then ERR_peek_error() of libcrypto's queue)")
endif()
message(STATUS "${count} lines, libcrypto and asyncjob alike")
