// PeerNode's repair worker: carries out what cluster/repair.h decides. Every pod surveys the
// current versions with its own membership view and copies only the versions the planner
// gives to it; a claim op (HoldVersion) then tells every pod that the copy exists.
// See docs/architecture.md, "Repair".
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>
#include <sys/resource.h>
#include <unistd.h>

#include "common/invariant.h"
#include "common/pb_ids.h"
#include "net/peer.h"

namespace wormhole {
namespace {

// How often the worker looks at the membership view (a survey starts when it changed).
constexpr int64_t kRepairTickMs = 1000;
// The first survey waits for a sync round or two: before it, every peer looks down.
constexpr int64_t kFirstSurveyAfterMs = 5000;
// Surveys are at least this far apart (a flapping view does not make back-to-back scans).
constexpr int64_t kMinSurveyGapMs = 5000;
// With nothing changing, a survey this often anyway (versions written while a holder was
// unreachable for a moment, claims lost in a crash before they were durable).
constexpr int64_t kIdleSurveyEveryMs = 5 * 60 * 1000;
// After a pass that left copies missing (a fetch failed, tasks beyond the bound), the next
// survey comes this soon.
constexpr int64_t kRetrySurveyAfterMs = 10000;
// Versions read per page of a survey (under the namespace's shared lock for one page).
constexpr size_t kSurveyPageVersions = 1000;
// Tasks kept from one survey, at most (the next survey finds the rest).
constexpr size_t kMaxRepairTasks = 20000;
// Versions claimed per op.
constexpr size_t kClaimsPerOp = 256;
// Copies made are claimed at least this often, and within a quarter of gc_grace (they are
// cache to GC until claimed, kept by their age: gc_grace, 10 min by default).
constexpr int64_t kClaimEveryMs = 60 * 1000;
// The repair thread's nice value (foreground threads keep 0).
constexpr int kRepairNice = 10;
// Fetch failures logged per pass, at most (the rest are counted).
constexpr int kMaxLoggedFailures = 5;

int64_t now_ms() { return steady_now_ms(); }

}  // namespace

std::vector<PodView> PeerNode::pod_views() {
  std::vector<PodView> views;
  views.push_back(PodView{pod_id_, self_.role == "storage", self_left_ ? PodState::kForgotten : PodState::kAlive,
                          my_space().free_bytes(), self_draining_});
  for (auto& p : peers()) {
    const uint64_t id = p->id;
    if (id == 0) continue;  // never heard from: holds nothing this pod knows of
    views.push_back(PodView{id, p->storage, state_of(*p), p->free_bytes.load(), p->draining});
  }
  return views;
}

bool PeerNode::repair_sleep(int64_t ms) {
  std::unique_lock lock(hold_mu_);
  return !hold_cv_.wait_for(lock, std::chrono::milliseconds(std::max<int64_t>(ms, 0)), [this] { return stop_.load(); });
}

bool PeerNode::repair_throttle(uint64_t bytes, uint64_t rate_bytes) {
  // A token bucket of one second's worth: after a copy of `bytes`, the next may start when
  // the rate allows, never earlier than now (idle time does not build up a burst).
  const uint64_t rate = std::max<uint64_t>(rate_bytes, 1);
  const int64_t now = now_ms();
  repair_next_ms_ = std::max(repair_next_ms_, now - 1000) + static_cast<int64_t>(bytes * 1000 / rate);
  return repair_next_ms_ <= now || repair_sleep(repair_next_ms_ - now);
}

void PeerNode::repair_loop() {
  // Foreground first: this thread verifies and stores what it fetches (SHA-256 of every
  // byte), so on a busy pod it yields the CPU to FUSE and replication threads.
  if (::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), kRepairNice) != 0)
    spdlog::debug("repair: cannot lower this thread's priority: {}", std::strerror(errno));
  if (!repair_sleep(kFirstSurveyAfterMs)) return;
  std::string last_view;
  int64_t next_survey_ms = 0;  // due now
  uint64_t last_short = placements_short_.load();
  uint64_t last_holds = ns_.hold_changes();
  while (!stop_) {
    // What decides where copies go and what the survey counts: who counts as a copy, who
    // may take one, and who is live for readers (suspect is, down is not: a pod going from
    // suspect to down can make versions unavailable, a grave situation).
    std::string view;
    for (const PodView& v : pod_views())
      view += fmt::format("{:x}:{}{}{};", v.id, v.storage ? 's' : 'c', static_cast<int>(v.state), v.draining ? 'D' : '-');
    const uint64_t short_now = placements_short_.load();
    // Claims and releases (this pod's or others'): a copy claimed elsewhere can make this
    // pod's copy a surplus, a release can leave a version short.
    const uint64_t holds_now = ns_.hold_changes();
    int64_t last_surveyed;
    {
      std::lock_guard lock(repair_mu_);
      last_surveyed = repair_.surveyed_ms;
    }
    const int64_t now = now_ms();
    if ((view != last_view || short_now != last_short || holds_now != last_holds) && next_survey_ms > now)
      next_survey_ms = std::max(now, last_surveyed + kMinSurveyGapMs);
    if (now >= next_survey_ms) {
      last_view = view;
      last_short = short_now;
      last_holds = holds_now;
      bool left_work;
      {
        repair_pass();
        std::lock_guard lock(repair_mu_);
        // (A surplus that is not this pod's to release is not its work: the survey after
        // the view or a claim changes finds it.)
        left_work = repair_.copies_missing > repair_.unplaceable || repair_.my_versions_left > 0 || balance_left_;
      }
      // Balance left (a rebalance bounded per survey, releases waiting for claims): the
      // next survey as soon as surveys may follow each other.
      next_survey_ms = now_ms() + (balance_left_ ? kMinSurveyGapMs : left_work ? kRetrySurveyAfterMs : kIdleSurveyEveryMs);
    }
    if (!repair_sleep(kRepairTickMs)) return;
  }
}

