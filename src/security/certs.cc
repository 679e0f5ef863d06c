#include "security/certs.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <memory>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace wormhole::certs {
namespace {

template <class T, void (*F)(T*)>
struct Deleter {
  void operator()(T* p) const { F(p); }
};
using Bio = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using Key = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using Cert = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using Req = std::unique_ptr<X509_REQ, Deleter<X509_REQ, X509_REQ_free>>;
using Name = std::unique_ptr<X509_NAME, Deleter<X509_NAME, X509_NAME_free>>;
using Store = std::unique_ptr<X509_STORE, Deleter<X509_STORE, X509_STORE_free>>;
using StoreCtx = std::unique_ptr<X509_STORE_CTX, Deleter<X509_STORE_CTX, X509_STORE_CTX_free>>;
using MdCtx = std::unique_ptr<EVP_MD_CTX, Deleter<EVP_MD_CTX, EVP_MD_CTX_free>>;

// The newest OpenSSL error as text (and the queue cleared), after `what`.
std::string ssl_error(const std::string& what) {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return what;
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return what + ": " + buf;
}

Bio mem_bio(const std::string& s) { return Bio(BIO_new_mem_buf(s.data(), static_cast<int>(s.size()))); }

std::string bio_string(BIO* b) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(b, &data);
  return n > 0 ? std::string(data, static_cast<size_t>(n)) : std::string();
}

std::string hex(const unsigned char* p, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(digits[p[i] >> 4]);
    out.push_back(digits[p[i] & 15]);
  }
  return out;
}

Key read_key(const std::string& pem) {
  if (pem.size() > kMaxPemBytes) return nullptr;
  Bio b = mem_bio(pem);
  return Key(PEM_read_bio_PrivateKey(b.get(), nullptr, nullptr, nullptr));
}

Cert read_x509(const std::string& pem) {
  if (pem.size() > kMaxPemBytes) return nullptr;
  Bio b = mem_bio(pem);
  return Cert(PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr));
}

std::string cert_pem_of(X509* c) {
  Bio b(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_X509(b.get(), c)) return "";
  return bio_string(b.get());
}

std::string key_fingerprint_of(EVP_PKEY* key) {
  unsigned char* der = nullptr;
  const int n = i2d_PUBKEY(key, &der);
  if (n <= 0) return "";
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(der, static_cast<size_t>(n), md, &len, EVP_sha256(), nullptr);
  OPENSSL_free(der);
  return hex(md, len);
}

bool add_entry(X509_NAME* name, int nid, const std::string& value) {
  return X509_NAME_add_entry_by_NID(name, nid, MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(value.data()),
                                    static_cast<int>(value.size()), -1, 0) == 1;
}

// The text of the (single) entry `nid` of `name`; false if absent, repeated or not text.
bool entry_of(const X509_NAME* name, int nid, std::string* out) {
  const int i = X509_NAME_get_index_by_NID(name, nid, -1);
  if (i < 0 || X509_NAME_get_index_by_NID(name, nid, i) >= 0) return false;
  const ASN1_STRING* s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
  unsigned char* utf8 = nullptr;
  const int n = ASN1_STRING_to_UTF8(&utf8, s);
  if (n < 0) return false;
  out->assign(reinterpret_cast<char*>(utf8), static_cast<size_t>(n));
  OPENSSL_free(utf8);
  return true;
}

bool identity_of_name(const X509_NAME* name, Identity* who, std::string* error) {
  std::string id_hex;
  if (!entry_of(name, NID_organizationName, &who->network) || !entry_of(name, NID_commonName, &who->pod_name) ||
      !entry_of(name, NID_serialNumber, &id_hex)) {
    *error = "the subject does not name a network, a pod and its id";
    return false;
  }
  if (id_hex.size() != 16 || id_hex.find_first_not_of("0123456789abcdef") != std::string::npos) {
    *error = "the subject's pod id is not 16 hex digits";
    return false;
  }
  who->pod_id = std::stoull(id_hex, nullptr, 16);
  if (who->pod_id == 0 || who->network.empty() || who->pod_name.empty()) {
    *error = "the subject's network, pod name or id is empty";
    return false;
  }
  return true;
}

