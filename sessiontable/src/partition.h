// Partition: the storage of one kind of record inside the SessionTable. Records live in slots of
// a chunked arena (stable addresses, no copy when it grows); a SlotIndex maps a key's hash to
// its slot, so the index costs 8 bytes an entry (about 13 a record) instead of a copy of the key.
// Firewall partitions also keep an expiry wheel and the expectation parents (rare, so in a side map
// rather than in every slot).
//
// Internal to sessiontable. Thread-safety: none (owned by one SessionTable).
#pragma once

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <boost/unordered/unordered_flat_map.hpp>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <queue>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "large_buffer.h"
#include "slot_index.h"
#include "statesync/sessiontable/records.h"
#include "statesync/sessiontable/session_table.h"

namespace statesync::detail {

inline constexpr std::uint32_t kNoSlot = 0xffffffffu;

// Slot state bits.
enum SlotFlag : std::uint8_t {
  kLive = 1,        // in use and in the index
  kTombstone = 2,   // deleted; the delete delta is still pending, so the key stays indexed
  kExpired = 4,     // with kTombstone: the delete came from expiry
  kPending = 8,     // has an entry in the change log (pending_seq32 tells which)
  kHeld = 16,       // younger than pickup_delay, not yet in the log
  kLocal = 32,      // kept on this node by the table's policy
  kHasParent = 64,  // firewall: the expectation parent is in the side map
};

// ---- firewall sessions: a compact layout for IPv4, a wide one for IPv6 ----
template <bool kV6>
struct FwTraits {
  static constexpr bool kExpires = true;
  using Addr = std::conditional_t<kV6, std::array<std::uint8_t, 16>, std::uint32_t>;

  struct Key {
    Addr src{};
    Addr dst{};
    std::uint16_t sport = 0;
    std::uint16_t dport = 0;
    std::uint16_t zone = 0;
    std::uint8_t proto = 0;
    bool operator==(const Key&) const = default;
  };

  // Field order packs the IPv4 slot into 96 bytes.
  struct Slot {
    std::uint64_t digest;  // the record's hash in the table digest; 0 = not in it
    std::int64_t expiry_ms;
    std::uint64_t orig_packets;
    std::uint64_t orig_bytes;
    std::uint64_t reply_packets;
    std::uint64_t reply_bytes;
    Addr src;
    Addr dst;
    Addr rsrc;
    Addr rdst;
    std::uint32_t status;
    std::uint32_t mark;
    std::uint32_t pending_seq32;  // low 32 bits of the pending log entry's seq
    std::uint32_t sched_sec;      // the expiry wheel second it is filed under; 0 = none
    std::uint16_t sport;
    std::uint16_t dport;
    std::uint16_t zone;
    std::uint16_t rsport;
    std::uint16_t rdport;
    std::uint8_t proto;
    std::uint8_t tcp_state;
    std::uint8_t sctp_state;
    std::uint8_t flags;
  };

  static Addr ToAddr(const IpAddress& a) {
    if constexpr (kV6) {
      return a.bytes;
    } else {
      return a.v4();
    }
  }
  static IpAddress FromAddr(const Addr& a) {
    if constexpr (kV6) {
      return IpAddress::V6(a);
    } else {
      return IpAddress::V4(a);
    }
  }
  static L3Family Family() { return kV6 ? L3Family::IPv6 : L3Family::IPv4; }

  static Key KeyOf(const Slot& s) { return {s.src, s.dst, s.sport, s.dport, s.zone, s.proto}; }
  static Key KeyOf(const Tuple& orig, std::uint16_t zone) {
    return {ToAddr(orig.src), ToAddr(orig.dst), orig.src_port, orig.dst_port, zone, orig.proto};
  }
  static std::uint64_t Hash(const Key& k) {
    constexpr std::size_t kAddr = sizeof(Addr);
    unsigned char b[2 * kAddr + 7];
    std::memcpy(b, &k.src, kAddr);
    std::memcpy(b + kAddr, &k.dst, kAddr);
    std::memcpy(b + 2 * kAddr, &k.sport, 2);
    std::memcpy(b + 2 * kAddr + 2, &k.dport, 2);
    std::memcpy(b + 2 * kAddr + 4, &k.zone, 2);
    b[2 * kAddr + 6] = k.proto;
    return XXH3_64bits(b, sizeof(b));
  }
  static bool Matches(const Slot& s, const Key& k) {
    return s.src == k.src && s.dst == k.dst && s.sport == k.sport && s.dport == k.dport &&
           s.zone == k.zone && s.proto == k.proto;
  }

