# AsyncjobTesting.cmake - asyncjob_add_gtest(), the one way the test folders
# build a GoogleTest executable and register it with CTest.
#
# Owns how a test executable is built (GoogleTest and its main, the project's
# warnings, the library internals of asyncjob_internal, tests/ on the include
# path for support/test_support.h) and how it is registered: each test case
# on its own through gtest_discover_tests(), or, when
# ASYNCJOB_TEST_UNDER_VALGRIND is ON, the whole executable once under
# valgrind memcheck. Knows nothing of what a test checks or of the library it
# tests: the caller names that library in DEPS.
#
#   asyncjob_add_gtest(
#     NAME <name>                    the executable; also the CTest name
#                                    under valgrind
#     SRCS <source>...
#     [DEPS <library>...]            linked in this order, before GoogleTest
#     [DEFINES <definition>...]      private compile definitions
#     [LINKOPTS <option>...]         private link options
#     [LABELS <label>...]            CTest labels of every registered test
#     [ENV <VAR=value>...]           environment of every registered test
#     [VALGRIND_ENV <VAR=value>...]  added to ENV in the valgrind run only
#     [TEST_PREFIX <prefix>]         put before each discovered test's name
#                                    (not used under valgrind)
#     [DISCOVERY_TIMEOUT <seconds>]  for listing the test cases; default 60
#   )
#
# Under valgrind, death tests (*DeathTest*) are filtered out: they fork and
# crash on purpose, and the other runs cover them.

find_package(GTest REQUIRED)
include(GoogleTest)

option(ASYNCJOB_TEST_UNDER_VALGRIND "Run each test executable under valgrind memcheck" OFF)

# The command a test runs under: valgrind memcheck in the valgrind run,
# nothing otherwise. Also for test programs that are not GoogleTest ones.
set(ASYNCJOB_TEST_VALGRIND_COMMAND "")
if(ASYNCJOB_TEST_UNDER_VALGRIND)
  find_program(VALGRIND valgrind REQUIRED)
  set(ASYNCJOB_TEST_VALGRIND_COMMAND ${VALGRIND} --error-exitcode=99 --leak-check=full
      --errors-for-leak-kinds=definite --track-fds=no)
endif()

function(asyncjob_add_gtest)
  cmake_parse_arguments(PARSE_ARGV 0 _gtest
    ""
    "NAME;TEST_PREFIX;DISCOVERY_TIMEOUT"
    "SRCS;DEPS;DEFINES;LINKOPTS;LABELS;ENV;VALGRIND_ENV")
  if(_gtest_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "asyncjob_add_gtest: unknown arguments ${_gtest_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT _gtest_NAME OR NOT _gtest_SRCS)
    message(FATAL_ERROR "asyncjob_add_gtest: NAME and SRCS are required")
  endif()
  if(NOT _gtest_DISCOVERY_TIMEOUT)
    set(_gtest_DISCOVERY_TIMEOUT 60)
  endif()
  set(_name ${_gtest_NAME})

  add_executable(${_name} ${_gtest_SRCS})
  target_link_libraries(${_name} PRIVATE
    ${_gtest_DEPS} GTest::gtest GTest::gtest_main asyncjob_internal asyncjob_warnings)
  target_include_directories(${_name} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  if(_gtest_DEFINES)
    target_compile_definitions(${_name} PRIVATE ${_gtest_DEFINES})
  endif()
  if(_gtest_LINKOPTS)
    target_link_options(${_name} PRIVATE ${_gtest_LINKOPTS})
  endif()

  if(ASYNCJOB_TEST_UNDER_VALGRIND)
    add_test(NAME ${_name}
      COMMAND ${ASYNCJOB_TEST_VALGRIND_COMMAND} $<TARGET_FILE:${_name}>
              --gtest_filter=-*DeathTest*)
    set(_environment ${_gtest_ENV} ${_gtest_VALGRIND_ENV})
    if(_environment)
      set_tests_properties(${_name} PROPERTIES ENVIRONMENT "${_environment}")
    endif()
    if(_gtest_LABELS)
      set_tests_properties(${_name} PROPERTIES LABELS "${_gtest_LABELS}")
    endif()
  else()
    set(_prefix "")
    if(_gtest_TEST_PREFIX)
      set(_prefix TEST_PREFIX ${_gtest_TEST_PREFIX})
    endif()
    gtest_discover_tests(${_name} ${_prefix} DISCOVERY_TIMEOUT ${_gtest_DISCOVERY_TIMEOUT})
    # gtest_discover_tests(PROPERTIES) cannot carry a list value, so the
    # environment and labels are set by a script CTest reads after the list
    # of discovered tests (${_name}_TESTS, undefined until the executable is
    # built).
    if(_gtest_ENV OR _gtest_LABELS)
      set(_script ${CMAKE_CURRENT_BINARY_DIR}/${_name}_properties.cmake)
      set(_set "")
      if(_gtest_ENV)
        string(APPEND _set " ENVIRONMENT [==[${_gtest_ENV}]==]")
      endif()
      if(_gtest_LABELS)
        string(APPEND _set " LABELS [==[${_gtest_LABELS}]==]")
      endif()
      file(WRITE ${_script}
        "if(DEFINED ${_name}_TESTS)\n"
        "  set_tests_properties(\${${_name}_TESTS} PROPERTIES${_set})\n"
        "endif()\n")
      set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES ${_script})
    endif()
  endif()
endfunction()