bool add_extension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (!ext) return false;
  const bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

bool random_serial(X509* cert) {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1) return false;
  bytes[0] &= 0x7f;  // positive
  BIGNUM* bn = BN_bin2bn(bytes, sizeof bytes, nullptr);
  if (!bn) return false;
  const bool ok = BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) != nullptr;
  BN_free(bn);
  return ok;
}

bool set_validity(X509* cert, int64_t valid_from_s, int64_t valid_for_s) {
  return X509_gmtime_adj(X509_getm_notBefore(cert), static_cast<long>(valid_from_s)) &&
         X509_gmtime_adj(X509_getm_notAfter(cert), static_cast<long>(valid_from_s + valid_for_s));
}

}  // namespace

bool create_key(std::string* key_pem, std::string* error) {
  Key key(EVP_EC_gen("P-256"));
  if (!key) {
    *error = ssl_error("cannot create a key");
    return false;
  }
  Bio b(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_PrivateKey(b.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr)) {
    *error = ssl_error("cannot encode a key");
    return false;
  }
  *key_pem = bio_string(b.get());
  return true;
}

bool create_ca(const std::string& network, int64_t valid_for_s, std::string* key_pem, std::string* cert_pem,
               std::string* error) {
  if (!create_key(key_pem, error)) return false;
  Key key = read_key(*key_pem);
  Cert cert(X509_new());
  if (!key || !cert) {
    *error = ssl_error("cannot create the CA");
    return false;
  }
  X509_NAME* name = X509_get_subject_name(cert.get());
  bool ok = X509_set_version(cert.get(), 2) && random_serial(cert.get()) && set_validity(cert.get(), -60, valid_for_s) &&
            add_entry(name, NID_organizationName, network) &&
            add_entry(name, NID_commonName, "Wormhole network CA " + network) &&
            X509_set_issuer_name(cert.get(), name) && X509_set_pubkey(cert.get(), key.get()) &&
            add_extension(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0") &&
            add_extension(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign") &&
            add_extension(cert.get(), cert.get(), NID_subject_key_identifier, "hash") &&
            X509_sign(cert.get(), key.get(), EVP_sha256()) > 0;
  if (!ok) {
    *error = ssl_error("cannot create the CA certificate");
    return false;
  }
  *cert_pem = cert_pem_of(cert.get());
  return !cert_pem->empty();
}

bool make_csr(const std::string& key_pem, const Identity& who, std::string* csr_pem, std::string* error) {
  Key key = read_key(key_pem);
  Req req(X509_REQ_new());
  if (!key || !req) {
    *error = ssl_error("cannot read the pod key");
    return false;
  }
  char id[20];
  std::snprintf(id, sizeof id, "%016llx", static_cast<unsigned long long>(who.pod_id));
  X509_NAME* name = X509_REQ_get_subject_name(req.get());
  const bool ok = add_entry(name, NID_organizationName, who.network) &&
                  add_entry(name, NID_commonName, who.pod_name) && add_entry(name, NID_serialNumber, id) &&
                  X509_REQ_set_pubkey(req.get(), key.get()) && X509_REQ_sign(req.get(), key.get(), EVP_sha256()) > 0;
  if (!ok) {
    *error = ssl_error("cannot make the certificate request");
    return false;
  }
  Bio b(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_X509_REQ(b.get(), req.get())) {
    *error = ssl_error("cannot encode the certificate request");
    return false;
  }
  *csr_pem = bio_string(b.get());
  return true;
}

namespace {
Req parse_csr(const std::string& csr_pem, Identity* who, std::string* error) {
  if (csr_pem.size() > kMaxPemBytes) {
    *error = "the certificate request is larger than " + std::to_string(kMaxPemBytes) + " bytes";
    return nullptr;
  }
  Bio b = mem_bio(csr_pem);
  Req req(PEM_read_bio_X509_REQ(b.get(), nullptr, nullptr, nullptr));
  if (!req) {
    *error = ssl_error("not a certificate request");
    return nullptr;
  }
  EVP_PKEY* key = X509_REQ_get0_pubkey(req.get());
  if (!key || X509_REQ_verify(req.get(), key) != 1) {
    *error = ssl_error("the certificate request's signature does not verify");
    return nullptr;
  }
  // The keys pods make (create_key): nothing weaker, nothing exotic is certified.
  char group[64] = {};
  size_t group_len = 0;
  if (EVP_PKEY_get_id(key) != EVP_PKEY_EC ||
      EVP_PKEY_get_group_name(key, group, sizeof group, &group_len) != 1 || std::string(group) != "prime256v1") {
    ERR_clear_error();
    *error = "the certificate request's key is not EC P-256";
    return nullptr;
  }
  if (!identity_of_name(X509_REQ_get_subject_name(req.get()), who, error)) return nullptr;
  who->key_fingerprint = key_fingerprint_of(key);
  return req;
}
}  // namespace

bool read_csr(const std::string& csr_pem, Identity* who, std::string* error) {
  return parse_csr(csr_pem, who, error) != nullptr;
}

bool sign_csr(const std::string& ca_key_pem, const std::string& ca_cert_pem, const std::string& csr_pem,
              const std::string& network, int64_t valid_from_s, int64_t valid_for_s, std::string* cert_pem,
              Identity* who, std::string* error) {
  Req req = parse_csr(csr_pem, who, error);
  if (!req) return false;
  if (who->network != network) {
    *error = "the certificate request is for another network";
    return false;
  }
  Key ca_key = read_key(ca_key_pem);
  Cert ca = read_x509(ca_cert_pem);
  Cert cert(X509_new());
  if (!ca_key || !ca || !cert) {
    *error = ssl_error("cannot read the network CA");
    return false;
  }
  // The subject is rebuilt from the parsed identity: nothing else of the request is copied.
  char id[20];
  std::snprintf(id, sizeof id, "%016llx", static_cast<unsigned long long>(who->pod_id));
  Name name(X509_NAME_new());
  const std::string san = std::string("DNS:") + kPodDnsName;
  const bool ok = name && add_entry(name.get(), NID_organizationName, who->network) &&
                  add_entry(name.get(), NID_commonName, who->pod_name) &&
                  add_entry(name.get(), NID_serialNumber, id) && X509_set_version(cert.get(), 2) &&
                  random_serial(cert.get()) && set_validity(cert.get(), valid_from_s, valid_for_s) &&
                  X509_set_subject_name(cert.get(), name.get()) &&
                  X509_set_issuer_name(cert.get(), X509_get_subject_name(ca.get())) &&
                  X509_set_pubkey(cert.get(), X509_REQ_get0_pubkey(req.get())) &&
                  add_extension(cert.get(), ca.get(), NID_basic_constraints, "critical,CA:FALSE") &&
                  add_extension(cert.get(), ca.get(), NID_key_usage, "critical,digitalSignature,keyAgreement") &&
                  add_extension(cert.get(), ca.get(), NID_ext_key_usage, "serverAuth,clientAuth") &&
                  add_extension(cert.get(), ca.get(), NID_subject_alt_name, san.c_str()) &&
                  add_extension(cert.get(), ca.get(), NID_authority_key_identifier, "keyid") &&
                  X509_sign(cert.get(), ca_key.get(), EVP_sha256()) > 0;
  if (!ok) {
    *error = ssl_error("cannot issue the certificate");
    return false;
  }
  *cert_pem = cert_pem_of(cert.get());
  return !cert_pem->empty();
}

bool read_cert(const std::string& cert_pem, Identity* who, std::string* error) {
  Cert cert = read_x509(cert_pem);
  if (!cert) {
    *error = ssl_error("not a certificate");
    return false;
  }
  if (!identity_of_name(X509_get_subject_name(cert.get()), who, error)) return false;
  who->key_fingerprint = key_fingerprint_of(X509_get0_pubkey(cert.get()));
  return true;
}

bool verify_cert(const std::string& ca_cert_pem, const std::string& cert_pem, std::string* error) {
  Cert ca = read_x509(ca_cert_pem);
  Cert cert = read_x509(cert_pem);
  Store store(X509_STORE_new());
  StoreCtx ctx(X509_STORE_CTX_new());
  if (!ca || !cert || !store || !ctx || X509_STORE_add_cert(store.get(), ca.get()) != 1 ||
      X509_STORE_CTX_init(ctx.get(), store.get(), cert.get(), nullptr) != 1) {
    *error = ssl_error("cannot read the certificates");
    return false;
  }
  X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_CLIENT);
  if (X509_verify_cert(ctx.get()) != 1) {
    *error = std::string("the certificate does not verify: ") +
             X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()));
    ERR_clear_error();
    return false;
  }
  return true;
}