  // Copies the record into the slot; leaves flags and bookkeeping alone.
  static void Write(Slot& s, const FirewallSession& f) {
    s.expiry_ms = f.expiry.time_since_epoch().count();
    s.orig_packets = f.orig_packets;
    s.orig_bytes = f.orig_bytes;
    s.reply_packets = f.reply_packets;
    s.reply_bytes = f.reply_bytes;
    s.src = ToAddr(f.orig.src);
    s.dst = ToAddr(f.orig.dst);
    s.rsrc = ToAddr(f.reply.src);
    s.rdst = ToAddr(f.reply.dst);
    s.status = f.status;
    s.mark = f.mark;
    s.sport = f.orig.src_port;
    s.dport = f.orig.dst_port;
    s.zone = f.zone;
    s.rsport = f.reply.src_port;
    s.rdport = f.reply.dst_port;
    s.proto = f.orig.proto;
    s.tcp_state = static_cast<std::uint8_t>(f.tcp_state);
    s.sctp_state = static_cast<std::uint8_t>(f.sctp_state);
  }
  static void Read(const Slot& s, FirewallSession* f) {
    f->orig = Tuple{FromAddr(s.src), FromAddr(s.dst), s.sport, s.dport, Family(), s.proto};
    f->reply = Tuple{FromAddr(s.rsrc), FromAddr(s.rdst), s.rsport, s.rdport, Family(), s.proto};
    f->zone = s.zone;
    f->tcp_state = static_cast<TcpState>(s.tcp_state);
    f->sctp_state = static_cast<SctpState>(s.sctp_state);
    f->status = s.status;
    f->mark = s.mark;
    f->expiry = TimePoint(std::chrono::milliseconds(s.expiry_ms));
    f->orig_packets = s.orig_packets;
    f->orig_bytes = s.orig_bytes;
    f->reply_packets = s.reply_packets;
    f->reply_bytes = s.reply_bytes;
  }
};

// ---- opaque records: calls, CDRs, blobs metadata and user tables ----
struct OpaqueTraits {
  static constexpr bool kExpires = false;
  using Key = std::string_view;
  struct Slot {
    std::string key;
    std::string value;
    std::uint64_t digest = 0;
    std::uint32_t pending_seq32 = 0;
    std::uint32_t sched_sec = 0;
    std::uint8_t flags = 0;
  };
  static Key KeyOf(const Slot& s) { return s.key; }
  static std::uint64_t Hash(Key k) { return XXH3_64bits(k.data(), k.size()); }
  static bool Matches(const Slot& s, Key k) { return s.key == k; }
};

// The order-independent digest of one table: per bucket of key hashes, the sum (mod 2^64) of
// the hashes of the records in it. Sums commute, so two nodes that hold the same records have
// the same digest whatever order they got them in, and a change costs one subtraction and one
// addition.
struct DigestState {
  std::array<std::uint64_t, kDigestBuckets> buckets{};
  std::uint64_t records = 0;
};

inline std::size_t DigestBucket(std::uint64_t key_hash) {
  static_assert(kDigestBuckets == 256);
  return static_cast<std::size_t>(key_hash >> 56);
}

// The hash a record contributes: its table, key (through the key's hash) and value bytes.
// Never 0, which marks a record not in the digest.
inline std::uint64_t RecordDigest(TableId table, std::uint64_t key_hash, std::string_view value) {
  const std::uint64_t seed = key_hash ^ (static_cast<std::uint64_t>(table) * 0x9E3779B97F4A7C15ull);
  const std::uint64_t h = XXH3_64bits_withSeed(value.data(), value.size(), seed);
  return h == 0 ? 1 : h;
}

template <typename TraitsT>
class Partition {
 public:
  using Traits = TraitsT;
  using Slot = typename Traits::Slot;
  using Key = typename Traits::Key;
  // Firewall records are plain data and live in huge-page chunks of 64Ki (zeroed memory is an
  // empty slot); opaque records hold strings and use small ordinary chunks.
  static constexpr bool kPlainSlots = std::is_trivially_default_constructible_v<Slot>;
  static constexpr std::uint32_t kChunkBits = kPlainSlots ? 16 : 12;
  static constexpr std::uint32_t kChunkSlots = 1u << kChunkBits;
  static constexpr std::size_t kChunkBytes = sizeof(Slot) * kChunkSlots;  // plain slots
  static constexpr std::uint32_t kWheelBuckets = 4096;  // one second each: a 68-minute turn

