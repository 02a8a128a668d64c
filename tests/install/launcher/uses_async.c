/* A program that calls OpenSSL's async API: asyncjob-run accepts it linked
 * with a shared libcrypto and refuses it with libcrypto linked in (the
 * whole program static, or libcrypto.a in a dynamic program). */
#include <openssl/async.h>
#include <stdio.h>

int main(void) {
  printf("%d\n", ASYNC_is_capable());
  return 0;
}
