// RSA and ECDSA signatures whose private-key operation runs on the offload
// engine.
//
// A signature context wraps an EVP_PKEY_CTX of the inner context,
// initialised for signing or verifying with the key's inner EVP_PKEY. Every
// parameter (digest, padding mode, PSS salt length, MGF1 digest, ...) is
// passed straight to it, so that the default provider validates and applies
// them exactly as it would for its own keys. Digest-sign hashes here, then
// signs the digest like a plain sign: EVP_PKEY_sign on the inner context,
// inside Provider::Offload(). Verification runs inline.
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/proverr.h>

#include <cstring>
#include <new>

#include "provider/key.h"
#include "provider/provider.h"

namespace asyncjob::provider {
namespace {

struct SignatureContext {
  Provider* provider;
  KeyType type;
  EVP_PKEY* pkey = nullptr;           // a reference to the key's inner EVP_PKEY
  EVP_PKEY_CTX* operation = nullptr;  // inner, initialised to sign or verify
  EVP_MD_CTX* digest = nullptr;       // digest-sign and digest-verify only
  bool signing = false;
};

void Reset(SignatureContext* ctx) {
  EVP_MD_CTX_free(ctx->digest);
  ctx->digest = nullptr;
  EVP_PKEY_CTX_free(ctx->operation);
  ctx->operation = nullptr;
}

template <KeyType kType>
void* NewContext(void* provctx, const char*) {
  auto* ctx = new (std::nothrow) SignatureContext{static_cast<Provider*>(provctx), kType};
  if (ctx == nullptr) ERR_raise(ERR_LIB_PROV, ERR_R_MALLOC_FAILURE);
  return ctx;
}

void FreeContext(void* vctx) {
  auto* ctx = static_cast<SignatureContext*>(vctx);
  if (ctx == nullptr) return;
  Reset(ctx);
  EVP_PKEY_free(ctx->pkey);
  delete ctx;
}

void* DupContext(void* vctx) {
  const auto* from = static_cast<const SignatureContext*>(vctx);
  auto* ctx = new (std::nothrow) SignatureContext{from->provider, from->type};
  if (ctx == nullptr) {
    ERR_raise(ERR_LIB_PROV, ERR_R_MALLOC_FAILURE);
    return nullptr;
  }
  ctx->signing = from->signing;
  if (from->pkey != nullptr && EVP_PKEY_up_ref(from->pkey) == 1) ctx->pkey = from->pkey;
  bool copied = ctx->pkey == from->pkey;
  if (copied && from->operation != nullptr) {
    copied = (ctx->operation = EVP_PKEY_CTX_dup(from->operation)) != nullptr;
  }
  if (copied && from->digest != nullptr) {
    copied = (ctx->digest = EVP_MD_CTX_new()) != nullptr &&
             EVP_MD_CTX_copy_ex(ctx->digest, from->digest) == 1;
  }
  if (!copied) {
    FreeContext(ctx);
    return nullptr;
  }
  return ctx;
}

// ----- Parameters: the inner context's -----

int SetParams(void* vctx, const OSSL_PARAM params[]) {
  auto* ctx = static_cast<SignatureContext*>(vctx);
  if (ctx == nullptr) return 0;
  if (params == nullptr || params->key == nullptr) return 1;
  if (ctx->operation == nullptr) {
    ERR_raise(ERR_LIB_PROV, PROV_R_NO_KEY_SET);
    return 0;
  }
  // The digest of a digest-sign context is fixed at its initialisation, as
  // with the default provider.
  if (ctx->digest != nullptr &&
      OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_DIGEST) != nullptr) {
    ERR_raise(ERR_LIB_PROV, PROV_R_DIGEST_NOT_ALLOWED);
    return 0;
  }
  return EVP_PKEY_CTX_set_params(ctx->operation, params) == 1;
}

int GetParams(void* vctx, OSSL_PARAM params[]) {
  auto* ctx = static_cast<SignatureContext*>(vctx);
  if (ctx == nullptr || ctx->operation == nullptr) return 0;
  return EVP_PKEY_CTX_get_params(ctx->operation, params) == 1;
}

template <KeyType kType>
const OSSL_PARAM* SettableParams(void* vctx, void* provctx) {
  auto* ctx = static_cast<SignatureContext*>(vctx);
  if (ctx != nullptr && ctx->operation != nullptr) {
    return EVP_PKEY_CTX_settable_params(ctx->operation);
  }
  return EVP_SIGNATURE_settable_ctx_params(static_cast<Provider*>(provctx)->signature(kType));
}

template <KeyType kType>
const OSSL_PARAM* GettableParams(void* vctx, void* provctx) {
  auto* ctx = static_cast<SignatureContext*>(vctx);
  if (ctx != nullptr && ctx->operation != nullptr) {
    return EVP_PKEY_CTX_gettable_params(ctx->operation);
  }
  return EVP_SIGNATURE_gettable_ctx_params(static_cast<Provider*>(provctx)->signature(kType));
}

// ----- Initialisation -----

// provkey may be NULL to start again with the key already set.
int Init(SignatureContext* ctx, void* provkey, bool signing) {
  if (ctx == nullptr) return 0;
  if (const auto* key = static_cast<const Key*>(provkey); key != nullptr) {
    if (key->type != ctx->type || key->pkey == nullptr) {
      ERR_raise(ERR_LIB_PROV, PROV_R_INVALID_KEY);
      return 0;
    }
    if (EVP_PKEY_up_ref(key->pkey) != 1) return 0;
    EVP_PKEY_free(ctx->pkey);
    ctx->pkey = key->pkey;
  }
  if (ctx->pkey == nullptr) {
    ERR_raise(ERR_LIB_PROV, PROV_R_NO_KEY_SET);
    return 0;
  }
  Reset(ctx);
  ctx->signing = signing;
  ctx->operation = EVP_PKEY_CTX_new_from_pkey(ctx->provider->libctx(), ctx->pkey, nullptr);
  if (ctx->operation == nullptr) return 0;
  return (signing ? EVP_PKEY_sign_init(ctx->operation) : EVP_PKEY_verify_init(ctx->operation)) == 1;
}

int SignInit(void* vctx, void* provkey, const OSSL_PARAM params[]) {
  auto* ctx = static_cast<SignatureContext*>(vctx);
  return Init(ctx, provkey, true) && SetParams(ctx, params);
}

int VerifyInit(void* vctx, void* provkey, const OSSL_PARAM params[]) {
  auto* ctx = static_cast<SignatureContext*>(vctx);
  return Init(ctx, provkey, false) && SetParams(ctx, params);
}

// Hashes with mdname (the key's default digest when NULL) and tells the
// inner context, which then signs digests of that kind.
int DigestInit(SignatureContext* ctx, const char* mdname, void* provkey, const OSSL_PARAM params[],
               bool signing) {
  if (!Init(ctx, provkey, signing)) return 0;
  char default_name[80];
  if (mdname == nullptr || *mdname == '\0') {
    if (EVP_PKEY_get_default_digest_name(ctx->pkey, default_name, sizeof default_name) <= 0) {
      ERR_raise(ERR_LIB_PROV, PROV_R_MISSING_MESSAGE_DIGEST);
      return 0;
    }
    mdname = default_name;
  }
  OSSL_PARAM digest_param[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, const_cast<char*>(mdname), 0),
      OSSL_PARAM_construct_end()};
  if (EVP_PKEY_CTX_set_params(ctx->operation, digest_param) != 1) return 0;
  EVP_MD* md = EVP_MD_fetch(ctx->provider->libctx(), mdname, nullptr);
  if (md == nullptr) {
    ERR_raise_data(ERR_LIB_PROV, PROV_R_INVALID_DIGEST, "digest=%s", mdname);
    return 0;
  }
  ctx->digest = EVP_MD_CTX_new();
  bool started = ctx->digest != nullptr && EVP_DigestInit_ex2(ctx->digest, md, nullptr) == 1;
  EVP_MD_free(md);
  return started && SetParams(ctx, params);
}

