// Situations, the reaction they choose, the disconnect strategy, and the gate that file
// operations pass.
#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <thread>

#include "cluster/situation.h"
#include "vfs/write_gate.h"

using namespace wormhole;

TEST(Situation, ClassifiesByWhatIsMissingAndWhatCanBeRestored) {
  SituationInputs in;
  in.alive_storage_pods = 3;
  in.wanted = 2;
  EXPECT_EQ(classify(in), Situation::kFavorable);
  in.under_replicated = 5;  // repairable: still favorable
  EXPECT_EQ(classify(in), Situation::kFavorable);
  in.alive_storage_pods = 1;  // too few pods to hold two copies
  EXPECT_EQ(classify(in), Situation::kMitigated);
  EXPECT_EQ(situation_reason(Situation::kMitigated, in), "1 live storage pods for 2 copies per version");
  in.alive_storage_pods = 3;
  in.unplaceable = 1;  // no room
  EXPECT_EQ(classify(in), Situation::kMitigated);
  in.unavailable = 2;
  EXPECT_EQ(classify(in), Situation::kGrave);
  EXPECT_EQ(situation_reason(Situation::kGrave, in), "2 versions have no live copy");
}

TEST(Situation, ReactionsAndTheDisconnectStrategyChooseTheMode) {
  Reactions r;
  r.favorable = "continue";
  r.mitigated = "throttle";
  r.grave = "read-only";
  EXPECT_EQ(gate_mode(Situation::kFavorable, r, false, "freeze"), GateMode::kOpen);
  EXPECT_EQ(gate_mode(Situation::kMitigated, r, false, "continue"), GateMode::kThrottle);
  EXPECT_EQ(gate_mode(Situation::kGrave, r, false, "continue"), GateMode::kReadOnly);
  r.grave = "stop";
  EXPECT_EQ(gate_mode(Situation::kGrave, r, false, "continue"), GateMode::kStop);
  r.grave = "lower-redundancy";
  EXPECT_EQ(gate_mode(Situation::kGrave, r, false, "continue"), GateMode::kOpen);
  // Cut off, a pod's own strategy applies too, and the stricter one wins.
  r.grave = "stop";
  EXPECT_EQ(gate_mode(Situation::kGrave, r, true, "continue"), GateMode::kStop);
  EXPECT_EQ(gate_mode(Situation::kFavorable, r, true, "continue"), GateMode::kOpen);
  EXPECT_EQ(gate_mode(Situation::kFavorable, r, true, "read-only"), GateMode::kReadOnly);
  EXPECT_EQ(gate_mode(Situation::kFavorable, r, true, "freeze"), GateMode::kFreeze);
  EXPECT_EQ(gate_mode(Situation::kMitigated, r, true, "freeze"), GateMode::kFreeze);  // over throttle
  r.grave = "read-only";
  EXPECT_EQ(gate_mode(Situation::kGrave, r, true, "freeze"), GateMode::kReadOnly);
}

TEST(Situation, CutOffWhenEveryPeerIsSilentPastDownAfter) {
  const int64_t start = 1000, down = 10000;
  EXPECT_FALSE(cut_off(start + 50000, {}, start, down));  // no peers: alone by design
  EXPECT_FALSE(cut_off(start + 5000, {0, 0}, start, down));  // just started: not yet
  EXPECT_TRUE(cut_off(start + 11000, {0, 0}, start, down));
  EXPECT_FALSE(cut_off(start + 30000, {0, start + 25000}, start, down));  // one answers
  EXPECT_TRUE(cut_off(start + 40000, {start + 20000, start + 25000}, start, down));
}

TEST(WriteGate, ModesAnswerChangesAsDeclared) {
  WriteGate gate(1 << 20, 50);
  EXPECT_EQ(gate.admit_change(), 0);
  gate.set(GateMode::kReadOnly, "grave: 1 versions have no live copy");
  EXPECT_EQ(gate.admit_change(), EROFS);
  EXPECT_EQ(gate.admit_write(10), EROFS);
  gate.set(GateMode::kStop, "stop");
  EXPECT_EQ(gate.admit_change(), EIO);
  // Freeze: a change waits; lifted meanwhile, it goes ahead; not lifted, EIO after the timeout.
  gate.set(GateMode::kFreeze, "cut off");
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(gate.admit_change(), EIO);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(45));
  WriteGate slow(1 << 20, 10000);
  slow.set(GateMode::kFreeze, "cut off");
  std::thread lift([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    slow.set(GateMode::kOpen, "");
  });
  EXPECT_EQ(slow.admit_change(), 0);
  lift.join();
  gate.set(GateMode::kOpen, "");
  EXPECT_EQ(gate.admit_change(), 0);
}

TEST(WriteGate, ThrottlePacesWrites) {
  WriteGate gate(1 << 20, 1000);  // 1 MiB/s
  gate.set(GateMode::kThrottle, "mitigated");
  const auto t0 = std::chrono::steady_clock::now();
  // 2 MiB at 1 MiB/s with one second's worth of burst: about a second.
  for (int i = 0; i < 16; ++i) ASSERT_EQ(gate.admit_write(128 << 10), 0);
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, std::chrono::milliseconds(900));
  EXPECT_LT(took, std::chrono::milliseconds(3000));
}