bool PeerNode::repair_pass() {
  const std::vector<PodView> views = pod_views();
  RepairSurvey survey(pod_id_, views, copies_wanted(), kMaxRepairTasks);
  const bool draining = self_draining_ && !self_left_;
  Gid after;
  for (;;) {  // bounded: pages advance through a finite key range
    Gid next;
    const bool ok = ns_.scan_versions(after, kSurveyPageVersions, [&](Gid g, const pb::VersionRecord& rec) {
      if (rec.incomplete()) return;  // its chunk list is unknown here: complete_versions() first
      uint64_t stored = 0;
      for (const pb::ChunkRef& c : rec.chunks())
        if (!c.sha256().empty() && c.inline_data().empty()) stored += c.length();
      // Whether this pod stores it matters only to a drain (a file check per chunk).
      bool self_has = false;
      if (draining && stored > 0) {
        self_has = true;
        for (const pb::ChunkRef& c : rec.chunks())
          if (!c.sha256().empty() && c.inline_data().empty() && !chunks_.contains(c.sha256())) self_has = false;
      }
      survey.add(g, from_pb(rec.inode()), {rec.holders().begin(), rec.holders().end()}, stored, self_has);
    }, &next);
    if (!ok) {
      spdlog::error("repair: the metadata store could not be read; survey abandoned");
      return false;
    }
    if (next.empty() || stop_) break;
    after = next;
  }
  std::vector<RepairTask> tasks = survey.take_tasks();
  std::vector<RepairTask> rebalance = survey.take_rebalance_tasks();
  std::vector<ReleaseTask> releases = survey.take_releases();
  std::vector<std::string> lost;
  for (auto& p : peers())
    if (p->id != 0 && !counts_as_copy(state_of(*p))) lost.push_back(p->name);
  uint64_t my_bytes = 0;
  for (const RepairTask& t : tasks) my_bytes += t.bytes;
  for (const RepairTask& t : rebalance) my_bytes += t.bytes;
  {
    std::lock_guard lock(repair_mu_);
    repair_.surveyed_ms = now_ms();
    repair_.versions = survey.versions();
    repair_.under_replicated = survey.under_replicated();
    repair_.unavailable = survey.unavailable();
    repair_.copies_missing = survey.copies_missing();
    repair_.bytes_missing = survey.bytes_missing();
    repair_.unplaceable = survey.copies_unplaceable();
    repair_.tasks_dropped = survey.tasks_dropped();
    repair_.surplus = survey.surplus();
    repair_.my_versions_left = tasks.size() + rebalance.size();
    repair_.pass_done_versions = 0;
    repair_.my_bytes_left = my_bytes;
    repair_.rate_bytes_per_s = 0;
    repair_.lost = lost;
  }
  balance_left_ = !rebalance.empty() || !releases.empty();
  if (self_draining_ && !self_left_ && survey.held_short() == 0) {
    if (drain_confirmed(views)) finish_drain();
    else balance_left_ = true;  // asked again soon
  }
  uint64_t copied = 0;
  if (!tasks.empty()) {
    std::string lost_names;
    for (const std::string& name : lost) lost_names += (lost_names.empty() ? " (lost: " : ", ") + name;
    if (!lost_names.empty()) lost_names += ")";
    spdlog::info("repair: {} versions ({} MiB) to copy to this pod; {} copies missing in the network{}", tasks.size(),
                 my_bytes >> 20, survey.copies_missing(), lost_names);
    copied += copy_and_claim(tasks, config_.network.repair_rate_bytes, "repair");
  }
  if (!rebalance.empty() && !stop_) {
    spdlog::info("rebalance: {} versions belong on this pod as well; copying them at {} MiB/s", rebalance.size(),
                 config_.network.rebalance_rate_bytes >> 20);
    copied += copy_and_claim(rebalance, config_.network.rebalance_rate_bytes, "rebalance");
  }
  if (!releases.empty() && !stop_) {
    const uint64_t released = release_surplus(releases);
    if (released > 0)
      spdlog::info("rebalance: released {} surplus copies (their first {} holders confirmed they store them)",
                   released, copies_wanted());
  }
  return copied > 0;
}

