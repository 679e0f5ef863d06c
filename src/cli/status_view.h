// How `wormhole status` shows a pod's status reply (daemon/daemon.cc "status") to people:
// the full view, one line for logs and pipes, a repair progress bar. Pure formatting.
#pragma once
#include <cstdint>
#include <ostream>
#include <string>

#include <nlohmann/json.hpp>

namespace wormhole {

// "1.5 MiB".
std::string human_bytes(uint64_t bytes);
// Every line of `wormhole status`.
void print_status(const nlohmann::json& status, std::ostream& out);
// The "repair" lines (part of print_status).
void print_repair(const nlohmann::json& repair, std::ostream& out);
// One line: time, situation, under-replicated and missing copies, this pod's repair left,
// rate and ETA (for `status --watch` when the output is not a terminal).
std::string watch_line(const nlohmann::json& status);
// "[#####.....] 50% 10 of 20 versions" for this pod's repair pass; `width` characters of bar.
std::string progress_bar(const nlohmann::json& repair, int width);

}  // namespace wormhole
