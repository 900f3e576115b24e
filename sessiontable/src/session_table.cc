#include "statesync/sessiontable/session_table.h"

#include <flatbuffers/flatbuffers.h>

#include <algorithm>
#include <boost/unordered/unordered_flat_map.hpp>
#include <vector>

#include "partition.h"
#include "statesync/schemas/codec.h"

namespace statesync {

using detail::DigestBucket;
using detail::DigestState;
using detail::FwTraits;
using detail::OpaqueTraits;
using detail::Partition;
using detail::RecordDigest;

namespace {

constexpr std::uint16_t kFw4Part = 0;
constexpr std::uint16_t kFw6Part = 1;
constexpr std::uint16_t kFirstOpaquePart = 2;
// Pending seqs are kept as their low 32 bits (FullSeq): the log must stay far below 2^32.
constexpr std::size_t kMaxChangeLog = std::size_t{1} << 31;

bool IsConnectionless(std::uint8_t proto) {
  return proto == kProtoUdp || proto == kProtoIcmp || proto == kProtoIcmpV6 ||
         proto == kProtoUdpLite;
}

Mutation Queued(Position p) {
  return {Mutation::Replication::kQueued, p};
}
Mutation Just(Mutation::Replication r) {
  return {r, {}};
}

}  // namespace

class SessionTable::Impl {
 public:
  explicit Impl(const SessionTableOptions& options)
      : pages_(options.pages),
        writable_(options.writable),
        last_(options.start),
        ring_(std::clamp<std::size_t>(options.change_log_capacity, 1, kMaxChangeLog)),
        fw4_(TableId::kFwSessions, kFw4Part, &fw_digest_, pages_.get()),
        fw6_(TableId::kFwSessions, kFw6Part, &fw_digest_, pages_.get()) {}

  // ---- time and policy ----
  std::size_t Tick(TimePoint now) {
    if (now > now_) now_ = now;
    if (!writable_) return 0;
    const std::size_t before = count_;
    const std::int64_t now_ms = now_.time_since_epoch().count();
    ForEachPartition([&](auto& p) {
      p.ReleaseDue(now_ms, [&](std::uint32_t slot, std::int64_t release_ms) {
        return Release(p, slot, release_ms);
      });
    });
    ExpireDue(fw4_, now_ms);
    ExpireDue(fw6_, now_ms);
    return count_ - before;
  }
  TimePoint now() const { return now_; }
  void SetPolicy(TableId t, const SyncPolicy& p) {
    policies_[static_cast<std::uint16_t>(t)] = p;
    if (t == TableId::kFwSessions) fw_policy_ = p;
  }
  SyncPolicy policy(TableId t) const {
    auto it = policies_.find(static_cast<std::uint16_t>(t));
    return it == policies_.end() ? SyncPolicy{} : it->second;
  }

  // ---- mutations ----
  Result<Mutation> UpsertFirewall(const FirewallSession& s) {
    if (Status st = CheckFirewall(s); !st.ok()) return st;
    if (s.orig.family == L3Family::IPv6) {
      return UpsertFw(fw6_, s, FwTraits<true>::Hash(FwTraits<true>::KeyOf(s.orig, s.zone)));
    }
    return UpsertFw(fw4_, s, FwTraits<false>::Hash(FwTraits<false>::KeyOf(s.orig, s.zone)));
  }

  // The batch goes in groups: the index entries of a whole group are requested, then (through
  // the now-cached index) its records, then the group is applied. The cache misses of a group
  // overlap instead of being paid one after the other, and a group's lines (128 index lines,
  // 256 record lines: 24 KiB) stay in the first cache levels until they are used. Measured
  // against a sliding prefetch pipeline: +15 % at 1M sessions, +30 % at 10M (BENCHMARKS.md).
  BatchResult UpsertFirewallBatch(std::span<const FirewallSession> in) {
    constexpr std::size_t kGroup = 128;
    std::uint64_t hashes[kGroup];
    std::uint32_t candidates[kGroup];  // the slot the index points to for that hash, if any
    BatchResult r;
    for (std::size_t base = 0; base < in.size(); base += kGroup) {
      const std::size_t n = std::min(kGroup, in.size() - base);
      for (std::size_t k = 0; k < n; ++k) {
        const FirewallSession& s = in[base + k];
        if (s.orig.family == L3Family::IPv6) {
          hashes[k] = FwTraits<true>::Hash(FwTraits<true>::KeyOf(s.orig, s.zone));
          fw6_.PrefetchIndex(hashes[k]);
        } else {
          hashes[k] = FwTraits<false>::Hash(FwTraits<false>::KeyOf(s.orig, s.zone));
          fw4_.PrefetchIndex(hashes[k]);
        }
      }
      for (std::size_t k = 0; k < n; ++k) {
        candidates[k] = in[base + k].orig.family == L3Family::IPv6 ? fw6_.LoadCandidate(hashes[k])
                                                                   : fw4_.LoadCandidate(hashes[k]);
      }
      for (std::size_t k = 0; k < n; ++k) {
        const FirewallSession& s = in[base + k];
        Result<Mutation> m = Mutation{};
        if (Status st = CheckFirewall(s); !st.ok()) {
          m = st;
        } else if (s.orig.family == L3Family::IPv6) {
          m = UpsertFw(fw6_, s, hashes[k], candidates[k]);
        } else {
          m = UpsertFw(fw4_, s, hashes[k], candidates[k]);
        }
        if (!m.ok()) {
          r.status = m.status();
          return r;
        }
        ++r.applied;
        if (m->replication == Mutation::Replication::kQueued && r.last_queued < m->position) {
          r.last_queued = m->position;
        }
      }
    }
    return r;
  }