uint64_t PeerNode::copy_and_claim(const std::vector<RepairTask>& tasks, uint64_t rate_bytes, const char* what) {
  const bool rebalance = std::string_view(what) == "rebalance";
  const int64_t started = now_ms();
  uint64_t copied_bytes = 0;
  int logged = 0;
  std::vector<Gid> claims;
  int64_t last_flush_ms = now_ms();
  // Well within the grace period that keeps unclaimed copies.
  const int64_t claim_every_ms =
      std::min<int64_t>(kClaimEveryMs, static_cast<int64_t>(std::min<uint64_t>(self_.gc_grace_s, 1u << 20)) * 1000 / 4);
  auto flush_claims = [&] {
    last_flush_ms = now_ms();
    // Still here: until the claim applies, the copies are cache to GC (this pod is no holder
    // yet), kept by their age only; a copy GC took meanwhile is not claimed (copied again at
    // the next survey). refresh() makes the rest young for the claim's way through.
    std::erase_if(claims, [&](Gid v) { return !holds_every_chunk(v); });
    if (claims.empty()) return;
    if (int err = ns_.claim_holder(claims))
      spdlog::error("{}: cannot record {} copies made here: {} (the next survey claims them)", what, claims.size(),
                    std::strerror(err));
    claims.clear();
  };
  for (const RepairTask& t : tasks) {  // bounded: kMaxRepairTasks
    if (stop_) break;
    const int err = repair_copy(t, rate_bytes);
    if (err == 0) {
      claims.push_back(t.version);
      copied_bytes += t.bytes;
    } else if (err != ENOENT && logged++ < kMaxLoggedFailures) {
      pb::VersionRecord rec;
      const std::string path = ns_.get_version(t.version, &rec) ? ns_.path_of(from_pb(rec.inode())) : "?";
      spdlog::warn("{}: {} (version {}): no pod gave its chunks ({}); tried again later", what, path,
                   t.version.str(), std::strerror(err));
    }
    // Claimed in batches, and at least every minute: the copies wait as cache until then.
    if (claims.size() >= kClaimsPerOp || now_ms() - last_flush_ms > claim_every_ms) flush_claims();
    const double seconds = std::max<double>(now_ms() - started, 1) / 1000.0;
    std::lock_guard lock(repair_mu_);
    --repair_.my_versions_left;
    ++repair_.pass_done_versions;
    repair_.my_bytes_left -= std::min(repair_.my_bytes_left, t.bytes);
    if (err == 0) {
      (rebalance ? repair_.rebalanced_versions : repair_.repaired_versions) += 1;
      (rebalance ? repair_.rebalanced_bytes : repair_.repaired_bytes) += t.bytes;
    } else if (err != ENOENT) {
      ++repair_.failed_versions;
    }
    repair_.rate_bytes_per_s = static_cast<double>(copied_bytes) / seconds;
  }
  flush_claims();
  spdlog::info("{}: pass done, {} MiB copied in {:.1f} s", what, copied_bytes >> 20, (now_ms() - started) / 1000.0);
  return copied_bytes;
}