int DigestSignInit(void* vctx, const char* mdname, void* provkey, const OSSL_PARAM params[]) {
  return DigestInit(static_cast<SignatureContext*>(vctx), mdname, provkey, params, true);
}

int DigestVerifyInit(void* vctx, const char* mdname, void* provkey, const OSSL_PARAM params[]) {
  return DigestInit(static_cast<SignatureContext*>(vctx), mdname, provkey, params, false);
}

// ----- Operations -----

// Whether ctx was initialised for this kind of operation.
bool Ready(const SignatureContext* ctx, bool signing) {
  if (ctx == nullptr || ctx->operation == nullptr) {
    ERR_raise(ERR_LIB_PROV, PROV_R_NO_KEY_SET);
    return false;
  }
  if (ctx->signing != signing) {
    ERR_raise(ERR_LIB_PROV, ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED);
    return false;
  }
  return true;
}

int Sign(void* vctx, unsigned char* sig, size_t* siglen, size_t sigsize, const unsigned char* tbs,
         size_t tbslen) {
  auto* ctx = static_cast<SignatureContext*>(vctx);
  if (!Ready(ctx, true)) return 0;
  // A size query costs nothing: no need to leave the thread for it.
  if (sig == nullptr) return EVP_PKEY_sign(ctx->operation, nullptr, siglen, tbs, tbslen) == 1;
  size_t length = sigsize;
  EVP_PKEY_CTX* operation = ctx->operation;
  int signed_ok =
      ctx->provider->Offload([&] { return EVP_PKEY_sign(operation, sig, &length, tbs, tbslen); });
  if (signed_ok != 1) return 0;
  *siglen = length;
  return 1;
}

