// SlotIndex: an open-addressing (linear probing) hash index from a key's hash to a slot number.
// Each entry is 8 bytes: the low 32 bits of the key's hash and the slot number + 1 (0 = empty).
// Keeping the hash bits in the entry means that growing never reads a record, and that a probe
// dereferences a record only when 32 bits of hash agree (in practice, only the right one).
// Probe positions come from the same 32 bits, so the table holds at most 2^32 entries.
// Removal shifts the following entries back (no tombstones), so probes stay short under churn.
// Prefetch() lets a batch caller start the memory access of a later lookup early.
//
// Internal to sessiontable. Thread-safety: none.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "large_buffer.h"

namespace statesync::detail {

class SlotIndex {
 public:
  SlotIndex() { Allocate(kMinCapacity); }

  std::size_t size() const { return size_; }
  std::size_t capacity() const { return capacity_; }

  void Prefetch(std::uint64_t hash) const {
    __builtin_prefetch(&table_[static_cast<std::uint32_t>(hash) & mask_]);
  }

  // `match(slot)` tells whether the record in `slot` has the key being looked for.
  template <typename Match>
  std::optional<std::uint32_t> Find(std::uint64_t hash, Match&& match) const {
    const auto h32 = static_cast<std::uint32_t>(hash);
    for (std::size_t i = h32 & mask_;; i = (i + 1) & mask_) {
      const std::uint64_t e = table_[i];
      if (e == 0) return std::nullopt;
      if (static_cast<std::uint32_t>(e >> 32) == h32) {
        const auto slot = static_cast<std::uint32_t>(e) - 1;
        if (match(slot)) return slot;
      }
    }
  }

  // REQUIRES: no entry for this key is present.
  void Insert(std::uint64_t hash, std::uint32_t slot) {
    if ((size_ + 1) * 10 > capacity_ * 7) Grow(capacity_ * 2);
    Place(static_cast<std::uint32_t>(hash), slot);
    ++size_;
  }

  // Removes the entry of `slot` (whose key hashes to `hash`). REQUIRES: it is present.
  void Erase(std::uint64_t hash, std::uint32_t slot) {
    const std::uint64_t want = Entry(static_cast<std::uint32_t>(hash), slot);
    std::size_t i = static_cast<std::uint32_t>(hash) & mask_;
    while (table_[i] != want) i = (i + 1) & mask_;
    // Backward shift: move later entries of the probe run into the hole when the hole lies
    // between their home position and where they sit.
    std::size_t j = i;
    for (;;) {
      j = (j + 1) & mask_;
      const std::uint64_t e = table_[j];
      if (e == 0) break;
      const std::size_t home = static_cast<std::uint32_t>(e >> 32) & mask_;
      // Distance from home to j and from home to the hole, going forward around the ring.
      if (((j - home) & mask_) >= ((j - i) & mask_)) {
        table_[i] = e;
        i = j;
      }
    }
    table_[i] = 0;
    --size_;
  }

  void Reserve(std::size_t entries) {
    std::size_t cap = capacity_;
    while (entries * 10 > cap * 7) cap *= 2;
    if (cap != capacity_) Grow(cap);
  }

 private:
  static constexpr std::size_t kMinCapacity = 1024;

  static std::uint64_t Entry(std::uint32_t h32, std::uint32_t slot) {
    return (std::uint64_t{h32} << 32) | (std::uint64_t{slot} + 1);
  }
  void Place(std::uint32_t h32, std::uint32_t slot) {
    std::size_t i = h32 & mask_;
    while (table_[i] != 0) i = (i + 1) & mask_;
    table_[i] = Entry(h32, slot);
  }
  void Allocate(std::size_t capacity) {
    buffer_ = LargeBuffer(capacity * sizeof(std::uint64_t));  // zeroed: every entry empty
    table_ = buffer_.as<std::uint64_t>();
    capacity_ = capacity;
    mask_ = capacity - 1;
  }
  void Grow(std::size_t capacity) {
    LargeBuffer old = std::move(buffer_);
    const std::uint64_t* old_table = table_;
    const std::size_t old_capacity = capacity_;
    Allocate(capacity);
    for (std::size_t i = 0; i < old_capacity; ++i) {
      const std::uint64_t e = old_table[i];
      if (e != 0) Place(static_cast<std::uint32_t>(e >> 32), static_cast<std::uint32_t>(e) - 1);
    }
  }

  LargeBuffer buffer_;
  std::uint64_t* table_ = nullptr;
  std::size_t capacity_ = 0;
  std::size_t mask_ = 0;
  std::size_t size_ = 0;
};

}  // namespace statesync::detail