  Result<Mutation> Upsert(TableId table, std::string_view key, std::string_view value) {
    if (table == TableId::kFwSessions) {
      auto decoded = DecodeFirewallSession(wire::AsBytes(value));
      if (!decoded.ok()) return decoded.status();
      if (FirewallKey(decoded->orig, decoded->zone) != key) {
        return Status::InvalidArgument("the key does not match the session's orig tuple and zone");
      }
      return UpsertFirewall(*decoded);
    }
    if (Status st = VerifyValue(table, value); !st.ok()) return st;
    return UpsertOpaque(table, key, value);
  }

  // An upsert into an opaque-slot table of a value already known to be valid (just verified,
  // or just encoded by UpsertCall/UpsertCdr).
  Result<Mutation> UpsertOpaque(TableId table, std::string_view key, std::string_view value) {
    if (key.empty()) return Status::InvalidArgument("an empty key in table " + TableName(table));
    auto& p = Opaque(table);
    return UpsertIn(p, key, OpaqueTraits::Hash(key), detail::kNoSlot, false, policy(table),
                    [&](std::uint32_t, OpaqueTraits::Slot& s) {
                      if (s.key.empty()) s.key.assign(key);
                      s.value.assign(value);
                    });
  }

  Result<Mutation> Delete(TableId table, std::string_view key) {
    if (table == TableId::kFwSessions) {
      Tuple orig;
      std::uint16_t zone = 0;
      if (Status st = ParseFirewallKey(key, &orig, &zone); !st.ok()) return st;
      if (orig.family == L3Family::IPv6) {
        return DeleteIn(fw6_, FwTraits<true>::KeyOf(orig, zone));
      }
      return DeleteIn(fw4_, FwTraits<false>::KeyOf(orig, zone));
    }
    auto* p = FindOpaque(table);
    if (p == nullptr) {
      if (!writable_) return ReadOnly();
      return Just(Mutation::Replication::kNotFound);
    }
    return DeleteIn(*p, key);
  }

  // ---- reading ----
  std::optional<FirewallSession> GetFirewall(const Tuple& orig, std::uint16_t zone) const {
    if (orig.family == L3Family::IPv6) return GetFw(fw6_, orig, zone);
    return GetFw(fw4_, orig, zone);
  }

  std::optional<std::string> Get(TableId table, std::string_view key) const {
    if (table == TableId::kFwSessions) {
      Tuple orig;
      std::uint16_t zone = 0;
      if (!ParseFirewallKey(key, &orig, &zone).ok()) return std::nullopt;
      auto s = GetFirewall(orig, zone);
      if (!s) return std::nullopt;
      return EncodeFirewallSession(*s);
    }
    const auto* p = FindOpaque(table);
    if (p == nullptr) return std::nullopt;
    auto slot = p->Find(key);
    if (!slot || (p->at(*slot).flags & detail::kTombstone)) return std::nullopt;
    return p->at(*slot).value;
  }

  void Scan(TableId table, const std::function<void(std::string_view, std::string_view)>& fn,
            std::string_view from, std::string_view to) const {
    auto in_range = [&](std::string_view k) { return k >= from && (to.empty() || k < to); };
    if (table == TableId::kFwSessions) {
      auto scan_fw = [&](const auto& p) {
        for (std::uint32_t i = 0; i < p.high_water(); ++i) {
          if (!Visible(p.at(i).flags)) continue;
          FirewallSession s = ReadFw(p, i);
          const std::string key = FirewallKey(s.orig, s.zone);
          if (!in_range(key)) continue;
          const std::string value = EncodeFirewallSession(s);
          fn(key, value);
        }
      };
      scan_fw(fw4_);
      scan_fw(fw6_);
      return;
    }
    const auto* p = FindOpaque(table);
    if (p == nullptr) return;
    for (std::uint32_t i = 0; i < p->high_water(); ++i) {
      const auto& s = p->at(i);
      if (Visible(s.flags) && in_range(s.key)) fn(s.key, s.value);
    }
  }