void PeerNode::confirm_holding(const std::map<uint64_t, std::vector<Gid>>& asks,
                               const std::function<void(uint64_t, Gid)>& held) {
  for (auto& [pod, versions] : asks) {  // bounded: the pods of the network
    Peer* peer = peer_by_id(pod);
    if (peer == nullptr || peer->forgotten) continue;
    for (size_t from = 0; from < versions.size() && !stop_; from += kMaxConfirmVersions) {
      const size_t to = std::min(versions.size(), from + kMaxConfirmVersions);
      pb::ConfirmHoldingRequest req;
      identify(&req);
      for (size_t i = from; i < to; ++i) to_pb(versions[i], req.add_versions());
      pb::ConfirmHoldingReply reply;
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
      const grpc::Status st = peer->stub->ConfirmHolding(&ctx, req, &reply);
      if (!st.ok() || reply.held_size() != static_cast<int>(to - from)) {
        spdlog::debug("pod {} did not confirm its copies ({}); what relies on them waits", peer->name,
                      st.ok() ? "malformed reply" : st.error_message());
        break;
      }
      for (size_t i = from; i < to; ++i)
        if (reply.held(static_cast<int>(i - from))) held(pod, versions[i]);
    }
  }
}

uint64_t PeerNode::release_surplus(const std::vector<ReleaseTask>& releases) {
  // In batches of one op's worth of versions: each keeper is asked once per batch about the
  // batch's versions it keeps, and the versions every keeper confirmed are released in one op.
  uint64_t released = 0;
  for (size_t from = 0; from < releases.size() && !stop_; from += kClaimsPerOp) {
    const size_t to = std::min(releases.size(), from + kClaimsPerOp);
    // Marked before the first question goes out: from now on this pod does not confirm
    // holding them to a pod that would rely on its copy (see serve_confirm_holding).
    {
      std::lock_guard lock(releasing_mu_);
      for (size_t i = from; i < to; ++i) releasing_.insert(releases[i].version);
    }
    std::map<uint64_t, std::vector<Gid>> asks;
    std::map<Gid, size_t> confirmations;
    for (size_t i = from; i < to; ++i)
      for (uint64_t k : releases[i].keepers) asks[k].push_back(releases[i].version);
    confirm_holding(asks, [&](uint64_t, Gid v) { ++confirmations[v]; });
    std::vector<Gid> versions;
    for (size_t i = from; i < to; ++i) {
      const ReleaseTask& t = releases[i];
      // (copies_wanted() may have changed since the survey: "all" and a pod joined.)
      if (t.keepers.size() < copies_wanted()) continue;
      if (confirmations[t.version] == t.keepers.size()) versions.push_back(t.version);
    }
    int err = 0;
    if (!versions.empty()) err = ns_.claim_holder(versions, /*release=*/true);
    {
      // Applied (this pod no longer names itself a holder) or abandoned: either way the
      // mark has done its work.
      std::lock_guard lock(releasing_mu_);
      for (size_t i = from; i < to; ++i) releasing_.erase(releases[i].version);
    }
    if (err != 0) {
      spdlog::error("rebalance: cannot record {} released copies: {}", versions.size(), std::strerror(err));
      break;
    }
    released += versions.size();
    std::lock_guard lock(repair_mu_);
    repair_.released_versions += versions.size();
  }
  return released;
}

