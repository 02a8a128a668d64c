# Debian packages with CPack (`cpack -G DEB`, or the workflow preset
# `package`, which configures with ASYNCJOB_DEBIAN_PACKAGING and the prefix
# /usr). One package per install component (cmake/install.cmake):
#
#   libasyncjob0       runtime      libasyncjob.so.0 (the SONAME) and its file
#   libasyncjob-dev    development  headers, static libraries, the .so link,
#                                   pkg-config files, the CMake package,
#                                   manual pages of sections 3 and 7
#   asyncjob-openssl   openssl      the provider module in OpenSSL's modules
#                                   directory, asyncjob-run and its page
#
# docs/packaging.md describes them, and tools/check-packages.sh tests them.

set(ASYNCJOB_PACKAGE_MAINTAINER "The asyncjob Authors <asyncjob@example.org>" CACHE STRING
    "Maintainer field of the Debian packages (name <address>)")
set(ASYNCJOB_PACKAGE_RELEASE "1" CACHE STRING
    "Debian revision of the packages (the part after the upstream version)")

set(_deb_version "${PROJECT_VERSION}-${ASYNCJOB_PACKAGE_RELEASE}")
set(_deb_dir ${PROJECT_BINARY_DIR}/debian)

# ----- Files of share/doc/<package> and the control files -----
if(ASYNCJOB_DEBIAN_PACKAGING)
  find_program(ASYNCJOB_GZIP gzip REQUIRED)
  # A Debian changelog of one entry: this upstream version, packaged. Its
  # date is the configure time, or SOURCE_DATE_EPOCH when set.
  string(TIMESTAMP ASYNCJOB_DEB_DATE "%a, %d %b %Y %H:%M:%S +0000" UTC)
  set(ASYNCJOB_DEB_VERSION ${_deb_version})
  configure_file(cmake/debian/changelog.in ${_deb_dir}/changelog.Debian @ONLY)
  add_custom_command(OUTPUT ${_deb_dir}/changelog.Debian.gz
    COMMAND ${ASYNCJOB_GZIP} -9n -c ${_deb_dir}/changelog.Debian > ${_deb_dir}/changelog.Debian.gz
    DEPENDS ${_deb_dir}/changelog.Debian
    VERBATIM)

  # libasyncjob0's symbols file, made from the library just built: every
  # exported symbol with its version node, available since this version.
  find_program(ASYNCJOB_DPKG_GENSYMBOLS dpkg-gensymbols)
  if(NOT ASYNCJOB_DPKG_GENSYMBOLS)
    message(FATAL_ERROR "ASYNCJOB_DEBIAN_PACKAGING needs dpkg-gensymbols (Debian: dpkg-dev)")
  endif()
  add_custom_command(OUTPUT ${_deb_dir}/libasyncjob0/symbols
    COMMAND ${CMAKE_COMMAND} -DLIBRARY=$<TARGET_FILE:asyncjob> -DVERSION=${PROJECT_VERSION}
            -DOUTPUT=${_deb_dir}/libasyncjob0/symbols -DGENSYMBOLS=${ASYNCJOB_DPKG_GENSYMBOLS}
            -P ${PROJECT_SOURCE_DIR}/cmake/debian/symbols.cmake
    DEPENDS asyncjob ${PROJECT_SOURCE_DIR}/cmake/debian/symbols.cmake
    WORKING_DIRECTORY ${_deb_dir}
    VERBATIM)
  # The shlibs file, for tools that do not read symbols files: a program
  # built against libasyncjob.so.0 needs at least this upstream version.
  # (Written here rather than by CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS, which
  # applies to every package and would list the provider module too.)
  file(WRITE ${_deb_dir}/libasyncjob0/shlibs
       "libasyncjob ${PROJECT_VERSION_MAJOR} libasyncjob0 (>= ${PROJECT_VERSION})\n")
  # libasyncjob0 puts a shared library in the linker's path: dpkg's ldconfig
  # trigger runs ldconfig (CPack's maintainer scripts also call it).
  file(WRITE ${_deb_dir}/libasyncjob0/triggers "activate-noawait ldconfig\n")
  add_custom_target(asyncjob_debian_files ALL
    DEPENDS ${_deb_dir}/changelog.Debian.gz ${_deb_dir}/libasyncjob0/symbols)

  foreach(_component_package runtime:libasyncjob0 development:libasyncjob-dev
                             openssl:asyncjob-openssl)
    string(REPLACE ":" ";" _pair ${_component_package})
    list(GET _pair 0 _component)
    list(GET _pair 1 _package)
    install(FILES cmake/debian/copyright ${_deb_dir}/changelog.Debian.gz
      DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/${_package}
      COMPONENT ${_component})
  endforeach()