  std::size_t size(TableId table) const {
    if (table == TableId::kFwSessions) return fw4_.visible() + fw6_.visible();
    const auto* p = FindOpaque(table);
    return p == nullptr ? 0 : p->visible();
  }
  std::size_t total_size() const {
    std::size_t n = fw4_.visible() + fw6_.visible();
    for (const auto& p : opaque_) n += p->visible();
    return n;
  }

  // ---- digests ----
  const DigestState* DigestOf(TableId table) const {
    if (table == TableId::kFwSessions) return &fw_digest_;
    const auto* p = FindOpaque(table);
    return p == nullptr ? nullptr : &p->digest();
  }
  TableDigest Digest(TableId table) const {
    TableDigest out;
    const DigestState* d = DigestOf(table);
    if (d == nullptr) return out;
    out.records = d->records;
    for (std::uint64_t b : d->buckets) out.sum += b;
    return out;
  }
  DigestBuckets Buckets(TableId table) const {
    const DigestState* d = DigestOf(table);
    return d == nullptr ? DigestBuckets{} : d->buckets;
  }
  void ScanBucket(TableId table, std::size_t bucket,
                  const std::function<void(std::string_view, std::uint64_t)>& fn) const {
    auto scan = [&](const auto& p, auto key_of) {
      for (std::uint32_t i = 0; i < p.high_water(); ++i) {
        const auto& s = p.at(i);
        if (s.digest == 0) continue;
        using T = typename std::remove_cvref_t<decltype(p)>::Traits;
        if (DigestBucket(T::Hash(T::KeyOf(s))) != bucket) continue;
        fn(key_of(p, i), s.digest);
      }
    };
    if (table == TableId::kFwSessions) {
      auto fw_key = [](const auto& p, std::uint32_t i) {
        const FirewallSession f = ReadFw(p, i);
        return FirewallKey(f.orig, f.zone);
      };
      scan(fw4_, fw_key);
      scan(fw6_, fw_key);
      return;
    }
    if (const auto* p = FindOpaque(table)) {
      scan(*p, [](const auto& part, std::uint32_t i) { return std::string(part.at(i).key); });
    }
  }
  std::vector<TableId> tables() const {
    std::vector<TableId> out;
    if (fw4_.high_water() + fw6_.high_water() > 0) out.push_back(TableId::kFwSessions);
    for (const auto& p : opaque_) out.push_back(p->table());
    std::sort(out.begin(), out.end());
    return out;
  }

  // ---- the change log ----
  std::size_t Drain(std::size_t max, const std::function<void(const DeltaView&)>& fn) {
    constexpr std::size_t kAhead = 8;  // records requested ahead of the one being encoded
    std::size_t n = 0;
    while (n < max && count_ > 0) {
      if (count_ > kAhead) {
        std::size_t ahead = head_ + kAhead;
        if (ahead >= ring_.size()) ahead -= ring_.size();
        WithPartition(ring_[ahead].part, [&](auto& p) { p.PrefetchSlot(ring_[ahead].slot); });
      }
      const LogEntry e = ring_[head_];
      DeltaView d;
      d.position = {last_.epoch, first_seq_};
      head_ = head_ + 1 == ring_.size() ? 0 : head_ + 1;
      --count_;
      ++first_seq_;
      WithPartition(e.part, [&](auto& p) { DrainOne(p, e.slot, d, fn); });
      ++n;
    }
    stats_.drained += n;
    return n;
  }
  std::size_t pending() const { return count_; }
  std::size_t capacity() const { return ring_.size(); }
  Position last_position() const { return last_; }

  // ---- subordinate side ----
  // A firewall key parsed, with its index hash. A batch works it out ahead of installing the
  // delta, to prefetch the index entry, and Install takes it from there instead of parsing the
  // key again; `parsed` false (another table, or a key that does not parse) leaves the parsing,
  // and the reporting of a bad key, to Install.
  struct FwKey {
    bool parsed = false;
    Tuple orig;
    std::uint16_t zone = 0;
    std::uint64_t hash = 0;
  };
  static Result<FwKey> ParseFwKey(std::string_view key) {
    FwKey k;
    if (Status st = ParseFirewallKey(key, &k.orig, &k.zone); !st.ok()) return st;
    k.parsed = true;
    k.hash = k.orig.family == L3Family::IPv6
                 ? FwTraits<true>::Hash(FwTraits<true>::KeyOf(k.orig, k.zone))
                 : FwTraits<false>::Hash(FwTraits<false>::KeyOf(k.orig, k.zone));
    return k;
  }

