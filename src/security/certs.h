// Certificates and keys of a network (DESIGN.md §8, docs/architecture.md "Security"): the
// network's CA, each pod's key and CA-signed certificate, and admin signing keys. Pure
// functions over PEM strings, OpenSSL underneath; nothing here touches the network or the
// disk except fetch_server_chain. Thread-safe (no shared state).
//
// A pod certificate's subject names the network (O), the pod (CN) and its id (serialNumber,
// 16 hex digits); it carries the DNS name kPodDnsName (every pod's, so that a connection
// by IP address verifies without per-pod host names: who the peer is comes from the
// subject, checked against the member list) and is usable by TLS servers and clients.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace wormhole::certs {

// The DNS name in every pod certificate; clients verify servers against it.
inline constexpr const char* kPodDnsName = "pod.wormhole";
// A CSR, certificate or key larger than this is not one of ours: refused unread.
inline constexpr size_t kMaxPemBytes = 16 * 1024;

// What a pod certificate (or certificate request) says.
struct Identity {
  std::string network;
  std::string pod_name;
  uint64_t pod_id = 0;
  // SHA-256 of the public key (DER SubjectPublicKeyInfo), lowercase hex: what a human
  // compares when approving a pod, and what the member list binds to the pod.
  std::string key_fingerprint;
};

// A new network CA: an EC P-256 key and a self-signed certificate for `network`, valid
// `valid_for_s` seconds. False + *error on failure.
bool create_ca(const std::string& network, int64_t valid_for_s, std::string* key_pem, std::string* cert_pem,
               std::string* error);
// A new EC P-256 private key (PEM).
bool create_key(std::string* key_pem, std::string* error);
// A certificate signing request for `who` (network, name, id) with the key `key_pem`.
bool make_csr(const std::string& key_pem, const Identity& who, std::string* csr_pem, std::string* error);
// Reads a CSR: bounded size, valid self-signature, a subject with network, name and id.
// Fills *who (key_fingerprint of its public key). Nothing else of the CSR is trusted.
bool read_csr(const std::string& csr_pem, Identity* who, std::string* error);
// Issues a pod certificate for the CSR, signed by the CA, valid from now + valid_from_s
// (negative: in the past) for valid_for_s seconds. Refuses a CSR that read_csr refuses or
// whose network is not `network`. Extensions come from here, never from the CSR.
bool sign_csr(const std::string& ca_key_pem, const std::string& ca_cert_pem, const std::string& csr_pem,
              const std::string& network, int64_t valid_from_s, int64_t valid_for_s, std::string* cert_pem,
              Identity* who, std::string* error);
// Reads a pod certificate's identity (no verification: see verify_cert).
bool read_cert(const std::string& cert_pem, Identity* who, std::string* error);
// Whether `cert_pem` is signed by the CA `ca_cert_pem` and valid now (dates, purpose).
bool verify_cert(const std::string& ca_cert_pem, const std::string& cert_pem, std::string* error);
// Whether `key_pem` is the private key of `cert_pem`.
bool key_matches_cert(const std::string& key_pem, const std::string& cert_pem);
// SHA-256 of a certificate's DER encoding, lowercase hex ("" if it does not parse): the
// network CA's fingerprint, as `wormhole network init` prints it and join tokens carry it.
std::string cert_fingerprint(const std::string& cert_pem);
// Seconds until the certificate expires (negative: expired); INT64_MIN if it does not parse.
int64_t seconds_left(const std::string& cert_pem);

// Connects to `address` (host:port) with TLS, verifying nothing, and returns the
// certificates the server sent (PEM, leaf first). How a pod that has no CA certificate yet
// learns it; the caller checks it against a fingerprint it trusts. Bounded by timeout_ms.
bool fetch_server_chain(const std::string& address, int timeout_ms, std::vector<std::string>* pems,
                        std::string* error);

// Admin identities: Ed25519 key pairs. The public key travels as base64 of its 32 raw bytes.
bool create_admin_key(std::string* private_pem, std::string* public_b64, std::string* error);
bool admin_public_key(const std::string& private_pem, std::string* public_b64, std::string* error);
// Signs `message` (Ed25519); *signature is 64 raw bytes.
bool sign_message(const std::string& private_pem, const std::string& message, std::string* signature,
                  std::string* error);
// Whether `signature` is `message` signed by the key `public_b64`. Any malformed input: false.
bool verify_message(const std::string& public_b64, const std::string& message, const std::string& signature);

// `bytes` random bytes from the OS CSPRNG, as lowercase hex.
std::string random_hex(size_t bytes);
// SHA-256 of `data`, lowercase hex.
std::string sha256_hex(const std::string& data);

}  // namespace wormhole::certs
