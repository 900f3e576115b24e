// BlobFiles: the blob lane's data, one plain file per blob in the store's `blob-lane/`
// directory; the store keeps each blob's info, its id and the lane's cursor in RocksDB.
//
// Why not RocksDB values (as before): every byte of voice data then went through the WAL and a
// memtable, and at each flush into a blob file, with a CRC32C over both that this machine's
// RocksDB build computes in software. A 64 MiB flush took the flush thread 0.5 s of CPU, and on
// 2 cores that showed as 30-150 ms of delta lag each time (case (d), docs/BENCHMARKS.md). A
// file costs a copy into the page cache; the blob's own XXH3 checksum covers it end to end.
//
// A blob is written to `<seq>.part`, synced and renamed to `<seq>` when complete; the store
// records it in RocksDB after that. A crash between the two leaves a file that either the next
// blob at the same seq replaces (primary) or the completion after restart finds (subordinate).
// Partial writes are as durable as the store's RocksDB writes: in the page cache (a killed
// process loses nothing), synced to the disk only when `sync` is set; a complete blob is on the
// disk before it is recorded, so a power loss cannot keep the record without the bytes.
//
// Internal to replication. Thread-safety: none (the store calls it under its blob lock; reads of
// complete blobs may come from any thread).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "statesync/common/status.h"

namespace statesync::detail {

class BlobFiles {
 public:
  BlobFiles() = default;
  BlobFiles(std::filesystem::path dir, bool sync) : dir_(std::move(dir)), sync_(sync) {}

  // Creates the directory if needed.
  Status Open() const;

  // Writes `data` at `offset` of blob `seq`'s partial file; offset 0 starts the file anew, and
  // nothing at all past the start does nothing.
  Status WritePart(std::uint64_t seq, std::uint64_t offset, std::string_view data) const;
  // The partial file of `seq` is synced and becomes the complete blob (replacing one left by a
  // crash); Ok when it was published already.
  Status Publish(std::uint64_t seq) const;
  // Drops the partial file of `seq`, if any.
  Status RemovePart(std::uint64_t seq) const;

  // Up to `max_bytes` of complete blob `seq` from `offset` (fewer at its end); Corruption when
  // the file is missing or shorter than `size`, the size the store recorded.
  Status Read(std::uint64_t seq, std::uint64_t size, std::uint64_t offset, std::size_t max_bytes,
              std::string* out) const;
  // The whole partial file of `seq` or, once published, the complete one.
  Status ReadWhole(std::uint64_t seq, std::string* out) const;

  std::filesystem::path PartPath(std::uint64_t seq) const;
  std::filesystem::path CompletePath(std::uint64_t seq) const;

 private:
  std::filesystem::path dir_;
  bool sync_ = false;
};

}  // namespace statesync::detail
