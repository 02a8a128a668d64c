// Key management for RSA and EC keys.
//
// A key is an EVP_PKEY of the provider's inner context. Keys reach the
// provider in three ways: libcrypto exports a key of another provider to it
// when one of its signatures is fetched for that key (import), a decoder
// fetched with a property query that prefers asyncjob hands it the decoded
// key (import again), or it is generated (libssl generates its ephemeral
// ECDHE keys through whichever EC key management its property query
// selects). Everything a key is asked (parameters, matching, export,
// validation) is answered by the default provider's key underneath, so that
// the key behaves exactly like a default-provider key.
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/proverr.h>

#include <new>

#include "provider/key.h"
#include "provider/provider.h"

namespace asyncjob::provider {
namespace {

// ----- What a key holds -----

bool HasNumber(const EVP_PKEY* pkey, const char* name) {
  BIGNUM* number = nullptr;
  bool found = EVP_PKEY_get_bn_param(pkey, name, &number) == 1;
  BN_clear_free(number);
  return found;
}

bool HasOctets(const EVP_PKEY* pkey, const char* name) {
  size_t length = 0;
  return EVP_PKEY_get_octet_string_param(pkey, name, nullptr, 0, &length) == 1 && length > 0;
}

bool HasText(const EVP_PKEY* pkey, const char* name) {
  char text[80];
  size_t length = 0;
  return EVP_PKEY_get_utf8_string_param(pkey, name, text, sizeof text, &length) == 1;
}

// The OSSL_KEYMGMT_SELECT_* parts present in pkey, in the sense of the
// default provider's has(): RSA keys have no domain parameters to miss, and
// "other parameters" are always there.
int FindParts(KeyType type, const EVP_PKEY* pkey) {
  if (pkey == nullptr) return 0;
  int parts = OSSL_KEYMGMT_SELECT_OTHER_PARAMETERS;
  if (type == KeyType::kRsa) {
    parts |= OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS;
    if (HasNumber(pkey, OSSL_PKEY_PARAM_RSA_N)) parts |= OSSL_KEYMGMT_SELECT_PUBLIC_KEY;
    if (HasNumber(pkey, OSSL_PKEY_PARAM_RSA_D)) parts |= OSSL_KEYMGMT_SELECT_PRIVATE_KEY;
  } else {
    if (HasText(pkey, OSSL_PKEY_PARAM_GROUP_NAME) || HasText(pkey, OSSL_PKEY_PARAM_EC_FIELD_TYPE)) {
      parts |= OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS;
    }
    if (HasOctets(pkey, OSSL_PKEY_PARAM_PUB_KEY)) parts |= OSSL_KEYMGMT_SELECT_PUBLIC_KEY;
    if (HasNumber(pkey, OSSL_PKEY_PARAM_PRIV_KEY)) parts |= OSSL_KEYMGMT_SELECT_PRIVATE_KEY;
  }
  return parts;
}

// Takes ownership of pkey.
void SetKey(Key* key, EVP_PKEY* pkey) {
  EVP_PKEY_free(key->pkey);
  key->pkey = pkey;
  key->parts = FindParts(key->type, pkey);
}

Key* NewKey(Provider* provider, KeyType type, EVP_PKEY* pkey) {
  auto* key = new (std::nothrow) Key{provider, type};
  if (key == nullptr) {
    EVP_PKEY_free(pkey);
    ERR_raise(ERR_LIB_PROV, ERR_R_MALLOC_FAILURE);
    return nullptr;
  }
  SetKey(key, pkey);
  return key;
}

// ----- Construction and destruction -----

template <KeyType kType>
void* New(void* provctx) {
  return NewKey(static_cast<Provider*>(provctx), kType, nullptr);
}

void Free(void* keydata) {
  auto* key = static_cast<Key*>(keydata);
  if (key == nullptr) return;
  EVP_PKEY_free(key->pkey);
  delete key;
}

void* Dup(const void* keydata, int) {
  const auto* from = static_cast<const Key*>(keydata);
  EVP_PKEY* pkey = nullptr;
  if (from->pkey != nullptr && (pkey = EVP_PKEY_dup(from->pkey)) == nullptr) return nullptr;
  return NewKey(from->provider, from->type, pkey);
}

// ----- Import and export -----

int Import(void* keydata, int selection, const OSSL_PARAM params[]) {
  auto* key = static_cast<Key*>(keydata);
  if (key == nullptr || params == nullptr) return 0;
  EVP_PKEY_CTX* ctx =
      EVP_PKEY_CTX_new_from_name(key->provider->libctx(), KeyTypeName(key->type), nullptr);
  EVP_PKEY* pkey = nullptr;
  bool imported = ctx != nullptr && EVP_PKEY_fromdata_init(ctx) == 1 &&
                  EVP_PKEY_fromdata(ctx, &pkey, selection, const_cast<OSSL_PARAM*>(params)) == 1;
  EVP_PKEY_CTX_free(ctx);
  if (!imported) return 0;
  SetKey(key, pkey);
  return 1;
}

int Export(void* keydata, int selection, OSSL_CALLBACK* callback, void* callback_argument) {
  auto* key = static_cast<Key*>(keydata);
  if (key == nullptr || key->pkey == nullptr) return 0;
  return EVP_PKEY_export(key->pkey, selection, callback, callback_argument) == 1;
}

// What import and export take and give: the parameters of the default
// provider's keys of the same type.
const OSSL_PARAM kRsaTypes[] = {OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, nullptr, 0),
                                OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, nullptr, 0),
                                OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_D, nullptr, 0),
                                OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_FACTOR1, nullptr, 0),
                                OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_FACTOR2, nullptr, 0),
                                OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_FACTOR3, nullptr, 0),
                                OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_EXPONENT1, nullptr, 0),
                                OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_EXPONENT2, nullptr, 0),
                                OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_EXPONENT3, nullptr, 0),
                                OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_COEFFICIENT1, nullptr, 0),
                                OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_COEFFICIENT2, nullptr, 0),
                                OSSL_PARAM_END};

