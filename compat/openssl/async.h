/*
 * <openssl/async.h> for programs built against asyncjob.
 *
 * Installed in an include directory of its own (pkg-config asyncjob-openssl
 * --cflags), where it stands in for OpenSSL's header: the program's
 * ASYNC_* calls then bind to asyncjob. Other OpenSSL headers that include
 * <openssl/async.h> (libssl's, for one) get the same declarations, which are
 * identical to OpenSSL's.
 */
#ifndef OPENSSL_ASYNC_H
#define OPENSSL_ASYNC_H
#ifndef HEADER_ASYNC_H
#define HEADER_ASYNC_H
#endif
#include <asyncjob/async.h>
#endif