  Status Apply(const DeltaView& d) { return Apply(d, FwKey{}); }
  Status Apply(std::span<const DeltaView> in) {
    constexpr std::size_t kGroup = 64;
    FwKey keys[kGroup];
    for (std::size_t base = 0; base < in.size(); base += kGroup) {
      const std::size_t n = std::min(kGroup, in.size() - base);
      for (std::size_t k = 0; k < n; ++k) {
        keys[k] = FwKey{};
        if (in[base + k].table != TableId::kFwSessions) continue;
        auto parsed = ParseFwKey(in[base + k].key);
        if (!parsed.ok()) continue;
        keys[k] = *parsed;
        if (keys[k].orig.family == L3Family::IPv6) {
          fw6_.PrefetchIndex(keys[k].hash);
        } else {
          fw4_.PrefetchIndex(keys[k].hash);
        }
      }
      for (std::size_t k = 0; k < n; ++k) {
        if (Status st = Apply(in[base + k], keys[k]); !st.ok()) return st;
      }
    }
    return Status::Ok();
  }
  Status Apply(const DeltaView& d, const FwKey& fw_key) {
    if (writable_) return Status::FailedPrecondition("Apply is for a read-only table");
    if (d.position.seq != last_.seq + 1 || d.position.epoch < last_.epoch) {
      return Status::FailedPrecondition("delta (" + std::to_string(d.position.epoch) + ", " +
                                        std::to_string(d.position.seq) + ") does not follow (" +
                                        std::to_string(last_.epoch) + ", " +
                                        std::to_string(last_.seq) + ")");
    }
    if (Status st = Install(d.table, d.kind, d.key, d.value, fw_key); !st.ok()) return st;
    last_ = d.position;
    ++stats_.applied;
    return Status::Ok();
  }
  Status Load(TableId table, std::string_view key, std::string_view value) {
    return Install(table, DeltaKind::kUpsert, key, value);
  }
  void Reserve(TableId table, std::size_t records) {
    if (table == TableId::kFwSessions) {
      fw4_.Reserve(records);
    } else {
      Opaque(table).Reserve(records);
    }
  }
  Status ResetPosition(Position last) {
    if (count_ != 0) {
      return Status::FailedPrecondition("cannot reset the position with " + std::to_string(count_) +
                                        " deltas pending");
    }
    last_ = last;
    return Status::Ok();
  }

  // ---- roles ----
  Status BecomeWritable(Epoch epoch) {
    if (epoch <= last_.epoch) {
      return Status::StaleEpoch("epoch " + std::to_string(epoch) + " is not newer than " +
                                std::to_string(last_.epoch));
    }
    if (count_ != 0) return Status::FailedPrecondition("deltas are pending");
    last_.epoch = epoch;
    writable_ = true;
    return Status::Ok();
  }
  Status BecomeReadOnly() {
    if (count_ != 0) {
      return Status::FailedPrecondition(
          "cannot become read-only with " + std::to_string(count_) +
          " deltas not yet drained: drain them (or hand them to quarantine) first");
    }
    writable_ = false;
    return Status::Ok();
  }
  bool writable() const { return writable_; }
  const SessionTableStats& stats() const { return stats_; }

 private:
  struct LogEntry {
    std::uint32_t slot;
    std::uint16_t part;
  };

  static bool Visible(std::uint8_t flags) {
    return (flags & detail::kLive) && !(flags & detail::kTombstone);
  }
  static Status ReadOnly() {
    return Status::FailedPrecondition("the table is read-only on this node (it is not primary)");
  }

  static Status CheckFirewall(const FirewallSession& s) {
    if (s.orig.family != L3Family::IPv4 && s.orig.family != L3Family::IPv6) {
      return Status::InvalidArgument("a firewall session needs an orig tuple of family 4 or 6");
    }
    if (s.reply.family != s.orig.family) {
      return Status::InvalidArgument("the reply tuple's family differs from the orig tuple's");
    }
    if (s.expectation_parent && s.expectation_parent->family != s.orig.family) {
      return Status::InvalidArgument("the expectation parent's family differs from the session's");
    }
    return Status::Ok();
  }

  template <typename Fn>
  void ForEachPartition(Fn&& fn) {
    fn(fw4_);
    fn(fw6_);
    for (auto& p : opaque_) fn(*p);
  }
  template <typename Fn>
  void WithPartition(std::uint16_t part, Fn&& fn) {
    if (part == kFw4Part) {
      fn(fw4_);
    } else if (part == kFw6Part) {
      fn(fw6_);
    } else {
      fn(*opaque_[part - kFirstOpaquePart]);
    }
  }

  Partition<OpaqueTraits>& Opaque(TableId table) {
    const auto id = static_cast<std::uint16_t>(table);
    auto it = opaque_by_table_.find(id);
    if (it != opaque_by_table_.end()) return *opaque_[it->second];
    const auto part = static_cast<std::uint16_t>(kFirstOpaquePart + opaque_.size());
    opaque_digests_.push_back(std::make_unique<DigestState>());
    opaque_.push_back(std::make_unique<Partition<OpaqueTraits>>(
        table, part, opaque_digests_.back().get(), pages_.get()));
    opaque_by_table_[id] = opaque_.size() - 1;
    return *opaque_.back();
  }
  const Partition<OpaqueTraits>* FindOpaque(TableId table) const {
    auto it = opaque_by_table_.find(static_cast<std::uint16_t>(table));
    return it == opaque_by_table_.end() ? nullptr : opaque_[it->second].get();
  }
  Partition<OpaqueTraits>* FindOpaque(TableId table) {
    auto it = opaque_by_table_.find(static_cast<std::uint16_t>(table));
    return it == opaque_by_table_.end() ? nullptr : opaque_[it->second].get();
  }

