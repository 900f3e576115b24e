// JournalFiles: the journal's frames, appended to numbered segment files in the store's
// `journal/` directory; the store's index (RocksDB) names each frame's segment, offset, size and
// checksum.
//
// Why not RocksDB's WAL (as before): the WAL computes a CRC32C over every record, and this
// machine's RocksDB build does it in software. In case (a) that was 15 % of both cores, on the
// two I/O threads the stream waits for (docs/BENCHMARKS.md); a frame was also copied into a
// WriteBatch first. Here a frame costs one `pwrite` into the page cache and an XXH3, checked
// when it is read back from the file.
//
// Durability is the store's: a frame is written before its index entry, so a killed process
// leaves at most an unindexed tail, which `ResumeAt` cuts off when the store opens. Frames reach
// the disk as the kernel writes them back (started every 4 MiB) or, with `sync`, before the
// index entry is written.
//
// A thread of its own (ss-journal-io) reserves the blocks of the next segment ahead of the
// appends (fallocate, keeping the file's size) and starts the write-back of what was appended.
// Both used to happen on the appending thread, that is on the stream's path: allocating blocks
// during write-back read the file system's block bitmaps from the disk, behind its discards,
// and held the file's block-map lock meanwhile, which the next append needs. bpftrace showed
// a 245 ms sync_file_range and 50-75 ms appends waiting on that lock (docs/BENCHMARKS.md).
// Reserved blocks lie past the file's size, so the size still says where the frames end.
//
// Internal to replication. Thread-safety: Append, ResumeAt and StartSegment from one thread at a
// time (the store's writer lock); Read and DropBefore from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "file_io.h"
#include "statesync/common/status.h"

namespace statesync::detail {

// Where a frame is: its segment's number and its offset in that file.
struct FramePlace {
  std::uint64_t segment = 0;
  std::uint64_t offset = 0;
};

class JournalFiles {
 public:
  JournalFiles(std::filesystem::path dir, std::uint64_t segment_bytes, bool sync);
  ~JournalFiles();  // stops ss-journal-io after the write-back it was asked for
  JournalFiles(const JournalFiles&) = delete;
  JournalFiles& operator=(const JournalFiles&) = delete;

  // Creates the directory if needed. New frames go after `end` (the end of the newest frame the
  // index names; nothing: a new segment after any there is): a longer segment is cut back to it
  // (an append killed before its index entry), and any later segment is removed.
  Status ResumeAt(std::optional<FramePlace> end);

  // Writes `frame` after the last one; in a new segment when it would take the current one past
  // `segment_bytes` (a frame larger than that has a segment of its own).
  Result<FramePlace> Append(std::span<const std::uint8_t> frame);
  // Later frames go to a new segment, so that every earlier one can be dropped.
  Status StartSegment();

  // A segment kept open between reads of the frames that follow one another.
  struct ReadHandle {
    std::uint64_t segment = 0;
    Fd fd;
  };
  // `bytes` bytes at `at` into `out`. NotFound when the segment is gone (dropped by a trim);
  // Corruption when it ends before them. `keep`, if given, holds the segment open for the next
  // read.
  Status Read(FramePlace at, std::size_t bytes, std::string* out, ReadHandle* keep = nullptr) const;
  // The size of segment `segment` on the disk (0 when it does not exist).
  Result<std::uint64_t> SegmentSize(std::uint64_t segment) const;

  // Removes the segments numbered below `segment`, never the one being written.
  Status DropBefore(std::uint64_t segment) const;

  std::uint64_t current_segment() const { return current_.load(std::memory_order_acquire); }
  std::filesystem::path SegmentPath(std::uint64_t segment) const;

 private:
  Status OpenSegment(std::uint64_t segment, std::uint64_t size);
  // Asks ss-journal-io to start writing back the part of the current segment appended since
  // the last request.
  void RequestWriteBack();

  class Background;
  std::filesystem::path dir_;
  std::uint64_t segment_bytes_;
  bool sync_;
  std::unique_ptr<Background> background_;
  std::shared_ptr<const Fd> fd_;           // the segment being written (shared with write-back)
  std::atomic<std::uint64_t> current_{0};  // its number
  std::uint64_t offset_ = 0;               // where the next frame goes in it
  std::uint64_t written_back_to_ = 0;      // where write-back was last started
};

}  // namespace statesync::detail