bool PeerNode::drain_confirmed(const std::vector<PodView>& views) {
  // Page by page, the versions whose chunks this pod stores: each must be held by
  // copies_wanted() other pods that count, on their own word. The survey said so from the
  // claims that reached this pod; a pod releasing its copy at the same moment may not have
  // told yet, and asks this pod (draining: it confirms nothing) for its own release.
  std::map<uint64_t, const PodView*> counted;
  for (const PodView& v : views)
    if (v.id != pod_id_ && v.storage && counts_as_copy(v.state) && !v.draining) counted[v.id] = &v;
  Gid after;
  for (;;) {  // bounded: pages advance through a finite key range
    Gid next;
    std::map<uint64_t, std::vector<Gid>> asks;
    std::vector<Gid> page;
    const bool ok = ns_.scan_versions(after, kSurveyPageVersions, [&](Gid g, const pb::VersionRecord& rec) {
      bool stores = false, all = true;
      for (const pb::ChunkRef& c : rec.chunks()) {
        if (c.sha256().empty() || !c.inline_data().empty()) continue;
        stores = true;
        all &= chunks_.contains(c.sha256());
      }
      if (!stores || !all || rec.incomplete()) return;  // nothing of it leaves with this pod
      page.push_back(g);
      for (uint64_t h : rec.holders())
        if (counted.count(h)) asks[h].push_back(g);
    }, &next);
    if (!ok || stop_) return false;
    std::map<Gid, size_t> confirmations;
    confirm_holding(asks, [&](uint64_t, Gid v) { ++confirmations[v]; });
    for (Gid g : page) {
      if (confirmations[g] >= copies_wanted()) continue;
      spdlog::info("drain: version {} is confirmed on {} other pods of {}; leaving waits", g.str(), confirmations[g],
                   copies_wanted());
      return false;
    }
    if (next.empty()) return true;
    after = next;
  }
}

grpc::Status PeerNode::serve_confirm_holding(const pb::ConfirmHoldingRequest& req, pb::ConfirmHoldingReply* reply) {
  if (static_cast<size_t>(req.versions_size()) > kMaxConfirmVersions)
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "too many versions asked about");
  // A draining or departed pod keeps nothing for anyone: its copies are on their way out.
  const bool leaving = self_draining_ || self_left_;
  std::vector<std::string> held_chunks;
  // The work per request is bounded by chunks, not only versions (a version of a large file
  // has many): versions past the budget are answered "no" (the asker asks again later).
  size_t budget = kMaxConfirmChunks;
  for (const pb::Gid& id : req.versions()) {
    const Gid g = from_pb(id);
    bool held = !leaving;
    if (held) {
      std::lock_guard lock(releasing_mu_);
      held = !releasing_.count(g);
    }
    pb::VersionRecord rec;
    // Current, or superseded here by a newer commit (an edit based on it, which every pod
    // applies in the end: pods converge on one current version per file, and a conflict's
    // loser is kept as a *current* version of its sibling). A superseded version's chunks
    // are not kept by this pod's GC beyond gc_grace (refreshed below), but nothing needs
    // them once the asker applies the same commit. Confirming only current versions made
    // a drain wait for every trashed sibling still current on the drainer alone.
    held = held && ns_.get_recent_version(g, &rec) && !rec.incomplete() &&
           std::find(rec.holders().begin(), rec.holders().end(), pod_id_) != rec.holders().end();
    const size_t before = held_chunks.size();
    held = held && static_cast<size_t>(rec.chunks_size()) <= budget;
    if (held) budget -= static_cast<size_t>(rec.chunks_size());
    for (const pb::ChunkRef& c : rec.chunks()) {
      if (!held) break;
      if (c.sha256().empty() || !c.inline_data().empty()) continue;
      // refresh(): young again, so that GC keeps it even if this pod stops holding it soon.
      held = chunks_.refresh(c.sha256());
      if (held) held_chunks.push_back(c.sha256());
    }
    if (!held) held_chunks.resize(before);
    reply->add_held(held);
  }
  // Confirmed means durable: the asker drops its copy on the strength of this answer.
  if (int err = chunks_.sync_chunks(held_chunks, /*skip_missing=*/false)) {
    spdlog::warn("holding confirmation for pod {}: cannot make the chunks durable: {}", req.from_pod_name(),
                 std::strerror(err));
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "chunks could not be made durable here");
  }
  return grpc::Status::OK;
}