  // `pages` (may be null) must outlive the partition.
  Partition(TableId table, std::uint16_t id, DigestState* digest, PageSupplier* pages)
      : table_(table), id_(id), digest_(digest), pages_(pages), index_(pages) {}
  ~Partition() {
    // The chunk after the last one was announced (AddChunk).
    if (pages_ != nullptr && !chunk_memory_.empty()) pages_->Cancel(kChunkBytes);
  }
  Partition(const Partition&) = delete;
  Partition& operator=(const Partition&) = delete;

  TableId table() const { return table_; }
  std::uint16_t id() const { return id_; }

  Slot& at(std::uint32_t i) { return chunks_[i >> kChunkBits][i & (kChunkSlots - 1)]; }
  const Slot& at(std::uint32_t i) const { return chunks_[i >> kChunkBits][i & (kChunkSlots - 1)]; }
  std::uint32_t high_water() const { return high_; }

  // Includes tombstones (a pending delete keeps its key indexed so that it can be revived).
  std::optional<std::uint32_t> Find(const Key& k) const { return Find(k, Traits::Hash(k)); }
  std::optional<std::uint32_t> Find(const Key& k, std::uint64_t hash) const {
    return index_.Find(hash, [&](std::uint32_t i) { return Traits::Matches(at(i), k); });
  }
  // Starts loading the index entry of a key that a batch will look up soon.
  void PrefetchIndex(std::uint64_t hash) const { index_.Prefetch(hash); }
  // Loads both cache lines of the record that the index's first entry with this hash points to
  // (Touch: plain loads, not prefetches), and returns that slot, or kNoSlot.
  std::uint32_t LoadCandidate(std::uint64_t hash) const {
    auto i = index_.Find(hash, [](std::uint32_t) { return true; });
    if (!i) return kNoSlot;
    const char* p = reinterpret_cast<const char*>(&at(*i));
    Touch(p);
    Touch(p + sizeof(Slot) - 1);
    return *i;
  }
  // Starts loading a record (both of its cache lines) that Drain will read soon.
  void PrefetchSlot(std::uint32_t i) const {
    const char* p = reinterpret_cast<const char*>(&at(i));
    __builtin_prefetch(p);
    __builtin_prefetch(p + sizeof(Slot) - 1);
  }

  // A zeroed slot; the caller writes the record, then calls Index().
  std::uint32_t Allocate() {
    std::uint32_t i;
    if (!free_.empty()) {
      i = free_.back();
      free_.pop_back();
    } else {
      if (high_ == chunks_.size() * kChunkSlots) AddChunk();
      i = high_++;
    }
    at(i) = Slot{};
    return i;
  }
  void Index(std::uint32_t i) { Index(i, Traits::Hash(Traits::KeyOf(at(i)))); }
  void Index(std::uint32_t i, std::uint64_t hash) {
    index_.Insert(hash, i);
    at(i).flags |= kLive;
    ++visible_;
  }
  // Sets the record's contribution to the table digest (0 takes it out).
  void SetDigest(std::uint32_t i, std::uint64_t record_hash) {
    Slot& s = at(i);
    if (s.digest == record_hash) return;
    auto& bucket = digest_->buckets[DigestBucket(Traits::Hash(Traits::KeyOf(s)))];
    if (s.digest != 0) {
      bucket -= s.digest;
      --digest_->records;
    }
    if (record_hash != 0) {
      bucket += record_hash;
      ++digest_->records;
    }
    s.digest = record_hash;
  }
  const DigestState& digest() const { return *digest_; }