const OSSL_PARAM kEcTypes[] = {
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, nullptr, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_ENCODING, nullptr, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, nullptr, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_FIELD_TYPE, nullptr, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_EC_P, nullptr, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_EC_A, nullptr, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_EC_B, nullptr, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_EC_GENERATOR, nullptr, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_EC_ORDER, nullptr, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_EC_COFACTOR, nullptr, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_EC_SEED, nullptr, 0),
    OSSL_PARAM_int(OSSL_PKEY_PARAM_USE_COFACTOR_ECDH, nullptr),
    OSSL_PARAM_int(OSSL_PKEY_PARAM_EC_INCLUDE_PUBLIC, nullptr),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, nullptr, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_PRIV_KEY, nullptr, 0),
    OSSL_PARAM_END};

template <KeyType kType>
const OSSL_PARAM* Types(int) {
  return kType == KeyType::kRsa ? kRsaTypes : kEcTypes;
}

// ----- Questions about a key -----

int Has(const void* keydata, int selection) {
  const auto* key = static_cast<const Key*>(keydata);
  if (key == nullptr) return 0;
  selection &= OSSL_KEYMGMT_SELECT_ALL;
  return (key->parts & selection) == selection;
}

int Match(const void* keydata1, const void* keydata2, int selection) {
  const auto* a = static_cast<const Key*>(keydata1);
  const auto* b = static_cast<const Key*>(keydata2);
  if (a->pkey == nullptr || b->pkey == nullptr) return 0;
  if ((selection & OSSL_KEYMGMT_SELECT_KEYPAIR) != 0) return EVP_PKEY_eq(a->pkey, b->pkey) == 1;
  if ((selection & OSSL_KEYMGMT_SELECT_ALL_PARAMETERS) != 0) {
    return EVP_PKEY_parameters_eq(a->pkey, b->pkey) == 1;
  }
  return 1;
}