  bool LogFull() const { return count_ == ring_.size(); }
  Status LogFullStatus() {
    ++stats_.log_full_refusals;
    return Status::ResourceExhausted("the change log holds " + std::to_string(count_) +
                                     " undrained deltas (its capacity); nothing was changed");
  }
  // REQUIRES: !LogFull().
  Seq Append(std::uint16_t part, std::uint32_t slot) {
    if (count_ == 0) first_seq_ = last_.seq + 1;
    std::size_t at = head_ + count_;
    if (at >= ring_.size()) at -= ring_.size();
    ring_[at] = {slot, part};
    ++count_;
    return ++last_.seq;
  }
  // The full seq of a pending entry from its low 32 bits: pending entries lie within
  // [first_seq_, first_seq_ + count_), a range far shorter than 2^32.
  Seq FullSeq(std::uint32_t seq32) const {
    return first_seq_ + static_cast<std::uint32_t>(seq32 - static_cast<std::uint32_t>(first_seq_));
  }
  Mutation QueuedAt(std::uint32_t seq32) const { return Queued({last_.epoch, FullSeq(seq32)}); }

  template <typename T>
  void Schedule(Partition<T>& p, std::uint32_t i) {
    if constexpr (T::kExpires) p.Schedule(i, p.at(i).expiry_ms);
  }

  // The common path of every upsert on the primary. `write(slot, slot_ref)` copies the record.
  // `hint` is a slot that probably holds the key (kNoSlot: no idea); it spares the index probe.
  template <typename T, typename Writer>
  Result<Mutation> UpsertIn(Partition<T>& p, const typename T::Key& key, std::uint64_t hash,
                            std::uint32_t hint, bool local, const SyncPolicy& policy,
                            Writer&& write) {
    if (!writable_) return ReadOnly();
    std::optional<std::uint32_t> found;
    if (hint != detail::kNoSlot && (p.at(hint).flags & detail::kLive) &&
        T::Matches(p.at(hint), key)) {
      found = hint;
    } else {
      found = p.Find(key, hash);
    }
    if (found) {
      const std::uint32_t i = *found;
      auto& s = p.at(i);
      const std::uint8_t flags = s.flags;
      if (!(flags & (detail::kPending | detail::kLocal | detail::kHeld)) && LogFull()) {
        return LogFullStatus();
      }
      write(i, s);
      Schedule(p, i);
      ++stats_.upserts;
      if (flags & detail::kTombstone) {  // a pending delete, now revived
        p.Revive(i);
        ++stats_.coalesced;
        return QueuedAt(s.pending_seq32);
      }
      if (flags & detail::kLocal) return Just(Mutation::Replication::kLocalOnly);
      if (flags & detail::kHeld) return Just(Mutation::Replication::kHeld);
      if (flags & detail::kPending) {
        ++stats_.coalesced;
        return QueuedAt(s.pending_seq32);
      }
      s.flags |= detail::kPending;
      s.pending_seq32 = static_cast<std::uint32_t>(Append(p.id(), i));
      return QueuedAt(s.pending_seq32);
    }
    const bool held = !local && policy.pickup_delay.count() > 0;
    if (!local && !held && LogFull()) return LogFullStatus();
    const std::uint32_t i = p.Allocate();
    auto& s = p.at(i);
    write(i, s);
    p.Index(i, hash);
    Schedule(p, i);
    ++stats_.upserts;
    if (local) {
      s.flags |= detail::kLocal;
      ++stats_.kept_local;
      return Just(Mutation::Replication::kLocalOnly);
    }
    if (held) {
      p.Hold(i, (now_ + policy.pickup_delay).time_since_epoch().count());
      ++stats_.held;
      return Just(Mutation::Replication::kHeld);
    }
    s.flags |= detail::kPending;
    s.pending_seq32 = static_cast<std::uint32_t>(Append(p.id(), i));
    return QueuedAt(s.pending_seq32);
  }

  template <bool kV6>
  Result<Mutation> UpsertFw(Partition<FwTraits<kV6>>& p, const FirewallSession& f,
                            std::uint64_t hash, std::uint32_t hint = detail::kNoSlot) {
    using T = FwTraits<kV6>;
    const SyncPolicy& pol = fw_policy_;
    const bool local = (!pol.connectionless && IsConnectionless(f.orig.proto)) ||
                       (!pol.expectations && f.expectation_parent.has_value());
    return UpsertIn(p, T::KeyOf(f.orig, f.zone), hash, hint, local, pol,
                    [&](std::uint32_t i, typename T::Slot& s) {
                      T::Write(s, f);
                      p.SetParent(i, f.expectation_parent);
                    });
  }

