// Admin authorization (DESIGN.md §8): approvals, denials, drains, forgets and join tokens
// are signed by an admin key (`wormhole admin key create NAME`) listed in network.admins as
// "NAME:PUBLIC_KEY", and checked by the pod before they take effect. What is signed is a
// statement naming the network, the action ("forget-force" is not "forget"), its target (a
// pod's name; for an approval also the key the admin saw) and the time: a signature does not
// fit another network, action or target. The pod that takes the command refuses one older
// than kAdminStatementMaxAgeMs or used before; a drain's or forget's signature then travels
// in its op and every pod checks whose it is and what it signs (not its age).
// Pure functions, thread-safe.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace wormhole {

inline constexpr int64_t kAdminStatementMaxAgeMs = 5 * 60 * 1000;

// The bytes an admin signs for `action` on `target` at `time_ms`.
std::string admin_statement(const std::string& network, const std::string& action, const std::string& target,
                            uint64_t time_ms);
// Checks an admin's signature (raw 64 bytes) of the statement. `admins` as in the network
// file. Returns "" when `admin` is listed, the signature verifies, and time_ms is within
// kAdminStatementMaxAgeMs of now_ms; else why not, naming the rule. With no admins
// listed, anyone may act (returns "").
std::string check_admin(const std::vector<std::string>& admins, const std::string& network,
                        const std::string& action, const std::string& target, uint64_t time_ms, uint64_t now_ms,
                        const std::string& admin, const std::string& signature);

}  // namespace wormhole