int Validate(const void* keydata, int selection, int checktype) {
  const auto* key = static_cast<const Key*>(keydata);
  if (key == nullptr || key->pkey == nullptr) return 0;
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_pkey(key->provider->libctx(), key->pkey, nullptr);
  if (ctx == nullptr) return 0;
  const bool quick = checktype == OSSL_KEYMGMT_VALIDATE_QUICK_CHECK;
  bool valid = true;
  if ((selection & OSSL_KEYMGMT_SELECT_ALL_PARAMETERS) != 0) {
    valid = valid && (quick ? EVP_PKEY_param_check_quick(ctx) : EVP_PKEY_param_check(ctx)) == 1;
  }
  if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0) {
    valid = valid && (quick ? EVP_PKEY_public_check_quick(ctx) : EVP_PKEY_public_check(ctx)) == 1;
  }
  if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0) {
    valid = valid && EVP_PKEY_private_check(ctx) == 1;
  }
  if ((selection & OSSL_KEYMGMT_SELECT_KEYPAIR) == OSSL_KEYMGMT_SELECT_KEYPAIR) {
    valid = valid && EVP_PKEY_pairwise_check(ctx) == 1;
  }
  EVP_PKEY_CTX_free(ctx);
  return valid;
}

int GetParams(void* keydata, OSSL_PARAM params[]) {
  auto* key = static_cast<Key*>(keydata);
  if (key == nullptr) return 0;
  if (key->pkey == nullptr) return 1;  // nothing to tell yet
  return EVP_PKEY_get_params(key->pkey, params) == 1;
}

template <KeyType kType>
const OSSL_PARAM* GettableParams(void* provctx) {
  return EVP_KEYMGMT_gettable_params(static_cast<Provider*>(provctx)->keymgmt(kType));
}

int SetParams(void* keydata, const OSSL_PARAM params[]) {
  auto* key = static_cast<Key*>(keydata);
  if (key == nullptr) return 0;
  if (params == nullptr || params->key == nullptr) return 1;
  if (key->pkey == nullptr) return 0;
  if (EVP_PKEY_set_params(key->pkey, const_cast<OSSL_PARAM*>(params)) != 1) return 0;
  // Setting an encoded public key (libssl does for a peer's key share) adds
  // a part.
  key->parts = FindParts(key->type, key->pkey);
  return 1;
}

template <KeyType kType>
const OSSL_PARAM* SettableParams(void* provctx) {
  return EVP_KEYMGMT_settable_params(static_cast<Provider*>(provctx)->keymgmt(kType));
}

const char* RsaOperationName(int) { return "RSA"; }

const char* EcOperationName(int operation_id) {
  switch (operation_id) {
    case OSSL_OP_SIGNATURE:
      return "ECDSA";
    case OSSL_OP_KEYEXCH:
      return "ECDH";
    default:
      return nullptr;
  }
}

// ----- Generation, by the default provider underneath -----

struct GenContext {
  Provider* provider;
  KeyType type;
  EVP_PKEY_CTX* ctx;
};

template <KeyType kType>
void* GenInit(void* provctx, int selection, const OSSL_PARAM params[]) {
  auto* provider = static_cast<Provider*>(provctx);
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(provider->libctx(), KeyTypeName(kType), nullptr);
  const bool keypair = (selection & OSSL_KEYMGMT_SELECT_KEYPAIR) != 0;
  if (ctx == nullptr || (keypair ? EVP_PKEY_keygen_init(ctx) : EVP_PKEY_paramgen_init(ctx)) != 1 ||
      (params != nullptr && EVP_PKEY_CTX_set_params(ctx, params) != 1)) {
    EVP_PKEY_CTX_free(ctx);
    return nullptr;
  }
  auto* gen = new (std::nothrow) GenContext{provider, kType, ctx};
  if (gen == nullptr) {
    EVP_PKEY_CTX_free(ctx);
    ERR_raise(ERR_LIB_PROV, ERR_R_MALLOC_FAILURE);
  }
  return gen;
}

int GenSetParams(void* genctx, const OSSL_PARAM params[]) {
  auto* gen = static_cast<GenContext*>(genctx);
  return params == nullptr || EVP_PKEY_CTX_set_params(gen->ctx, params) == 1;
}

template <KeyType kType>
const OSSL_PARAM* GenSettableParams(void*, void* provctx) {
  return EVP_KEYMGMT_gen_settable_params(static_cast<Provider*>(provctx)->keymgmt(kType));
}