  template <typename T>
  Result<Mutation> DeleteIn(Partition<T>& p, const typename T::Key& key) {
    if (!writable_) return ReadOnly();
    auto found = p.Find(key);
    if (!found || (p.at(*found).flags & detail::kTombstone)) {
      return Just(Mutation::Replication::kNotFound);
    }
    const std::uint32_t i = *found;
    auto& s = p.at(i);
    if (s.flags & detail::kLocal) {
      p.Free(i);
      ++stats_.deletes;
      return Just(Mutation::Replication::kLocalOnly);
    }
    if (s.flags & detail::kHeld) {
      p.Free(i);
      ++stats_.deletes;
      ++stats_.died_young;
      return Just(Mutation::Replication::kHeld);
    }
    if (s.flags & detail::kPending) {
      p.MarkTombstone(i, false);
      ++stats_.deletes;
      ++stats_.coalesced;
      return QueuedAt(s.pending_seq32);
    }
    if (LogFull()) return LogFullStatus();
    p.MarkTombstone(i, false);
    s.flags |= detail::kPending;
    s.pending_seq32 = static_cast<std::uint32_t>(Append(p.id(), i));
    ++stats_.deletes;
    return QueuedAt(s.pending_seq32);
  }

  // Queues a held record that reached its pickup age; false when the log is full. A record
  // whose deadline came before that age died young: it is removed and never sent.
  template <typename T>
  bool Release(Partition<T>& p, std::uint32_t i, std::int64_t release_ms) {
    auto& s = p.at(i);
    if constexpr (T::kExpires) {
      if (s.expiry_ms > 0 && s.expiry_ms <= release_ms) {
        p.Free(i);
        ++stats_.died_young;
        return true;
      }
    }
    if (LogFull()) return false;
    s.flags |= detail::kPending;
    s.pending_seq32 = static_cast<std::uint32_t>(Append(p.id(), i));
    ++stats_.released;
    return true;
  }

  template <typename T>
  void ExpireDue(Partition<T>& p, std::int64_t now_ms) {
    p.ExpireDue(now_ms, [&](std::uint32_t i) {
      auto& s = p.at(i);
      if (s.flags & detail::kLocal) {
        p.Free(i);
        ++stats_.expired;
        return true;
      }
      if (s.flags & detail::kHeld) {
        p.Free(i);
        ++stats_.died_young;
        return true;
      }
      if (s.flags & detail::kPending) {
        p.MarkTombstone(i, true);
        ++stats_.expired;
        ++stats_.coalesced;
        return true;
      }
      if (LogFull()) return false;
      p.MarkTombstone(i, true);
      s.flags |= detail::kPending;
      s.pending_seq32 = static_cast<std::uint32_t>(Append(p.id(), i));
      ++stats_.expired;
      return true;
    });
  }

  template <bool kV6>
  static FirewallSession ReadFw(const Partition<FwTraits<kV6>>& p, std::uint32_t i) {
    FirewallSession f;
    FwTraits<kV6>::Read(p.at(i), &f);
    f.expectation_parent = p.Parent(i);
    return f;
  }
  template <bool kV6>
  static std::optional<FirewallSession> GetFw(const Partition<FwTraits<kV6>>& p, const Tuple& orig,
                                              std::uint16_t zone) {
    auto i = p.Find(FwTraits<kV6>::KeyOf(orig, zone));
    if (!i || !Visible(p.at(*i).flags)) return std::nullopt;
    return ReadFw(p, *i);
  }

  template <typename T>
  void DrainOne(Partition<T>& p, std::uint32_t i, DeltaView& d,
                const std::function<void(const DeltaView&)>& fn) {
    auto& s = p.at(i);
    d.table = p.table();
    const bool tomb = s.flags & detail::kTombstone;
    d.kind = !tomb ? DeltaKind::kUpsert
                   : ((s.flags & detail::kExpired) ? DeltaKind::kExpire : DeltaKind::kDelete);
    if constexpr (std::is_same_v<T, OpaqueTraits>) {
      key_buf_.assign(s.key);
      d.key = key_buf_;
      if (tomb) {
        d.value = {};
      } else {
        value_buf_.assign(s.value);
        d.value = value_buf_;
      }
    } else {
      const FirewallSession f = ReadFw(p, i);
      key_buf_ = FirewallKey(f.orig, f.zone);
      d.key = key_buf_;
      if (!tomb) {
        builder_.Clear();
        EncodeFirewallSessionTo(f, builder_);
        d.value = std::string_view(reinterpret_cast<const char*>(builder_.GetBufferPointer()),
                                   builder_.GetSize());
      } else {
        d.value = {};
      }
    }
    // Finish the bookkeeping before the callback, so that the table is consistent whatever the
    // callback does (the views point into buffers owned by the table, not into the slot). The
    // digest follows what has been handed out: the replicated state, not local changes still
    // pending or held.
    if (tomb) {
      p.Free(i);
    } else {
      s.flags &= static_cast<std::uint8_t>(~detail::kPending);
      p.SetDigest(i, RecordDigest(d.table, T::Hash(T::KeyOf(s)), d.value));
    }
    fn(d);
  }

