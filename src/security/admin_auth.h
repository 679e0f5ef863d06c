// Admin authorization (DESIGN.md §8): approvals, denials, drains and forgets are signed by
// an admin key (`wormhole admin key create NAME`) listed in network.admins as
// "NAME:PUBLIC_KEY", and checked by the pod before they take effect. What is signed is a
// statement naming the network, the action, its target and the time: a signature cannot be
// reused for another network, action or pod, and expires after kAdminStatementMaxAgeMs.
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