  // Removes the record entirely: from the index, the side maps, the digest, and back to the free
  // list.
  void Free(std::uint32_t i) {
    Slot& s = at(i);
    if (s.digest != 0) SetDigest(i, 0);
    index_.Erase(Traits::Hash(Traits::KeyOf(s)), i);
    if (s.flags & kHasParent) parents_.erase(i);
    if (s.flags & kHeld) held_release_.erase(i);
    if (!(s.flags & kTombstone)) --visible_;
    s.flags = 0;
    s.sched_sec = 0;
    if constexpr (std::is_same_v<Traits, OpaqueTraits>) {
      std::string().swap(s.key);
      std::string().swap(s.value);
    }
    free_.push_back(i);
  }
  void Reserve(std::size_t more) { index_.Reserve(index_.size() + more); }
  void MarkTombstone(std::uint32_t i, bool expired) {
    Slot& s = at(i);
    if (!(s.flags & kTombstone)) --visible_;
    s.flags |= kTombstone;
    // No longer filed in the expiry wheel (its entries there are now stale); a revival files
    // it again through Schedule.
    s.sched_sec = 0;
    if (expired) {
      s.flags |= kExpired;
    } else {
      s.flags &= static_cast<std::uint8_t>(~kExpired);
    }
  }
  void Revive(std::uint32_t i) {
    Slot& s = at(i);
    if (s.flags & kTombstone) ++visible_;
    s.flags &= static_cast<std::uint8_t>(~(kTombstone | kExpired));
  }
  std::size_t visible() const { return visible_; }

  // ---- expectation parents (firewall) ----
  void SetParent(std::uint32_t i, const std::optional<Tuple>& parent) {
    Slot& s = at(i);
    if (parent) {
      parents_[i] = *parent;
      s.flags |= kHasParent;
    } else if (s.flags & kHasParent) {
      parents_.erase(i);
      s.flags &= static_cast<std::uint8_t>(~kHasParent);
    }
  }
  std::optional<Tuple> Parent(std::uint32_t i) const {
    if (!(at(i).flags & kHasParent)) return std::nullopt;
    return parents_.at(i);
  }

  // ---- pickup delay: records held back until they reach their release time ----
  struct HeldEntry {
    std::int64_t release_ms;
    std::uint32_t slot;
    bool operator>(const HeldEntry& o) const { return release_ms > o.release_ms; }
  };
  void Hold(std::uint32_t i, std::int64_t release_ms) {
    at(i).flags |= kHeld;
    held_release_[i] = release_ms;
    held_.push({release_ms, i});
  }
  // Calls `release(slot, release_ms)` for each held record due at `now_ms`, in release order,
  // while it returns true (false: the change log is full, stop for now; the record stays held).
  template <typename Fn>
  void ReleaseDue(std::int64_t now_ms, Fn&& release) {
    while (!held_.empty() && held_.top().release_ms <= now_ms) {
      const HeldEntry e = held_.top();
      auto it = held_release_.find(e.slot);
      if (it == held_release_.end() || it->second != e.release_ms) {
        held_.pop();  // the record died young, or its slot now holds another record
        continue;
      }
      // The record stays held until `release` decides: it may also free the slot.
      const std::uint8_t flags_before = at(e.slot).flags;
      held_release_.erase(it);
      at(e.slot).flags &= static_cast<std::uint8_t>(~kHeld);
      if (!release(e.slot, e.release_ms)) {
        held_release_[e.slot] = e.release_ms;  // not now: the log is full; try next Tick
        at(e.slot).flags = flags_before;
        return;
      }
      held_.pop();
    }
  }

  // ---- expiry wheel ----
  // Files slot i under the second of its deadline. Lazy: a deadline that moves later keeps the
  // earlier filing (checked and refiled when that second comes); only an earlier one refiles.
  void Schedule(std::uint32_t i, std::int64_t expiry_ms) {
    if (expiry_ms <= 0) return;
    Slot& s = at(i);
    // sched_sec 0 means "not filed": a deadline in the first second of 1970 files under 1, and
    // one after 2106 under the last second a uint32 holds.
    std::uint32_t sec = SecondOf(expiry_ms);
    if (sec < next_sec_) sec = next_sec_;  // overdue: the next Tick looks at next_sec_
    if (s.sched_sec == 0 || sec < s.sched_sec) {
      s.sched_sec = sec;
      wheel_[sec % kWheelBuckets].push_back(i);
    }
  }

