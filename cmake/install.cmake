# Installation: libraries, headers, the CMake package and pkg-config files.
#
#   asyncjob.pc          -> #include <asyncjob/async.h>, -lasyncjob
#   asyncjob-openssl.pc  -> adds an include directory whose <openssl/async.h>
#                           is asyncjob's, so that programs written for
#                           OpenSSL's API build unchanged against asyncjob.
include(CMakePackageConfigHelpers)

install(TARGETS asyncjob asyncjob_static
  EXPORT asyncjobTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY include/asyncjob DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES compat/openssl/async.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/asyncjob/openssl-compat/openssl)

set(ASYNCJOB_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/asyncjob)
install(EXPORT asyncjobTargets NAMESPACE asyncjob:: DESTINATION ${ASYNCJOB_CMAKE_DIR})
configure_package_config_file(cmake/asyncjobConfig.cmake.in
  ${PROJECT_BINARY_DIR}/asyncjobConfig.cmake
  INSTALL_DESTINATION ${ASYNCJOB_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/asyncjobConfigVersion.cmake
  COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/asyncjobConfig.cmake
  ${PROJECT_BINARY_DIR}/asyncjobConfigVersion.cmake
  DESTINATION ${ASYNCJOB_CMAKE_DIR})

# pkg-config: paths relative to ${prefix} so the tree can be relocated.
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(ASYNCJOB_PC_LIBDIR "${CMAKE_INSTALL_LIBDIR}")
else()
  set(ASYNCJOB_PC_LIBDIR "\${prefix}/${CMAKE_INSTALL_LIBDIR}")
endif()
if(IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(ASYNCJOB_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
else()
  set(ASYNCJOB_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
foreach(_pc asyncjob asyncjob-openssl)
  configure_file(cmake/${_pc}.pc.in ${PROJECT_BINARY_DIR}/${_pc}.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/${_pc}.pc
    DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endforeach()
