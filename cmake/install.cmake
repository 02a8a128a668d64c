# Installation: libraries, headers, the CMake package and pkg-config files.
#
# Every rule names the install component it belongs to, one per Debian
# package (cmake/package.cmake): runtime (the shared library), development
# (everything a program is built with) and openssl (the provider module and
# the asyncjob-run launcher). A plain `cmake --install` installs all three.
#
#   asyncjob.pc          -> #include <asyncjob/async.h>, -lasyncjob
#   asyncjob-openssl.pc  -> adds an include directory whose <openssl/async.h>
#                           is asyncjob's, so that programs written for
#                           OpenSSL's API build unchanged against asyncjob.
include(CMakePackageConfigHelpers)

install(TARGETS asyncjob asyncjob_static
  EXPORT asyncjobTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
    COMPONENT runtime
    NAMELINK_COMPONENT development
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT development
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY include/asyncjob DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  COMPONENT development)
install(FILES compat/openssl/async.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/asyncjob/openssl-compat/openssl
  COMPONENT development)

set(ASYNCJOB_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/asyncjob)
install(EXPORT asyncjobTargets NAMESPACE asyncjob:: DESTINATION ${ASYNCJOB_CMAKE_DIR}
  COMPONENT development)
configure_package_config_file(cmake/asyncjobConfig.cmake.in
  ${PROJECT_BINARY_DIR}/asyncjobConfig.cmake
  INSTALL_DESTINATION ${ASYNCJOB_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/asyncjobConfigVersion.cmake
  COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/asyncjobConfig.cmake
  ${PROJECT_BINARY_DIR}/asyncjobConfigVersion.cmake
  DESTINATION ${ASYNCJOB_CMAKE_DIR}
  COMPONENT development)

# pkg-config. The tree is installed with `cmake --install --prefix <dir>` as
# often as with the configured CMAKE_INSTALL_PREFIX, so the .pc files must not
# bake the configure-time prefix in: they derive it from their own location
# (${pcfiledir}, understood by pkgconf and pkg-config alike), which keeps the
# installed tree relocatable. An absolute CMAKE_INSTALL_LIBDIR or
# CMAKE_INSTALL_INCLUDEDIR cannot move with the prefix and is written as is.
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(ASYNCJOB_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
  set(ASYNCJOB_PC_LIBDIR "${CMAKE_INSTALL_LIBDIR}")
else()
  file(RELATIVE_PATH _pc_to_prefix "/prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/prefix")
  string(REGEX REPLACE "/$" "" _pc_to_prefix "${_pc_to_prefix}")
  set(ASYNCJOB_PC_PREFIX "\${pcfiledir}/${_pc_to_prefix}")
  set(ASYNCJOB_PC_LIBDIR "\${prefix}/${CMAKE_INSTALL_LIBDIR}")
endif()
if(IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(ASYNCJOB_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
else()
  set(ASYNCJOB_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
# libasyncjob.a is C++: a program linking it statically (often a C program,
# linked by the C driver) also needs the C++ runtime. Those are the libraries
# the C++ driver links implicitly beyond what the C driver does (libstdc++ and
# libm with GCC).
set(ASYNCJOB_PC_LIBS_PRIVATE "-pthread")
foreach(_lib IN LISTS CMAKE_CXX_IMPLICIT_LINK_LIBRARIES)
  if(_lib IN_LIST CMAKE_C_IMPLICIT_LINK_LIBRARIES)
    continue()
  endif()
  if(NOT IS_ABSOLUTE "${_lib}" AND NOT _lib MATCHES "^-")
    set(_lib "-l${_lib}")
  endif()
  if(NOT _lib IN_LIST ASYNCJOB_PC_LIBS_PRIVATE)
    list(APPEND ASYNCJOB_PC_LIBS_PRIVATE "${_lib}")
  endif()
endforeach()
list(JOIN ASYNCJOB_PC_LIBS_PRIVATE " " ASYNCJOB_PC_LIBS_PRIVATE)
foreach(_pc asyncjob asyncjob-openssl)
  configure_file(cmake/${_pc}.pc.in ${PROJECT_BINARY_DIR}/${_pc}.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/${_pc}.pc
    DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig
    COMPONENT development)
endforeach()

# The gdb extension (tools/gdb/asyncjob_gdb.py), where gdb auto-loads it for
# the library: share/gdb/auto-load/<absolute libdir>/<real file name>-gdb.py.
# The prefix is the one of the installation (`cmake --install --prefix`),
# hence the escaped variable, evaluated at install time.
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(_gdb_libdir "${CMAKE_INSTALL_LIBDIR}")
else()
  set(_gdb_libdir "\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}")
endif()
install(FILES tools/gdb/asyncjob_gdb.py
  DESTINATION "${CMAKE_INSTALL_DATADIR}/gdb/auto-load${_gdb_libdir}"
  RENAME libasyncjob.so.${PROJECT_VERSION}-gdb.py
  COMPONENT development)