endif()

# ----- CPack -----
set(CPACK_PACKAGE_NAME asyncjob)
set(CPACK_PACKAGE_VENDOR "The asyncjob Authors")
set(CPACK_PACKAGE_CONTACT "${ASYNCJOB_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_RESOURCE_FILE_LICENSE ${PROJECT_SOURCE_DIR}/LICENSE)
set(CPACK_PACKAGE_DIRECTORY ${PROJECT_BINARY_DIR}/packages)
set(CPACK_STRIP_FILES ON)
set(CPACK_COMPONENTS_ALL runtime development openssl)
set(CPACK_DEB_COMPONENT_INSTALL ON)

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE ${ASYNCJOB_PACKAGE_RELEASE})
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${ASYNCJOB_PACKAGE_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_COMPRESSION_TYPE xz)
set(CPACK_DEBIAN_PACKAGE_SOURCE asyncjob)
# Each package's description is its own (CPACK_DEBIAN_<COMPONENT>_DESCRIPTION,
# synopsis first). CPackDeb puts CPACK_PACKAGE_DESCRIPTION_SUMMARY in front
# of it unless the summary is CPack's placeholder, which is therefore set here
# (the project's DESCRIPTION would otherwise be taken).
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_NAME} built using CMake")

set(_about
"asyncjob implements OpenSSL's asynchronous job API (ASYNC_* and
ASYNC_WAIT_CTX_*) with its own context switch and guard-paged stacks, so
that programs, engines and providers written for <openssl/async.h> run
their jobs on it unchanged.")

set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME libasyncjob0)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SECTION libs)
set(CPACK_DEBIAN_RUNTIME_DESCRIPTION "OpenSSL asynchronous jobs on fibres - shared library
${_about}
.
This package holds the shared library, libasyncjob.so.0.")
if(ASYNCJOB_DEBIAN_PACKAGING)
  set(CPACK_DEBIAN_RUNTIME_PACKAGE_CONTROL_EXTRA
      ${_deb_dir}/libasyncjob0/shlibs ${_deb_dir}/libasyncjob0/symbols
      ${_deb_dir}/libasyncjob0/triggers)
  set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
endif()

set(CPACK_DEBIAN_DEVELOPMENT_PACKAGE_NAME libasyncjob-dev)
set(CPACK_DEBIAN_DEVELOPMENT_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_DEVELOPMENT_PACKAGE_DEPENDS "libasyncjob0 (= ${_deb_version})")
set(CPACK_DEBIAN_DEVELOPMENT_PACKAGE_SUGGESTS "libssl-dev")
set(CPACK_DEBIAN_DEVELOPMENT_DESCRIPTION "OpenSSL asynchronous jobs on fibres - development files
${_about}
.
This package holds the headers (<asyncjob/async.h>, the C++ API, the event
loop and the offload engine, and an <openssl/async.h> that is asyncjob's),
the static libraries, the pkg-config files asyncjob and asyncjob-openssl,
the CMake package (find_package(asyncjob)) and the manual pages.")

set(CPACK_DEBIAN_OPENSSL_PACKAGE_NAME asyncjob-openssl)
set(CPACK_DEBIAN_OPENSSL_PACKAGE_SECTION utils)
# The launcher preloads libasyncjob.so.0 by its path: that very version.
set(CPACK_DEBIAN_OPENSSL_PACKAGE_DEPENDS "libasyncjob0 (= ${_deb_version})")
set(CPACK_DEBIAN_OPENSSL_PACKAGE_SUGGESTS "openssl")
set(CPACK_DEBIAN_OPENSSL_DESCRIPTION "OpenSSL asynchronous jobs on fibres - provider and launcher
${_about}
.
This package holds the asyncjob OpenSSL 3 provider, which runs RSA and
ECDSA signatures on worker threads while the calling job pauses, and
asyncjob-run, which runs an existing program with asyncjob preloaded,
optionally with the provider and with asyncjob's counters printed at exit.")

include(CPack)