bool key_matches_cert(const std::string& key_pem, const std::string& cert_pem) {
  Key key = read_key(key_pem);
  Cert cert = read_x509(cert_pem);
  const bool ok = key && cert && X509_check_private_key(cert.get(), key.get()) == 1;
  ERR_clear_error();
  return ok;
}

std::string cert_fingerprint(const std::string& cert_pem) {
  Cert cert = read_x509(cert_pem);
  if (!cert) {
    ERR_clear_error();
    return "";
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (X509_digest(cert.get(), EVP_sha256(), md, &len) != 1) return "";
  return hex(md, len);
}

int64_t seconds_left(const std::string& cert_pem) {
  Cert cert = read_x509(cert_pem);
  int days = 0, secs = 0;
  if (!cert || ASN1_TIME_diff(&days, &secs, nullptr, X509_get0_notAfter(cert.get())) != 1) {
    ERR_clear_error();
    return INT64_MIN;
  }
  return int64_t{days} * 86400 + secs;
}

bool fetch_server_chain(const std::string& address, int timeout_ms, std::vector<std::string>* pems,
                        std::string* error) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) {
    *error = "expected host:port, got " + address;
    return false;
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const std::string port = address.substr(colon + 1);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0 || !found) {
    *error = "cannot resolve " + address;
    return false;
  }
  // One deadline for connect and handshake together: a server that dribbles bytes cannot
  // hold a starting pod longer than timeout_ms.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  auto left_ms = [&] {
    return static_cast<int>(std::max<int64_t>(
        0, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count()));
  };
  int fd = -1;
  std::string why = "no address";
  for (addrinfo* a = found; a && fd < 0; a = a->ai_next) {  // bounded by the resolver's list
    fd = ::socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) continue;
    int rc = ::connect(fd, a->ai_addr, a->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      int soerr = 0;
      socklen_t len = sizeof soerr;
      rc = ::poll(&p, 1, left_ms()) == 1 && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr == 0
               ? 0
               : -1;
      if (rc != 0) errno = soerr ? soerr : ETIMEDOUT;
    }
    if (rc != 0) {
      why = std::strerror(errno);
      ::close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(found);
  if (fd < 0) {
    *error = "cannot connect to " + address + ": " + why;
    return false;
  }
  std::unique_ptr<SSL_CTX, Deleter<SSL_CTX, SSL_CTX_free>> ctx(SSL_CTX_new(TLS_client_method()));
  // The minimum goes on the context before the connection is made from it.
  const bool ctx_ok = ctx && SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION) == 1;
  std::unique_ptr<SSL, Deleter<SSL, SSL_free>> ssl(ctx_ok ? SSL_new(ctx.get()) : nullptr);
  static const unsigned char kAlpn[] = {2, 'h', '2'};  // gRPC servers insist on HTTP/2
  bool ok = ssl && SSL_set_alpn_protos(ssl.get(), kAlpn, sizeof kAlpn) == 0 && SSL_set_fd(ssl.get(), fd) == 1;
  while (ok) {  // bounded by the deadline
    const int rc = SSL_connect(ssl.get());
    if (rc == 1) break;
    const int err = SSL_get_error(ssl.get(), rc);
    pollfd p{fd, static_cast<short>(err == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN), 0};
    ok = (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) && left_ms() > 0 && ::poll(&p, 1, left_ms()) == 1;
  }
  if (ok) {
    STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl.get());
    const int n = chain ? sk_X509_num(chain) : 0;
    for (int i = 0; i < n && i < 8; ++i) pems->push_back(cert_pem_of(sk_X509_value(chain, i)));
    ok = !pems->empty();
    if (!ok) *error = address + " sent no certificate";
  } else {
    *error = ssl_error("no TLS 1.3 handshake with " + address + " within " + std::to_string(timeout_ms) + " ms");
  }
  ::close(fd);
  return ok;
}

