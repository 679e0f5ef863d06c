#include "security/tls_files.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "security/certs.h"

namespace wormhole {
namespace {

// Reads a small file; "" when absent. False when it exists but cannot be read or is too big.
bool read_small(const std::string& path, std::string* out, std::string* error) {
  out->clear();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return true;
    *error = "cannot read " + path + ": " + std::strerror(errno);
    return false;
  }
  char buf[4096];
  for (;;) {  // bounded by kMaxPemBytes
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *error = "cannot read " + path + ": " + std::strerror(errno);
      ::close(fd);
      return false;
    }
    if (n == 0) break;
    out->append(buf, static_cast<size_t>(n));
    if (out->size() > certs::kMaxPemBytes) {
      *error = path + " is larger than " + std::to_string(certs::kMaxPemBytes) + " bytes: not ours";
      ::close(fd);
      return false;
    }
  }
  ::close(fd);
  return true;
}

}  // namespace

TlsFiles::TlsFiles(const std::string& storage_dir) : dir(storage_dir + "/tls") {}

bool TlsFiles::load(std::string* error) {
  return read_small(dir + "/ca.crt", &ca_cert, error) && read_small(dir + "/ca.key", &ca_key, error) &&
         read_small(dir + "/pod.key", &key, error) && read_small(dir + "/pod.crt", &cert, error);
}

bool TlsFiles::save(const std::string& name, const std::string& content, std::string* error) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    *error = "cannot create " + dir + ": " + std::strerror(errno);
    return false;
  }
  const std::string path = dir + "/" + name, tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  bool ok = fd >= 0;
  for (size_t done = 0; ok && done < content.size();) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<size_t>(n);
  }
  ok = ok && ::fsync(fd) == 0;
  if (fd >= 0) ::close(fd);
  ok = ok && ::rename(tmp.c_str(), path.c_str()) == 0;
  if (ok) {  // the rename is durable once the directory is
    const int d = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d >= 0) {
      ::fsync(d);
      ::close(d);
    }
  }
  if (!ok) *error = "cannot write " + path + ": " + std::strerror(errno);
  return ok;
}

bool TlsFiles::init_network(const std::string& network, const std::string& pod_name, uint64_t pod_id,
                            std::string* fingerprint, std::string* error) {
  if (!ca_cert.empty() && ca_key.empty()) {
    *error = "this pod already belongs to the network CA " + certs::cert_fingerprint(ca_cert).substr(0, 16) +
             "… made elsewhere (" + dir + "/ca.crt)";
    return false;
  }
  if (ca_cert.empty()) {
    if (!certs::create_ca(network, kCaValidSeconds, &ca_key, &ca_cert, error) || !save("ca.key", ca_key, error) ||
        !save("ca.crt", ca_cert, error))
      return false;
  }
  if (cert.empty() || !certs::key_matches_cert(key, cert) || !certs::verify_cert(ca_cert, cert, error)) {
    std::string csr;
    certs::Identity who;
    if (!request(network, pod_name, pod_id, &csr, error) ||
        !certs::sign_csr(ca_key, ca_cert, csr, network, -60, kPodCertValidSeconds, &cert, &who, error) ||
        !save("pod.crt", cert, error))
      return false;
  }
  *fingerprint = certs::cert_fingerprint(ca_cert);
  return true;
}

bool TlsFiles::request(const std::string& network, const std::string& pod_name, uint64_t pod_id, std::string* csr,
                       std::string* error) {
  if (key.empty() && (!certs::create_key(&key, error) || !save("pod.key", key, error))) return false;
  certs::Identity who{network, pod_name, pod_id, ""};
  return certs::make_csr(key, who, csr, error);
}

}  // namespace wormhole
