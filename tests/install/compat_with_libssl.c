/*
 * asyncjob's compat <openssl/async.h> (what `pkg-config --cflags
 * asyncjob-openssl` puts first on the include path) under OpenSSL's other
 * headers: libssl's <openssl/ssl.h> includes <openssl/async.h> itself and
 * must compile with asyncjob's in its place, whichever comes first.
 * Built by install.headers as C11 and as C++20, -DSSL_FIRST=0 and =1.
 */
#if SSL_FIRST
#include <openssl/ssl.h>
#include <openssl/async.h>
#else
#include <openssl/async.h>
#include <openssl/ssl.h>
#endif

#ifndef ASYNCJOB_ASYNC_H
#error "<openssl/async.h> is not the compat header of asyncjob"
#endif

int compat_with_libssl(SSL *ssl);

int compat_with_libssl(SSL *ssl) {
  OSSL_ASYNC_FD fds[4];
  size_t numfds = 0;
  int status = ASYNC_STATUS_UNSUPPORTED;

  /* libssl's async calls and asyncjob's declarations together. */
  if (SSL_waiting_for_async(ssl) && SSL_get_all_async_fds(ssl, fds, &numfds))
    return ASYNC_get_current_job() != NULL;
  if (SSL_get_async_status(ssl, &status) && status == ASYNC_STATUS_EAGAIN) return ASYNC_pause_job();
  return ASYNC_is_capable() + (int)asyncjob_get_stack_size();
}