bool create_admin_key(std::string* private_pem, std::string* public_b64, std::string* error) {
  Key key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  Bio b(BIO_new(BIO_s_mem()));
  if (!key || !PEM_write_bio_PrivateKey(b.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr)) {
    *error = ssl_error("cannot create an Ed25519 key");
    return false;
  }
  *private_pem = bio_string(b.get());
  return admin_public_key(*private_pem, public_b64, error);
}

bool admin_public_key(const std::string& private_pem, std::string* public_b64, std::string* error) {
  Key key = read_key(private_pem);
  unsigned char raw[32];
  size_t len = sizeof raw;
  if (!key || EVP_PKEY_get_id(key.get()) != EVP_PKEY_ED25519 ||
      EVP_PKEY_get_raw_public_key(key.get(), raw, &len) != 1 || len != sizeof raw) {
    *error = ssl_error("not an Ed25519 private key (make one with `wormhole admin key create`)");
    return false;
  }
  unsigned char b64[64];
  const int n = EVP_EncodeBlock(b64, raw, static_cast<int>(len));
  public_b64->assign(reinterpret_cast<char*>(b64), static_cast<size_t>(n));
  return true;
}

bool sign_message(const std::string& private_pem, const std::string& message, std::string* signature,
                  std::string* error) {
  Key key = read_key(private_pem);
  MdCtx md(EVP_MD_CTX_new());
  unsigned char sig[64];
  size_t len = sizeof sig;
  if (!key || !md || EVP_PKEY_get_id(key.get()) != EVP_PKEY_ED25519 ||
      EVP_DigestSignInit(md.get(), nullptr, nullptr, nullptr, key.get()) != 1 ||
      EVP_DigestSign(md.get(), sig, &len, reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1) {
    *error = ssl_error("cannot sign with the admin key");
    return false;
  }
  signature->assign(reinterpret_cast<char*>(sig), len);
  return true;
}

bool verify_message(const std::string& public_b64, const std::string& message, const std::string& signature) {
  if (public_b64.size() != 44 || signature.size() != 64) return false;
  unsigned char raw[48];
  const int n = EVP_DecodeBlock(raw, reinterpret_cast<const unsigned char*>(public_b64.data()), 44);
  if (n != 33 || public_b64[43] != '=') return false;  // 32 bytes + one '=' of padding
  Key key(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, raw, 32));
  MdCtx md(EVP_MD_CTX_new());
  const bool ok = key && md && EVP_DigestVerifyInit(md.get(), nullptr, nullptr, nullptr, key.get()) == 1 &&
                  EVP_DigestVerify(md.get(), reinterpret_cast<const unsigned char*>(signature.data()), 64,
                                   reinterpret_cast<const unsigned char*>(message.data()), message.size()) == 1;
  ERR_clear_error();
  return ok;
}

std::string random_hex(size_t bytes) {
  std::string raw(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(bytes)) != 1) std::abort();
  return hex(reinterpret_cast<const unsigned char*>(raw.data()), bytes);
}

std::string sha256_hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  return hex(md, len);
}

}  // namespace wormhole::certs
