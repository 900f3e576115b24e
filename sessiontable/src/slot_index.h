// SlotIndex: an open-addressing (linear probing) hash index from a key's hash to a slot number.
// Each entry is 8 bytes: the low 32 bits of the key's hash and the slot number + 1 (0 = empty).
// Keeping the hash bits in the entry means that growing never reads a record, and that a probe
// dereferences a record only when 32 bits of hash agree (in practice, only the right one).
// Probe positions come from the same 32 bits, so the table holds at most 2^32 entries.
// Removal shifts the following entries back (no tombstones), so probes stay short under churn.
// Prefetch() lets a batch caller start the memory access of a later lookup early.
//
// Growing is incremental: the entries move to the table of twice the size a few at each insert,
// and lookups read the new table, then the part of the old one not moved yet. Moving all of
// them at once stopped the writer (and so the stream behind it) for 24 ms at 360k sessions,
// 48 ms at 730k, and would for about a second at 10M. While the old table drains, entries erased
// from it become markers, so that nothing shifts into the part already moved.
//
// The larger table's memory is written a page at a time before it is needed, from half full
// on. Lookups hash all over a new table, so without that every page of it was faulted in within
// a few milliseconds of growing: on this virtualized machine memory the process has not used
// before costs about 1.5 ms per MB on first touch (huge pages; 3.3 ms per MB in 4 KB pages), and
// the writer and the subordinate's apply thread each stopped for about 100 ms at 1.47M
// sessions (the lag benchmark, docs/BENCHMARKS.md). The cost: from half full to growing, the
// index holds 16 more bytes per entry of its capacity (given back below 0.4 full).
//
// Internal to sessiontable. Thread-safety: none.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "large_buffer.h"
#include "statesync/common/page_supplier.h"

