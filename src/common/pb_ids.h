// Conversions between the id types of common/ids.h and their protobuf messages.
#pragma once
#include "common/ids.h"
#include "proto/wormhole.pb.h"

namespace wormhole {

inline Gid from_pb(const pb::Gid& g) { return Gid{g.pod(), g.seq()}; }
inline void to_pb(Gid g, pb::Gid* out) {
  out->set_pod(g.pod);
  out->set_seq(g.seq);
}
inline Hlc from_pb(const pb::Hlc& h) { return Hlc{h.wall_ms(), h.counter(), h.pod()}; }
inline void to_pb(const Hlc& h, pb::Hlc* out) {
  out->set_wall_ms(h.wall_ms);
  out->set_counter(h.counter);
  out->set_pod(h.pod);
}

}  // namespace wormhole