  // Visits the records whose deadline is <= now_ms and calls `expire(slot)` for each; stops
  // (and resumes there at the next call) when `expire` returns false.
  template <typename Fn>
  void ExpireDue(std::int64_t now_ms, Fn&& expire) {
    const std::uint32_t now_sec = static_cast<std::uint32_t>(now_ms / 1000);
    if (next_sec_ == 0 || now_sec - next_sec_ >= kWheelBuckets) {
      // A first Tick or a jump longer than a turn of the wheel: one pass over every bucket.
      for (std::uint32_t b = 0; b < kWheelBuckets; ++b) {
        if (!ProcessBucket(b, now_sec, now_ms, expire)) return;  // resume with a full pass
      }
    } else {
      for (std::uint32_t sec = next_sec_; sec <= now_sec; ++sec) {
        if (!ProcessBucket(sec % kWheelBuckets, now_sec, now_ms, expire)) {
          next_sec_ = sec;
          return;
        }
      }
    }
    // The current second is only partly over: it is looked at again by the next Tick.
    next_sec_ = now_sec;
  }

  std::size_t wheel_entries() const {
    std::size_t n = 0;
    for (const auto& b : wheel_) n += b.size();
    return n;
  }

 private:
  static std::uint32_t SecondOf(std::int64_t ms) {
    const std::int64_t sec = ms / 1000;
    return static_cast<std::uint32_t>(std::clamp<std::int64_t>(sec, 1, 0xfffffffe));
  }

  template <typename Fn>
  bool ProcessBucket(std::uint32_t b, std::uint32_t now_sec, std::int64_t now_ms, Fn& expire) {
    if (wheel_[b].empty()) return true;
    std::vector<std::uint32_t> items;
    items.swap(wheel_[b]);
    std::vector<std::uint32_t>& keep = wheel_[b];
    for (std::size_t k = 0; k < items.size(); ++k) {
      const std::uint32_t i = items[k];
      Slot& s = at(i);
      if (!(s.flags & kLive) || (s.flags & kTombstone) || s.sched_sec == 0 ||
          s.sched_sec % kWheelBuckets != b) {
        continue;  // a stale filing: the record is gone or filed elsewhere
      }
      if (s.sched_sec > now_sec) {
        keep.push_back(i);  // due on a later turn of the wheel
        continue;
      }
      if (s.expiry_ms <= 0) {
        s.sched_sec = 0;  // no longer expires
        continue;
      }
      if (s.expiry_ms <= now_ms) {
        if (!expire(i)) {
          keep.insert(keep.end(), items.begin() + static_cast<std::ptrdiff_t>(k), items.end());
          return false;
        }
        continue;
      }
      const std::uint32_t sec = SecondOf(s.expiry_ms);
      s.sched_sec = sec;
      if (sec % kWheelBuckets == b) {
        keep.push_back(i);
      } else {
        wheel_[sec % kWheelBuckets].push_back(i);
      }
    }
    return true;
  }

  void AddChunk() {
    if constexpr (kPlainSlots) {
      chunk_memory_.push_back(pages_ != nullptr ? pages_->Take(kChunkBytes)
                                                : LargeBuffer(kChunkBytes));
      chunks_.push_back(chunk_memory_.back().template as<Slot>());
      if (pages_ != nullptr) pages_->Expect(kChunkBytes);  // the one after this
    } else {
      owned_chunks_.push_back(std::make_unique<Slot[]>(kChunkSlots));
      chunks_.push_back(owned_chunks_.back().get());
    }
  }

  TableId table_;
  std::uint16_t id_;
  std::vector<Slot*> chunks_;
  std::vector<LargeBuffer> chunk_memory_;              // plain slots
  std::vector<std::unique_ptr<Slot[]>> owned_chunks_;  // slots with strings
  std::vector<std::uint32_t> free_;
  std::uint32_t high_ = 0;
  std::size_t visible_ = 0;
  DigestState* digest_;  // shared by the partitions of one table (IPv4 and IPv6 sessions)
  PageSupplier* pages_;
  SlotIndex index_;
  boost::unordered_flat_map<std::uint32_t, Tuple> parents_;
  boost::unordered_flat_map<std::uint32_t, std::int64_t> held_release_;
  std::priority_queue<HeldEntry, std::vector<HeldEntry>, std::greater<>> held_;
  std::array<std::vector<std::uint32_t>, Traits::kExpires ? kWheelBuckets : 1> wheel_{};
  std::uint32_t next_sec_ = 0;
};

}  // namespace statesync::detail