  // Installs a replicated or loaded record: no log entry, no policy.
  Status Install(TableId table, DeltaKind kind, std::string_view key, std::string_view value) {
    return Install(table, kind, key, value, FwKey{});
  }
  Status Install(TableId table, DeltaKind kind, std::string_view key, std::string_view value,
                 const FwKey& given) {
    if (table == TableId::kFwSessions) {
      FwKey k = given;
      if (!k.parsed) {
        auto parsed = ParseFwKey(key);
        if (!parsed.ok()) return parsed.status();
        k = *parsed;
      }
      const bool v6 = k.orig.family == L3Family::IPv6;
      if (kind != DeltaKind::kUpsert) {
        if (v6) {
          Remove(fw6_, FwTraits<true>::KeyOf(k.orig, k.zone), k.hash);
        } else {
          Remove(fw4_, FwTraits<false>::KeyOf(k.orig, k.zone), k.hash);
        }
        return Status::Ok();
      }
      auto f = DecodeFirewallSession(wire::AsBytes(value));
      if (!f.ok()) return f.status();
      if (f->orig != k.orig || f->zone != k.zone) {
        return Status::Corruption("a firewall record whose key does not match its orig tuple");
      }
      if (Status st = CheckFirewall(*f); !st.ok()) return st;
      if (v6) {
        InstallFw(fw6_, *f, value, k.hash);
      } else {
        InstallFw(fw4_, *f, value, k.hash);
      }
      return Status::Ok();
    }
    if (kind != DeltaKind::kUpsert) {
      if (auto* p = FindOpaque(table)) Remove(*p, key);
      return Status::Ok();
    }
    if (Status st = VerifyValue(table, value); !st.ok()) return st;
    auto& p = Opaque(table);
    InstallIn(p, key, value, [&](std::uint32_t, OpaqueTraits::Slot& s) {
      if (s.key.empty()) s.key.assign(key);
      s.value.assign(value);
    });
    return Status::Ok();
  }
  template <bool kV6>
  void InstallFw(Partition<FwTraits<kV6>>& p, const FirewallSession& f, std::string_view value,
                 std::uint64_t key_hash) {
    using T = FwTraits<kV6>;
    InstallIn(p, T::KeyOf(f.orig, f.zone), key_hash, value,
              [&](std::uint32_t i, typename T::Slot& s) {
                T::Write(s, f);
                p.SetParent(i, f.expectation_parent);
              });
  }
  template <typename T, typename Writer>
  void InstallIn(Partition<T>& p, const typename T::Key& key, std::string_view value,
                 Writer&& write) {
    InstallIn(p, key, T::Hash(key), value, std::forward<Writer>(write));
  }
  // `value` is the record's encoding as replicated, which is what the digest hashes.
  template <typename T, typename Writer>
  void InstallIn(Partition<T>& p, const typename T::Key& key, std::uint64_t key_hash,
                 std::string_view value, Writer&& write) {
    std::uint32_t i;
    if (auto found = p.Find(key, key_hash)) {
      i = *found;
      write(i, p.at(i));
      p.Revive(i);
    } else {
      i = p.Allocate();
      write(i, p.at(i));
      p.Index(i, key_hash);
    }
    p.SetDigest(i, RecordDigest(p.table(), key_hash, value));
    Schedule(p, i);
  }
  template <typename T>
  void Remove(Partition<T>& p, const typename T::Key& key) {
    Remove(p, key, T::Hash(key));
  }
  template <typename T>
  void Remove(Partition<T>& p, const typename T::Key& key, std::uint64_t hash) {
    auto found = p.Find(key, hash);
    if (!found) return;
    if (p.at(*found).flags & detail::kPending) {
      p.MarkTombstone(*found, false);
    } else {
      p.Free(*found);
    }
  }

