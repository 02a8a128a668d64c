/*
 * A program that uses libcrypto for other work and asyncjob for its jobs,
 * linked `-lasyncjob -lcrypto`: both libraries define ASYNC_start_job and
 * the rest, and the one named first on the link line wins. Built by
 * install.link_order, which runs it as `link_order asyncjob` (it must get
 * asyncjob's functions) and, linked the other way round, as
 * `link_order report` (it only says where they came from).
 */
#define _GNU_SOURCE /* dladdr */

#include <asyncjob/async.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

static int job_body(void *arg) {
  int *steps = *(int **)arg;
  ++*steps;
  ASYNC_pause_job();
  ++*steps;
  return 5;
}

/* The file name of the object that defines the code at addr. */
static const char *object_of(const void *addr) {
  Dl_info info;
  if (dladdr(addr, &info) == 0 || info.dli_fname == NULL) return "(unknown)";
  return info.dli_fname;
}

int main(int argc, char **argv) {
  int must_be_asyncjob = argc > 1 && strcmp(argv[1], "asyncjob") == 0;
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  static const char text[] = "Hello world!";
  int steps = 0;
  int *steps_ptr = &steps;
  ASYNC_JOB *job = NULL;
  int result = 0;
  int status;
  const char *start_job_from;
  const char *crypto_from;
  void *crypto;

  /* libcrypto at work. */
  if (!EVP_Digest(text, sizeof text - 1, digest, &digest_len, EVP_sha256(), NULL) ||
      digest_len != 32) {
    fprintf(stderr, "EVP_Digest failed\n");
    return 1;
  }
  printf("%s; SHA-256 of \"%s\" starts %02x%02x%02x%02x\n", OpenSSL_version(OPENSSL_VERSION), text,
         digest[0], digest[1], digest[2], digest[3]);

  /* Where the program's ASYNC_start_job, and libcrypto's own, live. */
  start_job_from = object_of((const void *)&ASYNC_start_job);
  crypto_from = object_of((const void *)&OpenSSL_version);
  printf("ASYNC_start_job comes from %s\n", start_job_from);
  printf("OpenSSL_version comes from %s\n", crypto_from);
  crypto = dlopen(crypto_from, RTLD_LAZY | RTLD_NOLOAD);
  if (crypto != NULL) {
    void *own = dlsym(crypto, "ASYNC_start_job");
    printf("libcrypto's own ASYNC_start_job %s\n", own == NULL ? "does not exist"
                                                   : own == (void *)&ASYNC_start_job
                                                       ? "is the one in use"
                                                       : "is a different function");
    dlclose(crypto);
  }
  if (!must_be_asyncjob) return 0;

  if (strstr(start_job_from, "libasyncjob") == NULL) {
    fprintf(stderr, "ASYNC_start_job is not asyncjob's\n");
    return 1;
  }
  if (strcmp(object_of((const void *)&ASYNC_pause_job), start_job_from) != 0) {
    fprintf(stderr, "ASYNC_pause_job comes from elsewhere\n");
    return 1;
  }

  /* And it runs a job, on asyncjob's back end. */
  printf("asyncjob back end: %s\n", asyncjob_context_backend());
  while ((status = ASYNC_start_job(&job, NULL, &result, job_body, &steps_ptr, sizeof steps_ptr)) ==
         ASYNC_PAUSE) {
  }
  if (status != ASYNC_FINISH || result != 5 || steps != 2) {
    fprintf(stderr, "job: status %d, result %d, %d steps\n", status, result, steps);
    return 1;
  }
  printf("job finished with %d after one pause\n", result);
  ASYNC_cleanup_thread();
  return 0;
}
