// Test helpers for snapshots: a pod's snapshot as records, and the install of records into
// another pod in batches, as a joining pod receives them over the network.
#pragma once
#include <string>

#include "meta/namespace.h"

namespace wormhole::testing {

// The snapshot of `source`: every replicated (key, value) record. Empty if it failed.
inline Meta::SnapshotBatch snapshot_records(Namespace& source) {
  Meta::SnapshotBatch records;
  if (!source.snapshot([&](std::string_view k, std::string_view v) {
        records.emplace_back(std::string(k), std::string(v));
        return true;
      }))
    records.clear();
  return records;
}

// Installs `records` into `target`, `per_batch` records per batch (Namespace::install_snapshot).
inline bool install_records(Namespace& target, const Meta::SnapshotBatch& records, size_t per_batch,
                            std::string* error) {
  size_t at = 0;
  return target.install_snapshot(
      [&](Meta::SnapshotBatch* batch) {
        if (at >= records.size()) return 0;
        for (size_t n = 0; n < per_batch && at < records.size(); ++n) batch->push_back(records[at++]);
        return 1;
      },
      error);
}

}  // namespace wormhole::testing
