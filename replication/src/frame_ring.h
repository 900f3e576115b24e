// FrameRing: the newest journal frames, kept in memory so that the materializer and a
// subordinate slightly behind read them without going to the WAL. One mapping of the configured
// size (StoreOptions::journal_cache_bytes) holds them in the order they were appended: a frame
// is copied in at the head, and the oldest frames are dropped as the head comes round.
//
// Why not a heap string per frame (as before): freed in FIFO order, 64 MiB of them made glibc
// give whole heaps of its per-thread arenas back and map new ones, so the I/O threads of both
// processes kept taking page faults (about 16k/s each, measured with perf). First touch is
// expensive on this virtualized machine: while the cache filled, in the first second of a
// stream, write-to-commit lag was 10-50 ms for every write. Here each byte of the ring is
// faulted in once, a huge page at a time where the kernel gives them.
//
// The frames held are always the newest contiguous run of the journal: a frame larger than the
// ring empties it.
//
// Internal to replication. Thread-safety: none (the store calls it under its state lock).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <span>
#include <string_view>

#include "statesync/large_buffer.h"
#include "statesync/sessiontable/types.h"

namespace statesync::detail {

class FrameRing {
 public:
  explicit FrameRing(std::size_t capacity_bytes)
      : capacity_(capacity_bytes), memory_(capacity_bytes) {}

  bool empty() const { return entries_.empty(); }
  // The first seq of the oldest frame held. REQUIRES: !empty().
  Seq oldest() const { return entries_.front().first; }
  std::size_t frames() const { return entries_.size(); }

  // Keeps `frame`, the batch that starts at `first` and follows the newest frame held.
  void Put(Seq first, std::span<const std::uint8_t> frame) {
    const std::size_t n = frame.size();
    if (n == 0 || n > capacity_) {
      Clear();
      return;
    }
    if (head_ + n > capacity_) {
      // Not enough room before the end: the end is left unused this time round. The frames
      // still there (the oldest) go first, and the head starts again at the beginning.
      while (!entries_.empty() && entries_.front().offset >= head_) entries_.pop_front();
      head_ = 0;
    }
    // The oldest frames that the new one overwrites. Frames written since the head last came
    // round all end at or before the head, and those of the previous round start at or after
    // it, so the ones in the way are at the front.
    while (!entries_.empty() && entries_.front().offset >= head_ &&
           entries_.front().offset < head_ + n) {
      entries_.pop_front();
    }
    std::memcpy(memory_.as<std::uint8_t>() + head_, frame.data(), n);
    entries_.push_back({first, head_, n});
    head_ += n;
  }

  // The frame of the batch that starts at `first`, or an empty view when it is not held.
  // Valid until the next Put or Clear.
  std::string_view Find(Seq first) const {
    auto it = std::lower_bound(entries_.begin(), entries_.end(), first,
                               [](const Entry& e, Seq s) { return e.first < s; });
    if (it == entries_.end() || it->first != first) return {};
    return {memory_.as<const char>() + it->offset, it->size};
  }

  void Clear() {
    entries_.clear();
    head_ = 0;
  }

 private:
  struct Entry {
    Seq first;
    std::size_t offset;
    std::size_t size;
  };
  std::size_t capacity_;
  LargeBuffer memory_;
  std::size_t head_ = 0;
  std::deque<Entry> entries_;
};

}  // namespace statesync::detail
