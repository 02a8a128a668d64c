// key.h - the provider's key object (the keydata its key management hands
// to libcrypto and its signature functions receive).
#ifndef ASYNCJOB_SRC_PROVIDER_KEY_H_
#define ASYNCJOB_SRC_PROVIDER_KEY_H_

#include <openssl/evp.h>

#include "provider/provider.h"

namespace asyncjob::provider {

struct Key {
  Provider* provider;
  KeyType type;
  // The key in the provider's inner context; nullptr until imported or
  // generated. Signature contexts hold references of their own.
  EVP_PKEY* pkey = nullptr;
  // The OSSL_KEYMGMT_SELECT_* parts pkey holds, found when it was set.
  int parts = 0;
};

}  // namespace asyncjob::provider

#endif  // ASYNCJOB_SRC_PROVIDER_KEY_H_
