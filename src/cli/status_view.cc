#include "cli/status_view.h"

#include <algorithm>
#include <cstdio>
#include <ctime>

namespace wormhole {

std::string human_bytes(uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    u++;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

// The "repair" lines of `wormhole status` (see PeerNode::repair_status).
void print_repair(const nlohmann::json& rp, std::ostream& out) {
  if (!rp.value("surveyed", false)) {
    out << "repair      no survey yet (the first comes a few seconds after start)\n";
    return;
  }
  out << "repair      " << rp.value("under_replicated", uint64_t{0}) << " of " << rp.value("versions", uint64_t{0})
            << " versions under-replicated, " << rp.value("unavailable", uint64_t{0}) << " unavailable; "
            << rp.value("copies_missing", uint64_t{0}) << " copies to re-create ("
            << human_bytes(rp.value("bytes_missing", uint64_t{0})) << ")";
  if (const uint64_t u = rp.value("unplaceable", uint64_t{0}); u > 0)
    out << ", " << u << " with no pod to take them";
  out << "\n";
  auto lost = rp.value("lost", nlohmann::json::array());
  if (!lost.empty()) {
    out << "lost pods  ";
    for (auto& name : lost) out << " " << name.get<std::string>();
    out << "\n";
  }
  const uint64_t surplus = rp.value("surplus", uint64_t{0});
  const uint64_t rebalanced = rp.value("rebalanced_versions", uint64_t{0});
  const uint64_t released = rp.value("released_versions", uint64_t{0});
  if (surplus > 0 || rebalanced > 0 || released > 0)
    out << "balance     " << surplus << " versions with copies beyond the redundancy; since start, this pod took "
        << rebalanced << " (" << human_bytes(rp.value("rebalanced_bytes", uint64_t{0})) << ") and released "
        << released << "\n";
  if (const uint64_t left = rp.value("my_versions_left", uint64_t{0}); left > 0) {
    const int64_t eta = rp.value("eta_s", int64_t{-1});
    out << "repairing   " << left << " versions (" << human_bytes(rp.value("my_bytes_left", uint64_t{0}))
              << ") to copy here at " << human_bytes(rp.value("rate_bytes_per_s", uint64_t{0})) << "/s, ETA "
              << (eta < 0 ? std::string("unknown") : std::to_string(eta) + " s") << "\n";
  }
}

void print_status(const nlohmann::json& r, std::ostream& out) {
  out << "network     " << r["network"].get<std::string>() << "\n"
            << "pod         " << r["pod"].get<std::string>() << " (" << r["pod_id"].get<std::string>() << ", "
            << r["role"].get<std::string>() << ", pid " << r["pid"] << ")\n"
            << "mountpoint  " << r["mountpoint"].get<std::string>()
            << (r.value("mounted", false) ? " (mounted)" : " (not mounted yet)") << "\n"
            << "storage     " << r["storage"].get<std::string>() << "\n"
            << "files       " << r["files"] << " (" << human_bytes(r["logical_bytes"]) << "), directories "
            << r["directories"] << "\n"
            << "stored      " << r["chunks"] << " chunks, " << human_bytes(r["chunk_bytes"]) << ", "
            << human_bytes(r.value("free_bytes", uint64_t{0})) << " free\n";
  if (auto t = r.value("transfer", nlohmann::json::object()); !t.empty())
    out << "transfer    " << human_bytes(t.value("pushed_bytes", uint64_t{0})) << " pushed, "
              << human_bytes(t.value("received_bytes", uint64_t{0})) << " received, "
              << human_bytes(t.value("fetched_bytes", uint64_t{0})) << " fetched, "
              << human_bytes(t.value("served_bytes", uint64_t{0})) << " served\n";
  if (auto u = r.value("replication", nlohmann::json::object()); !u.empty())
    out << "copies      " << u.value("under_replicated", uint64_t{0}) << " versions under-replicated (of "
              << u.value("redundancy", uint64_t{0}) << " copies wanted), "
              << u.value("placements_short", uint64_t{0}) << " placements short of storage pods\n";
  if (auto st = r.value("situation", nlohmann::json::object()); !st.empty()) {
    out << "situation   " << st.value("situation", "") << " (" << st.value("reason", "") << "); file operations "
              << st.value("operations", "") << "\n";
    if (st.value("left", false))
      out << "left        this pod left the network (drained or forgotten): stop it\n";
    else if (st.value("draining", false))
      out << "draining    this pod's copies move to the others; it leaves the network when done\n";
    if (st.value("disconnected", false)) {
      const std::time_t since = st.value("disconnected_since_ms", int64_t{0}) / 1000;
      char when[32];
      std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", std::localtime(&since));
      out << "disconnected since " << when << ": no other pod answers\n";
    }
  }
  if (auto rp = r.value("repair", nlohmann::json::object()); !rp.empty()) print_repair(rp, out);
  for (auto& p : r.value("peers", nlohmann::json::array()))
    out << "peer        " << p["name"].get<std::string>() << " " << p["address"].get<std::string>() << " "
              << p["role"].get<std::string>() << " " << p["state"].get<std::string>()
              << (p.value("draining", false) ? " (draining)" : "") << ", "
              << human_bytes(p["used_bytes"]) << " used, " << human_bytes(p["free_bytes"]) << " free\n";
}

std::string watch_line(const nlohmann::json& r) {
  const nlohmann::json st = r.value("situation", nlohmann::json::object());
  const nlohmann::json rp = r.value("repair", nlohmann::json::object());
  char when[16];
  const std::time_t now = std::time(nullptr);
  std::strftime(when, sizeof when, "%H:%M:%S", std::localtime(&now));
  std::string line = std::string(when) + " " + st.value("situation", "alone") + ", operations " +
                     st.value("operations", "open") + "; " + std::to_string(rp.value("under_replicated", uint64_t{0})) +
                     " versions under-replicated, " + std::to_string(rp.value("copies_missing", uint64_t{0})) +
                     " copies missing (" + human_bytes(rp.value("bytes_missing", uint64_t{0})) + ")";
  if (const uint64_t surplus = rp.value("surplus", uint64_t{0}); surplus > 0)
    line += ", " + std::to_string(surplus) + " surplus";
  if (const uint64_t left = rp.value("my_versions_left", uint64_t{0}); left > 0) {
    const int64_t eta = rp.value("eta_s", int64_t{-1});
    line += "; repairing " + std::to_string(left) + " here, " + human_bytes(rp.value("rate_bytes_per_s", uint64_t{0})) +
            "/s, ETA " + (eta < 0 ? std::string("unknown") : std::to_string(eta) + " s");
  }
  return line;
}

std::string progress_bar(const nlohmann::json& rp, int width) {
  const uint64_t left = rp.value("my_versions_left", uint64_t{0});
  const uint64_t done = rp.value("pass_done_versions", uint64_t{0});
  const uint64_t total = left + done;
  if (total == 0) return "repair      nothing to copy here";
  const int filled = static_cast<int>(static_cast<double>(done) / static_cast<double>(total) * width);
  std::string bar = "repair      [" + std::string(static_cast<size_t>(std::clamp(filled, 0, width)), '#') +
                    std::string(static_cast<size_t>(width - std::clamp(filled, 0, width)), '.') + "] ";
  char pct[16];
  std::snprintf(pct, sizeof pct, "%.0f%%", 100.0 * static_cast<double>(done) / static_cast<double>(total));
  return bar + pct + " " + std::to_string(done) + " of " + std::to_string(total) + " versions";
}

}  // namespace wormhole