  std::shared_ptr<PageSupplier> pages_;  // before the partitions that use it
  bool writable_;
  TimePoint now_{};
  Position last_;
  std::vector<LogEntry> ring_;
  std::size_t head_ = 0;
  std::size_t count_ = 0;
  Seq first_seq_ = 0;      // the seq of ring_[head_] while count_ > 0
  DigestState fw_digest_;  // before the partitions that point to it
  Partition<FwTraits<false>> fw4_;
  Partition<FwTraits<true>> fw6_;
  std::vector<std::unique_ptr<DigestState>> opaque_digests_;
  std::vector<std::unique_ptr<Partition<OpaqueTraits>>> opaque_;
  boost::unordered_flat_map<std::uint16_t, std::size_t> opaque_by_table_;
  boost::unordered_flat_map<std::uint16_t, SyncPolicy> policies_;
  SyncPolicy fw_policy_;  // policies_[fw_sessions], read on every firewall upsert
  SessionTableStats stats_;
  flatbuffers::FlatBufferBuilder builder_{256};
  std::string key_buf_;    // the key of the delta being handed out by Drain
  std::string value_buf_;  // its value, for opaque records
};

SessionTable::SessionTable(SessionTableOptions options) : impl_(std::make_unique<Impl>(options)) {}
SessionTable::~SessionTable() = default;

std::size_t SessionTable::Tick(TimePoint now) {
  return impl_->Tick(now);
}
TimePoint SessionTable::now() const {
  return impl_->now();
}
void SessionTable::SetPolicy(TableId t, const SyncPolicy& p) {
  impl_->SetPolicy(t, p);
}
SyncPolicy SessionTable::policy(TableId t) const {
  return impl_->policy(t);
}
Result<Mutation> SessionTable::UpsertFirewall(const FirewallSession& s) {
  return impl_->UpsertFirewall(s);
}
BatchResult SessionTable::UpsertFirewallBatch(std::span<const FirewallSession> s) {
  return impl_->UpsertFirewallBatch(s);
}
Result<Mutation> SessionTable::UpsertCall(const CallSession& c) {
  return impl_->UpsertOpaque(TableId::kCalls, c.call_id, EncodeCallSession(c));
}
Result<Mutation> SessionTable::UpsertCdr(const Cdr& c) {
  return impl_->UpsertOpaque(TableId::kCdrs, c.id, EncodeCdr(c));
}
Result<Mutation> SessionTable::Upsert(TableId t, std::string_view k, std::string_view v) {
  return impl_->Upsert(t, k, v);
}
Result<Mutation> SessionTable::Delete(TableId t, std::string_view k) {
  return impl_->Delete(t, k);
}
std::optional<FirewallSession> SessionTable::GetFirewall(const Tuple& o, std::uint16_t z) const {
  return impl_->GetFirewall(o, z);
}
std::optional<CallSession> SessionTable::GetCall(std::string_view call_id) const {
  auto v = impl_->Get(TableId::kCalls, call_id);
  if (!v) return std::nullopt;
  auto c = DecodeCallSession(wire::AsBytes(*v));
  if (!c.ok()) return std::nullopt;
  return std::move(c).value();
}
std::optional<Cdr> SessionTable::GetCdr(std::string_view id) const {
  auto v = impl_->Get(TableId::kCdrs, id);
  if (!v) return std::nullopt;
  auto c = DecodeCdr(wire::AsBytes(*v));
  if (!c.ok()) return std::nullopt;
  return std::move(c).value();
}
std::optional<std::string> SessionTable::Get(TableId t, std::string_view k) const {
  return impl_->Get(t, k);
}
void SessionTable::Scan(TableId t,
                        const std::function<void(std::string_view, std::string_view)>& fn,
                        std::string_view from, std::string_view to) const {
  impl_->Scan(t, fn, from, to);
}
std::size_t SessionTable::size(TableId t) const {
  return impl_->size(t);
}
std::size_t SessionTable::total_size() const {
  return impl_->total_size();
}
TableDigest SessionTable::Digest(TableId t) const {
  return impl_->Digest(t);
}
DigestBuckets SessionTable::Buckets(TableId t) const {
  return impl_->Buckets(t);
}
void SessionTable::ScanBucket(
    TableId t, std::size_t bucket,
    const std::function<void(std::string_view, std::uint64_t)>& fn) const {
  impl_->ScanBucket(t, bucket, fn);
}
std::vector<TableId> SessionTable::tables() const {
  return impl_->tables();
}
std::size_t SessionTable::Drain(std::size_t max, const std::function<void(const DeltaView&)>& fn) {
  return impl_->Drain(max, fn);
}
std::size_t SessionTable::pending() const {
  return impl_->pending();
}
std::size_t SessionTable::change_log_capacity() const {
  return impl_->capacity();
}
Position SessionTable::last_position() const {
  return impl_->last_position();
}
Status SessionTable::Apply(const DeltaView& d) {
  return impl_->Apply(d);
}
Status SessionTable::Apply(std::span<const DeltaView> deltas) {
  return impl_->Apply(deltas);
}
Status SessionTable::Load(TableId t, std::string_view k, std::string_view v) {
  return impl_->Load(t, k, v);
}
void SessionTable::Reserve(TableId t, std::size_t n) {
  impl_->Reserve(t, n);
}
Status SessionTable::ResetPosition(Position last) {
  return impl_->ResetPosition(last);
}
Status SessionTable::BecomeWritable(Epoch e) {
  return impl_->BecomeWritable(e);
}
Status SessionTable::BecomeReadOnly() {
  return impl_->BecomeReadOnly();
}
bool SessionTable::writable() const {
  return impl_->writable();
}
const SessionTableStats& SessionTable::stats() const {
  return impl_->stats();
}

}  // namespace statesync
