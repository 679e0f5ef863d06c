// The TLS material of one pod, kept in `tls/` of its storage directory: the network CA's
// certificate, the pod's own key and CA-signed certificate, and — on the pod that created
// the network only — the CA's key. Keys are written 0600 and never leave the pod.
// Not thread-safe; used at start-up and by `wormhole network init`.
#pragma once
#include <string>

namespace wormhole {

struct TlsFiles {
  std::string dir;      // <storage>/tls
  std::string ca_cert;  // PEM; empty when absent
  std::string ca_key;   // only on the CA pod
  std::string key;      // this pod's private key
  std::string cert;     // this pod's certificate (signed by the CA)

  explicit TlsFiles(const std::string& storage_dir);
  // Reads what exists. False + *error when a file exists but cannot be read.
  bool load(std::string* error);
  // Writes `content` to dir/name atomically (temp file, fsync, rename), mode 0600.
  bool save(const std::string& name, const std::string& content, std::string* error);
  // The pod can talk TLS: a CA certificate, a key and a certificate of that key.
  bool ready() const { return !ca_cert.empty() && !key.empty() && !cert.empty(); }
  bool is_ca() const { return !ca_key.empty(); }
  // Makes this pod the CA of a new network (CA key + certificate, a pod key and its
  // certificate), unless it has a CA already. Fills *fingerprint with the CA's. False +
  // *error on failure, or when the pod already belongs to a CA it did not make.
  bool init_network(const std::string& network, const std::string& pod_name, uint64_t pod_id,
                    std::string* fingerprint, std::string* error);
  // A key for this pod (created and saved if absent) and a CSR for it.
  bool request(const std::string& network, const std::string& pod_name, uint64_t pod_id, std::string* csr,
               std::string* error);
};

// Validity of certificates this code issues. A pod certificate outlives any realistic pod;
// renewal is `wormhole network init` on the CA pod, or a new join (docs/architecture.md).
inline constexpr int64_t kCaValidSeconds = 30ll * 365 * 86400;
inline constexpr int64_t kPodCertValidSeconds = 10ll * 365 * 86400;

}  // namespace wormhole
