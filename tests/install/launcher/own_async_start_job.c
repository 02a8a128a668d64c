/* A program that uses a shared libcrypto but defines and exports its own
 * ASYNC_start_job (linked with -rdynamic). A program's definitions come
 * first in the dynamic loader's lookup order, before any preloaded library,
 * so asyncjob cannot take its place: asyncjob-run must say so once the
 * program has started. */
#include <openssl/crypto.h>
#include <stddef.h>
#include <stdio.h>

int ASYNC_start_job(void **job, void *ctx, int *ret, int (*func)(void *), void *args, size_t size) {
  (void)job;
  (void)ctx;
  (void)ret;
  (void)func;
  (void)args;
  (void)size;
  return 0;
}

int main(void) {
  printf("%s\n", OpenSSL_version(OPENSSL_VERSION));
  return 0;
}
