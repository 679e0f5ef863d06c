#include "security/admin_auth.h"

#include "security/certs.h"

namespace wormhole {

std::string admin_statement(const std::string& network, const std::string& action, const std::string& target,
                            uint64_t time_ms) {
  // Newline-separated: no field may hold one (names and actions are validated words).
  return "wormhole-admin-v1\n" + network + "\n" + action + "\n" + target + "\n" + std::to_string(time_ms) + "\n";
}

std::string check_admin(const std::vector<std::string>& admins, const std::string& network,
                        const std::string& action, const std::string& target, uint64_t time_ms, uint64_t now_ms,
                        const std::string& admin, const std::string& signature) {
  if (admins.empty()) return "";
  const std::string rule = "network.admins lists who may " + action + " (sign with --admin-key)";
  if (admin.empty() || signature.empty()) return "refused: " + rule + "; this request is not signed";
  if (target.find('\n') != std::string::npos || action.find('\n') != std::string::npos)
    return "refused: a malformed request";
  const int64_t age = static_cast<int64_t>(now_ms) - static_cast<int64_t>(time_ms);
  if (age > kAdminStatementMaxAgeMs || age < -kAdminStatementMaxAgeMs)
    return "refused: the signature is dated more than 5 minutes from this pod's clock";
  for (const std::string& entry : admins) {
    const size_t colon = entry.find(':');
    if (colon == std::string::npos || entry.compare(0, colon, admin) != 0 || colon != admin.size()) continue;
    if (certs::verify_message(entry.substr(colon + 1), admin_statement(network, action, target, time_ms), signature))
      return "";
    return "refused: the signature is not admin " + admin + "'s (" + rule + ")";
  }
  return "refused: \"" + admin + "\" is not an admin (" + rule + ")";
}

}  // namespace wormhole