namespace statesync::detail {

class SlotIndex {
 public:
  // Tables come from `pages` when given (it must outlive the index), else are mapped here.
  explicit SlotIndex(PageSupplier* pages = nullptr) : pages_(pages) { Allocate(kMinCapacity); }
  ~SlotIndex() { WithdrawAnnouncement(); }
  SlotIndex(const SlotIndex&) = delete;
  SlotIndex& operator=(const SlotIndex&) = delete;

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
      if (e == 0) break;
      if (static_cast<std::uint32_t>(e >> 32) == h32) {
        const auto slot = static_cast<std::uint32_t>(e) - 1;
        if (match(slot)) return slot;
      }
    }
    if (old_table_ == nullptr) return std::nullopt;
    // The old table while it drains: its entries stay where they were (the moved ones too, so
    // that probes run on past them); only those not moved yet count.
    for (std::size_t i = h32 & old_mask_;; i = (i + 1) & old_mask_) {
      const std::uint64_t e = old_table_[i];
      if (e == 0) return std::nullopt;
      if (i >= moved_ && e != kErased && static_cast<std::uint32_t>(e >> 32) == h32) {
        const auto slot = static_cast<std::uint32_t>(e) - 1;
        if (match(slot)) return slot;
      }
    }
  }

  // REQUIRES: no entry for this key is present.
  void Insert(std::uint64_t hash, std::uint32_t slot) {
    MoveSome(kMovedPerInsert);
    if ((size_ + 1) * 10 > capacity_ * 7) {
      MoveSome(SIZE_MAX);  // erasures let the new table fill before the old one drained
      StartGrowing(capacity_ * 2);
    } else {
      PrefaultNext();
    }
    Place(static_cast<std::uint32_t>(hash), slot);
    ++size_;
  }

  // Removes the entry of `slot` (whose key hashes to `hash`). REQUIRES: it is present.
  void Erase(std::uint64_t hash, std::uint32_t slot) {
    const std::uint64_t want = Entry(static_cast<std::uint32_t>(hash), slot);
    std::size_t i = static_cast<std::uint32_t>(hash) & mask_;
    while (table_[i] != want) {
      if (table_[i] == 0) {
        EraseOld(want);
        return;
      }
      i = (i + 1) & mask_;
    }
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
    ReleaseNextIfShrunk();
  }

  void Reserve(std::size_t entries) {
    std::size_t cap = capacity_;
    while (entries * 10 > cap * 7) cap *= 2;
    if (cap == capacity_) return;
    MoveSome(SIZE_MAX);
    StartGrowing(cap);
    MoveSome(SIZE_MAX);  // asked for ahead of a load: done now, in one pass
  }

  // True while entries are still moving to the larger table (for tests).
  bool growing() const { return old_table_ != nullptr; }
  // Bytes of the next, larger table written ahead of growing (for tests).
  std::size_t prefaulted_bytes() const { return next_capacity_ == 0 ? 0 : prefaulted_bytes_; }

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
    if (next_capacity_ == capacity) {
      buffer_ = std::move(next_buffer_);  // mapped ahead, still all zero
    } else {
      buffer_ = Map(capacity * sizeof(std::uint64_t));  // zeroed: every entry empty
    }
    next_buffer_ = LargeBuffer();
    next_capacity_ = 0;
    table_ = buffer_.as<std::uint64_t>();
    capacity_ = capacity;
    mask_ = capacity - 1;
    WithdrawAnnouncement();  // of a size this table skipped (Reserve)
  }
  LargeBuffer Map(std::size_t bytes) {
    if (pages_ == nullptr) return LargeBuffer(bytes);
    if (bytes == announced_bytes_) announced_bytes_ = 0;  // the Take answers it
    return pages_->Take(bytes);
  }
  // With a supplier: from 0.45 full, announces the next table, taken at 0.5 (PrefaultNext); not
  // earlier, since the supplier holds it from then on. Small ones are not worth a thread's work.
  void AnnounceNext() {
    if (pages_ == nullptr || announced_bytes_ != 0 || next_capacity_ != 0) return;
    if (size_ * 20 < capacity_ * 9) return;
    const std::size_t next_bytes = capacity_ * 2 * sizeof(std::uint64_t);
    if (next_bytes < LargeBuffer::kHugePage) return;
    pages_->Expect(next_bytes);
    announced_bytes_ = next_bytes;
  }
  void WithdrawAnnouncement() {
    if (announced_bytes_ == 0) return;
    pages_->Cancel(announced_bytes_);
    announced_bytes_ = 0;
  }
  void StartGrowing(std::size_t capacity) {
    old_buffer_ = std::move(buffer_);
    old_table_ = table_;
    old_mask_ = mask_;
    moved_ = 0;
    Allocate(capacity);
  }
  // Moves the next `buckets` positions of the old table, if any, into the new one. Two per
  // insert drain the old table before the new one, twice as large, needs to grow: it starts
  // 35 % full and grows at 70 %, so at least 0.35 of its capacity (the old one's 0.7) in inserts
  // come first.
  void MoveSome(std::size_t buckets) {
    if (old_table_ == nullptr) return;
    const std::size_t old_capacity = old_mask_ + 1;
    const std::size_t end = old_capacity - moved_ < buckets ? old_capacity : moved_ + buckets;
    for (; moved_ < end; ++moved_) {
      const std::uint64_t e = old_table_[moved_];
      if (e != 0 && e != kErased) {
        Place(static_cast<std::uint32_t>(e >> 32), static_cast<std::uint32_t>(e) - 1);
      }
    }
    if (moved_ == old_capacity) {
      old_buffer_ = LargeBuffer();
      old_table_ = nullptr;
    }
  }
  // From half full, maps the next table and writes one page of it every kInsertsPerPage inserts:
  // its cap/256 pages (16 bytes per entry of this table) are done by about 0.6 full, ahead of
  // growing at 0.7.
  void PrefaultNext() {
    if (size_ * 2 < capacity_) {
      AnnounceNext();
      return;
    }
    const std::size_t next_bytes = capacity_ * 2 * sizeof(std::uint64_t);
    if (next_capacity_ != capacity_ * 2) {
      next_buffer_ = Map(next_bytes);
      next_capacity_ = capacity_ * 2;
      prefaulted_bytes_ = 0;
      inserts_since_prefault_ = 0;
    }
    if (prefaulted_bytes_ >= next_bytes || ++inserts_since_prefault_ < kInsertsPerPage) return;
    inserts_since_prefault_ = 0;
    // A zero where the kernel's fresh page has one: what matters is the fault, now.
    static_cast<volatile std::uint8_t*>(next_buffer_.as<std::uint8_t>())[prefaulted_bytes_] = 0;
    prefaulted_bytes_ += kPageBytes;
  }

  // A table that settled back below 0.4 full gives the next one's memory back (it is taken
  // again from 0.5: the gap keeps a size that moves around a threshold from mapping it anew).
  void ReleaseNextIfShrunk() {
    if (size_ * 5 >= capacity_ * 2) return;
    if (next_capacity_ != 0) {
      next_buffer_ = LargeBuffer();
      next_capacity_ = 0;
    }
    WithdrawAnnouncement();
  }

  // Erases `want` from the part of the old table not moved yet, where it must be. A marker
  // takes its place: a backward shift could move an entry into the part already moved.
  void EraseOld(std::uint64_t want) {
    std::size_t i = static_cast<std::uint32_t>(want >> 32) & old_mask_;
    while (i < moved_ || old_table_[i] != want) i = (i + 1) & old_mask_;
    old_table_[i] = kErased;
    --size_;
    ReleaseNextIfShrunk();
  }

  // An old-table entry erased while the table drains: slot + 1 == 0 is never a real entry.
  static constexpr std::uint64_t kErased = std::uint64_t{1} << 32;
  static constexpr std::size_t kMovedPerInsert = 2;
  static constexpr std::size_t kPageBytes = 4096;
  static constexpr std::size_t kInsertsPerPage = 24;

  PageSupplier* pages_;
  std::size_t announced_bytes_ = 0;  // the next table's size, announced to pages_ and not taken
  LargeBuffer buffer_;
  std::uint64_t* table_ = nullptr;
  std::size_t capacity_ = 0;
  std::size_t mask_ = 0;
  std::size_t size_ = 0;
  // The table being drained into this one while growing, else null.
  LargeBuffer old_buffer_;
  std::uint64_t* old_table_ = nullptr;
  std::size_t old_mask_ = 0;
  std::size_t moved_ = 0;  // old positions below this one were moved
  // The next table, mapped ahead and written a page at a time (PrefaultNext), else empty.
  LargeBuffer next_buffer_;
  std::size_t next_capacity_ = 0;
  std::size_t prefaulted_bytes_ = 0;
  std::size_t inserts_since_prefault_ = 0;
};

}  // namespace statesync::detail
