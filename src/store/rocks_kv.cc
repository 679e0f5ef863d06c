#include "store/rocks_kv.h"

#include <algorithm>

#include <rocksdb/convenience.h>
#include <rocksdb/db.h>
#include <rocksdb/table.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>

namespace wormhole {

std::unique_ptr<RocksKv> RocksKv::open(const std::string& dir, std::string* error) {
  rocksdb::Options options;
  options.create_if_missing = true;
  // Metadata is small and hot: a modest memtable, bloom filters for point lookups. The
  // write-ahead log is preallocated to about the memtable's size and holds the memtable's
  // records uncompressed: 8 MiB keeps that share of the disk small (32 MiB made it most of
  // the metadata of 20,000 files) at the cost of more, smaller flushes.
  options.write_buffer_size = 8 << 20;
  options.max_background_jobs = 2;
  // Records repeat pod ids and stamps (every attribute of an inode has its own): block
  // compression takes most of that out. LZ4 where data is rewritten soon, zstd on the last
  // level where it stays; the levels sized from the last one, so that most of the data is
  // there and little space is taken by versions of a key waiting for compaction.
  const auto supported = rocksdb::GetSupportedCompressions();
  auto has = [&](rocksdb::CompressionType t) {
    return std::find(supported.begin(), supported.end(), t) != supported.end();
  };
  if (has(rocksdb::kLZ4Compression)) options.compression = rocksdb::kLZ4Compression;
  if (has(rocksdb::kZSTD)) options.bottommost_compression = rocksdb::kZSTD;
  options.level_compaction_dynamic_level_bytes = true;
  // Most point reads (an inode, an edge, an inode number) miss the memtable: its bloom
  // filter answers those without a skip-list search (a few hundred KiB of memory).
  options.memtable_whole_key_filtering = true;
  options.memtable_prefix_bloom_size_ratio = 0.02;
  rocksdb::BlockBasedTableOptions table;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  // A hash index in each data block: a point read finds its key without a binary search.
  table.data_block_index_type = rocksdb::BlockBasedTableOptions::kDataBlockBinaryAndHash;
  table.block_size = 16 << 10;  // larger blocks compress better; metadata reads are cached
  options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  rocksdb::DB* db = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(options, dir, &db);
  if (!s.ok()) {
    *error = s.ToString();
    return nullptr;
  }
  return std::unique_ptr<RocksKv>(new RocksKv(db));
}

RocksKv::~RocksKv() {
  db_->Close();
  delete db_;
}

bool RocksKv::get(std::string_view key, std::string* value) {
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), rocksdb::Slice(key.data(), key.size()), value);
  // A point read that failed is still reported as absent (the interface has no third
  // answer yet), but never silently.
  if (!s.ok() && !s.IsNotFound()) spdlog::error("metadata store: a read failed: {}", s.ToString());
  return s.ok();
}

bool RocksKv::scan(std::string_view start, std::string_view end, bool reverse,
                   const std::function<bool(std::string_view, std::string_view)>& visit) {
  rocksdb::ReadOptions ro;
  rocksdb::Slice lower(start.data(), start.size()), upper(end.data(), end.size());
  ro.iterate_lower_bound = &lower;
  ro.iterate_upper_bound = &upper;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro));
  if (reverse)
    it->SeekToLast();
  else
    it->SeekToFirst();
  for (; it->Valid(); reverse ? it->Prev() : it->Next()) {
    auto k = it->key(), v = it->value();
    if (!visit(std::string_view(k.data(), k.size()), std::string_view(v.data(), v.size()))) return true;
  }
  // An iterator stops being Valid() at the end of the range and on an error (I/O error,
  // corruption); only status() tells them apart.
  if (!it->status().ok()) {
    spdlog::error("metadata store: a scan failed: {}", it->status().ToString());
    return false;
  }
  return true;
}

KvStatus RocksKv::write(const KvBatch& batch, bool sync) {
  rocksdb::WriteBatch wb;
  for (auto& [k, v] : batch) {
    if (v)
      wb.Put(k, *v);
    else
      wb.Delete(k);
  }
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  rocksdb::Status s = db_->Write(wo, &wb);
  KvStatus st;
  if (!s.ok()) {
    st.ok = false;
    st.no_space = s.IsNoSpace() || s.ToString().find("No space") != std::string::npos;
    st.message = s.ToString();
    // After a failed write RocksDB stops accepting writes until the error is cleared;
    // a full disk is recoverable once space is freed, so ask it to resume.
    if (st.no_space) db_->Resume();
  }
  return st;
}

KvStatus RocksKv::sync() {
  // Every write so far is in the write-ahead log (not flushed manually): syncing the log
  // makes them all durable.
  rocksdb::Status s = db_->SyncWAL();
  KvStatus st;
  if (!s.ok()) {
    st.ok = false;
    st.no_space = s.IsNoSpace();
    st.message = s.ToString();
  }
  return st;
}

}  // namespace wormhole
