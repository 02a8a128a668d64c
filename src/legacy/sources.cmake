# The OpenSSL 1.1.0-pre3 API (<asyncjob/legacy.h>), a layer above the C API.
target_sources(asyncjob_objects PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/legacy/legacy_api.cc)