int Verify(void* vctx, const unsigned char* sig, size_t siglen, const unsigned char* tbs,
           size_t tbslen) {
  auto* ctx = static_cast<SignatureContext*>(vctx);
  if (!Ready(ctx, false)) return 0;
  return EVP_PKEY_verify(ctx->operation, sig, siglen, tbs, tbslen) == 1;
}

int DigestUpdate(void* vctx, const unsigned char* data, size_t datalen) {
  auto* ctx = static_cast<SignatureContext*>(vctx);
  if (ctx == nullptr || ctx->digest == nullptr) return 0;
  return EVP_DigestUpdate(ctx->digest, data, datalen) == 1;
}

// Finishes the hash; returns its length, or 0 on failure.
unsigned int FinishDigest(SignatureContext* ctx, unsigned char (&md)[EVP_MAX_MD_SIZE]) {
  if (ctx == nullptr || ctx->digest == nullptr) return 0;
  unsigned int length = 0;
  if (EVP_DigestFinal_ex(ctx->digest, md, &length) != 1) return 0;
  return length;
}

int DigestSignFinal(void* vctx, unsigned char* sig, size_t* siglen, size_t sigsize) {
  auto* ctx = static_cast<SignatureContext*>(vctx);
  unsigned char md[EVP_MAX_MD_SIZE] = {};
  if (sig == nullptr) {
    // Size query: the hash goes on.
    if (ctx == nullptr || ctx->digest == nullptr) return 0;
    int md_size = EVP_MD_CTX_get_size(ctx->digest);
    if (md_size <= 0) return 0;
    return Sign(ctx, nullptr, siglen, 0, md, static_cast<size_t>(md_size));
  }
  unsigned int md_length = FinishDigest(ctx, md);
  return md_length != 0 && Sign(ctx, sig, siglen, sigsize, md, md_length);
}

int DigestVerifyFinal(void* vctx, const unsigned char* sig, size_t siglen) {
  auto* ctx = static_cast<SignatureContext*>(vctx);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_length = FinishDigest(ctx, md);
  return md_length != 0 && Verify(ctx, sig, siglen, md, md_length);
}

template <KeyType kType>
const OSSL_DISPATCH kFunctions[] = {
    {OSSL_FUNC_SIGNATURE_NEWCTX, DispatchFunction(&NewContext<kType>)},
    {OSSL_FUNC_SIGNATURE_FREECTX, DispatchFunction(&FreeContext)},
    {OSSL_FUNC_SIGNATURE_DUPCTX, DispatchFunction(&DupContext)},
    {OSSL_FUNC_SIGNATURE_SIGN_INIT, DispatchFunction(&SignInit)},
    {OSSL_FUNC_SIGNATURE_SIGN, DispatchFunction(&Sign)},
    {OSSL_FUNC_SIGNATURE_VERIFY_INIT, DispatchFunction(&VerifyInit)},
    {OSSL_FUNC_SIGNATURE_VERIFY, DispatchFunction(&Verify)},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, DispatchFunction(&DigestSignInit)},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, DispatchFunction(&DigestUpdate)},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, DispatchFunction(&DigestSignFinal)},
    {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT, DispatchFunction(&DigestVerifyInit)},
    {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_UPDATE, DispatchFunction(&DigestUpdate)},
    {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_FINAL, DispatchFunction(&DigestVerifyFinal)},
    {OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, DispatchFunction(&GetParams)},
    {OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, DispatchFunction(&GettableParams<kType>)},
    {OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, DispatchFunction(&SetParams)},
    {OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, DispatchFunction(&SettableParams<kType>)},
    {0, nullptr}};

}  // namespace

const OSSL_DISPATCH* const kRsaSignatureFunctions = kFunctions<KeyType::kRsa>;
const OSSL_DISPATCH* const kEcdsaSignatureFunctions = kFunctions<KeyType::kEc>;

}  // namespace asyncjob::provider