void PeerNode::finish_drain() {
  // Every version has its copies on other pods, as far as the claims that reached this pod
  // say: this pod leaves. Its ops before this one reach the others first (causal order).
  for (pb::Member m : ns_.members()) {
    if (m.pod_id() != pod_id_) continue;
    m.set_forgotten(true);
    if (int err = ns_.record_member(m)) {
      spdlog::error("drain: cannot record that this pod leaves: {} (tried again at the next survey)", std::strerror(err));
      return;
    }
    spdlog::warn("drain done: every version has its copies on other pods; this pod leaves the network");
    adopt_members();
    return;
  }
}

bool PeerNode::holds_every_chunk(Gid version) {
  pb::VersionRecord rec;
  if (!ns_.get_version(version, &rec) || rec.incomplete()) return false;
  for (const pb::ChunkRef& c : rec.chunks())
    if (!c.sha256().empty() && c.inline_data().empty() && !chunks_.refresh(c.sha256())) return false;
  return true;
}

int PeerNode::repair_copy(const RepairTask& t, uint64_t rate_bytes) {
  pb::VersionRecord rec;
  if (!ns_.get_version(t.version, &rec) || rec.incomplete()) return ENOENT;  // replaced meanwhile
  const std::vector<uint64_t> holders(rec.holders().begin(), rec.holders().end());
  if (std::find(holders.begin(), holders.end(), pod_id_) != holders.end()) return 0;  // claimed (resumed)
  std::vector<std::string> expected;
  std::set<std::string> seen;
  for (const pb::ChunkRef& c : rec.chunks()) {
    if (c.sha256().empty() || !c.inline_data().empty() || !seen.insert(c.sha256()).second) continue;
    expected.push_back(c.sha256());
    // Cached here, or copied before a restart: made young, so that garbage collection (which
    // sees this pod as no holder until the claim applies) keeps it past the claim.
    if (chunks_.refresh(c.sha256())) continue;
    if (int err = fetch(c.sha256(), holders)) return err;
    const int64_t size = chunks_.size_of(c.sha256());
    if (!repair_throttle(size > 0 ? static_cast<uint64_t>(size) : 0, rate_bytes)) return EINTR;
  }
  // The claim tells every pod this copy exists: it must survive a power loss first.
  return chunks_.sync_chunks(expected);
}

nlohmann::json PeerNode::repair_status() {
  RepairCounts r;
  {
    std::lock_guard lock(repair_mu_);
    r = repair_;
  }
  const bool working = r.my_versions_left > 0;
  nlohmann::json out = {{"surveyed", r.surveyed_ms != 0},
                        {"survey_age_s", r.surveyed_ms == 0 ? -1 : (now_ms() - r.surveyed_ms) / 1000},
                        {"versions", r.versions},
                        {"under_replicated", r.under_replicated},
                        {"unavailable", r.unavailable},
                        {"copies_missing", r.copies_missing},
                        {"bytes_missing", r.bytes_missing},
                        {"unplaceable", r.unplaceable},
                        {"my_versions_left", r.my_versions_left},
                        {"my_bytes_left", r.my_bytes_left},
                        {"pass_done_versions", r.pass_done_versions},
                        {"repaired_versions", r.repaired_versions},
                        {"repaired_bytes", r.repaired_bytes},
                        {"failed_versions", r.failed_versions},
                        {"rate_bytes_per_s", static_cast<uint64_t>(r.rate_bytes_per_s)},
                        {"rate_limit_bytes_per_s", config_.network.repair_rate_bytes},
                        {"surplus", r.surplus},
                        {"rebalanced_versions", r.rebalanced_versions},
                        {"rebalanced_bytes", r.rebalanced_bytes},
                        {"released_versions", r.released_versions},
                        {"lost", r.lost}};
  out["eta_s"] = working && r.rate_bytes_per_s > 0 ? static_cast<int64_t>(r.my_bytes_left / r.rate_bytes_per_s)
                                                   : (working ? -1 : 0);
  return out;
}

}  // namespace wormhole

