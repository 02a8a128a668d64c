// libcrypto_bridge.h - what asyncjob does when libcrypto shares the process.
//
// This unit owns asyncjob's cooperation with a libcrypto loaded beside it
// (asyncjob preloaded under an OpenSSL program, or linked before -lcrypto):
//   - each job keeps its own default OSSL_LIB_CTX, as libcrypto's own jobs
//     do: a job starts with its starter's default, the caller's default is
//     restored every time the job pauses or finishes, and the job's is put
//     back every time it is resumed;
//   - an error asyncjob queues is also raised in libcrypto's error queue
//     where libcrypto itself would raise one, with libcrypto's library and
//     reason and asyncjob's message as error data; nowhere else.
// libcrypto is never required: its functions are looked up at run time, and
// nothing happens when they are absent.
#ifndef ASYNCJOB_SRC_OPENSSL_LIBCRYPTO_BRIDGE_H_
#define ASYNCJOB_SRC_OPENSSL_LIBCRYPTO_BRIDGE_H_

namespace asyncjob::openssl {

// Looks libcrypto up in the process and installs the job switch hooks and
// the error mirror when it is there. Runs when the library is loaded;
// idempotent. Returns whether libcrypto was found.
bool ConnectToLibcrypto();

bool LibcryptoConnected();

}  // namespace asyncjob::openssl

#endif  // ASYNCJOB_SRC_OPENSSL_LIBCRYPTO_BRIDGE_H_
