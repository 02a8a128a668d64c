# aarch64-linux-gnu.cmake - cross build for AArch64 Linux with Debian's
# cross compiler (package g++-aarch64-linux-gnu); tests run under qemu-user
# (package qemu-user) through CMAKE_CROSSCOMPILING_EMULATOR.
#
#   cmake -S . -B build/aarch64 -G Ninja \
#     -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/aarch64-linux-gnu.cmake
#
# Libraries for the target (e.g. GoogleTest for the test suite) come from
# Debian's multiarch packages (libgtest-dev:arm64 after
# `dpkg --add-architecture arm64`), which install under /usr/lib/aarch64-linux-gnu;
# the C library and libstdc++ come with the cross compiler under
# /usr/aarch64-linux-gnu. Override the triple with -DASYNCJOB_CROSS_TRIPLE=...
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

if(NOT ASYNCJOB_CROSS_TRIPLE)
  set(ASYNCJOB_CROSS_TRIPLE aarch64-linux-gnu)
endif()
# try_compile projects see this variable too.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES ASYNCJOB_CROSS_TRIPLE)

set(CMAKE_C_COMPILER ${ASYNCJOB_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${ASYNCJOB_CROSS_TRIPLE}-g++)
set(CMAKE_ASM_COMPILER ${ASYNCJOB_CROSS_TRIPLE}-gcc)

# Target files: the cross toolchain's sysroot, then Debian multiarch paths
# (found through CMAKE_LIBRARY_ARCHITECTURE under the host root).
set(CMAKE_FIND_ROOT_PATH /usr/${ASYNCJOB_CROSS_TRIPLE} /)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# Run target programs (CTest, gtest_discover_tests) under qemu-user.
find_program(ASYNCJOB_QEMU_AARCH64 NAMES qemu-aarch64 qemu-aarch64-static)
if(ASYNCJOB_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR
      ${ASYNCJOB_QEMU_AARCH64} -L /usr/${ASYNCJOB_CROSS_TRIPLE})
endif()