// A template key gives its domain parameters: for EC, the group.
int GenSetTemplate(void* genctx, void* templ) {
  auto* gen = static_cast<GenContext*>(genctx);
  const auto* from = static_cast<const Key*>(templ);
  if (gen->type == KeyType::kRsa) return 1;
  if (from == nullptr || from->pkey == nullptr) return 0;
  char group[80];
  size_t length = 0;
  if (EVP_PKEY_get_utf8_string_param(from->pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                     &length) != 1) {
    ERR_raise_data(ERR_LIB_PROV, PROV_R_INVALID_CURVE,
                   "asyncjob: only named curves can serve as a template");
    return 0;
  }
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
                         OSSL_PARAM_construct_end()};
  return EVP_PKEY_CTX_set_params(gen->ctx, params) == 1;
}

void* Gen(void* genctx, OSSL_CALLBACK*, void*) {
  auto* gen = static_cast<GenContext*>(genctx);
  EVP_PKEY* pkey = nullptr;
  if (EVP_PKEY_generate(gen->ctx, &pkey) != 1) return nullptr;
  return NewKey(gen->provider, gen->type, pkey);
}

void GenCleanup(void* genctx) {
  auto* gen = static_cast<GenContext*>(genctx);
  if (gen == nullptr) return;
  EVP_PKEY_CTX_free(gen->ctx);
  delete gen;
}

template <KeyType kType, const char* (*kOperationName)(int)>
const OSSL_DISPATCH kFunctions[] = {
    {OSSL_FUNC_KEYMGMT_NEW, DispatchFunction(&New<kType>)},
    {OSSL_FUNC_KEYMGMT_FREE, DispatchFunction(&Free)},
    {OSSL_FUNC_KEYMGMT_DUP, DispatchFunction(&Dup)},
    {OSSL_FUNC_KEYMGMT_IMPORT, DispatchFunction(&Import)},
    {OSSL_FUNC_KEYMGMT_IMPORT_TYPES, DispatchFunction(&Types<kType>)},
    {OSSL_FUNC_KEYMGMT_EXPORT, DispatchFunction(&Export)},
    {OSSL_FUNC_KEYMGMT_EXPORT_TYPES, DispatchFunction(&Types<kType>)},
    {OSSL_FUNC_KEYMGMT_HAS, DispatchFunction(&Has)},
    {OSSL_FUNC_KEYMGMT_MATCH, DispatchFunction(&Match)},
    {OSSL_FUNC_KEYMGMT_VALIDATE, DispatchFunction(&Validate)},
    {OSSL_FUNC_KEYMGMT_GET_PARAMS, DispatchFunction(&GetParams)},
    {OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, DispatchFunction(&GettableParams<kType>)},
    {OSSL_FUNC_KEYMGMT_SET_PARAMS, DispatchFunction(&SetParams)},
    {OSSL_FUNC_KEYMGMT_SETTABLE_PARAMS, DispatchFunction(&SettableParams<kType>)},
    {OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, DispatchFunction(kOperationName)},
    {OSSL_FUNC_KEYMGMT_GEN_INIT, DispatchFunction(&GenInit<kType>)},
    {OSSL_FUNC_KEYMGMT_GEN_SET_TEMPLATE, DispatchFunction(&GenSetTemplate)},
    {OSSL_FUNC_KEYMGMT_GEN_SET_PARAMS, DispatchFunction(&GenSetParams)},
    {OSSL_FUNC_KEYMGMT_GEN_SETTABLE_PARAMS, DispatchFunction(&GenSettableParams<kType>)},
    {OSSL_FUNC_KEYMGMT_GEN, DispatchFunction(&Gen)},
    {OSSL_FUNC_KEYMGMT_GEN_CLEANUP, DispatchFunction(&GenCleanup)},
    {0, nullptr}};

}  // namespace

const OSSL_DISPATCH* const kRsaKeymgmtFunctions = kFunctions<KeyType::kRsa, &RsaOperationName>;
const OSSL_DISPATCH* const kEcKeymgmtFunctions = kFunctions<KeyType::kEc, &EcOperationName>;

}  // namespace asyncjob::provider