namespace wormhole {
namespace {
int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}
}  // namespace

void PeerNode::update_situation() {
  const int64_t now = now_ms();
  std::vector<int64_t> heard;  // peers this pod still waits for
  size_t alive_storage = self_.role == "storage";
  for (auto& p : peers()) {
    if (p->forgotten) continue;
    heard.push_back(p->last_ok_ms);
    if (p->storage && p->id != 0 && state_of(*p) == PodState::kAlive) ++alive_storage;
  }
  const bool disconnected = cut_off(now, heard, started_ms_, failure_times_.down_after_ms);
  SituationInputs in;
  in.alive_storage_pods = alive_storage;
  in.wanted = copies_wanted();
  bool known;
  {
    std::lock_guard lock(repair_mu_);
    known = repair_.surveyed_ms != 0;
    in.unavailable = repair_.unavailable;
    in.under_replicated = repair_.under_replicated;
    in.unplaceable = repair_.unplaceable;
  }
  // Before the first survey nothing is known to be missing: the situation is what the
  // pods alone tell.
  const Situation situation = classify(in);
  GateMode mode = gate_mode(situation, config_.network.reactions, disconnected, self_.disconnect);
  std::string reason = std::string(situation_name(situation)) + ": " + situation_reason(situation, in);
  if (disconnected) reason = "cut off from every other pod (disconnect = \"" + self_.disconnect + "\"); " + reason;
  if (self_left_) {  // drained: a change here would reach nobody
    mode = GateMode::kReadOnly;
    reason = "this pod has left the network (drained or forgotten)";
  }
  bool situation_changed, disconnect_changed, mode_changed, log_situation;
  {
    std::lock_guard lock(repair_mu_);
    SituationState& st = situation_;
    situation_changed = !st.known || st.situation != situation;
    // Logged when it changes (and once at the start): before the first survey it is
    // evaluated again at every answer to a sync request, and is the same.
    log_situation = st.since_wall_ms == 0 || st.situation != situation;
    disconnect_changed = st.disconnected != disconnected;
    mode_changed = st.mode != mode;
    if (situation_changed) st.since_wall_ms = wall_ms();
    if (disconnect_changed && disconnected) st.disconnected_since_wall_ms = wall_ms();
    st.known = known || st.known;
    st.situation = situation;
    st.reason = situation_reason(situation, in);
    st.mode = mode;
    st.disconnected = disconnected;
  }
  if (log_situation)
    spdlog::log(situation == Situation::kFavorable ? spdlog::level::info : spdlog::level::warn,
                "situation: {} ({}); reaction: {}", situation_name(situation), situation_reason(situation, in),
                situation == Situation::kGrave       ? config_.network.reactions.grave
                : situation == Situation::kMitigated ? config_.network.reactions.mitigated
                                                     : config_.network.reactions.favorable);
  if (disconnect_changed) {
    if (disconnected)
      spdlog::warn("cut off from every other pod: disconnect strategy \"{}\" applies until one answers", self_.disconnect);
    else
      spdlog::info("connected again: the disconnect strategy is lifted");
  }
  if (mode_changed) spdlog::info("file operations: {} ({})", gate_mode_name(mode), reason);
  if (gate_) gate_->set(mode, std::move(reason));
}

nlohmann::json PeerNode::situation_status() {
  SituationState st;
  {
    std::lock_guard lock(repair_mu_);
    st = situation_;
  }
  nlohmann::json out = {{"situation", situation_name(st.situation)},
                        {"reason", st.reason},
                        {"since_ms", st.since_wall_ms},
                        {"operations", gate_mode_name(st.mode)},
                        {"disconnected", st.disconnected},
                        {"draining", self_draining_.load()},
                        {"left", self_left_.load()}};
  if (st.disconnected) out["disconnected_since_ms"] = st.disconnected_since_wall_ms;
  return out;
}

}  // namespace wormhole
