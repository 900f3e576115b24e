// Basic vocabulary of the session table and of replication: tables, positions in a history,
// delta kinds, time and the per-table sync policy.
//
// Thread-safety: plain values.
#pragma once

#include <chrono>
#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace statesync {

// Absolute wall-clock time in milliseconds since the Unix epoch. The pure components never read
// a clock: time reaches them as a value (Tick(now)), which keeps every scenario deterministic.
using TimePoint = std::chrono::time_point<std::chrono::system_clock, std::chrono::milliseconds>;
inline constexpr TimePoint kNever{};  // an expiry deadline of zero means "never expires"

using Epoch = std::uint64_t;
using Seq = std::uint64_t;

// A place in a replication history: seq is gap-free and increasing within the stream; the epoch
// increases at every promotion while seq carries on.
struct Position {
  Epoch epoch = 0;
  Seq seq = 0;
  auto operator<=>(const Position&) const = default;
};
// "(epoch, seq)", for log lines and errors.
inline std::string ToString(Position p) {
  return "(" + std::to_string(p.epoch) + ", " + std::to_string(p.seq) + ")";
}

enum class TableId : std::uint16_t {
  kFwSessions = 1,
  kCalls = 2,
  kCdrs = 3,
  kBlobs = 4,
  kFirstUser = 16,  // user tables with opaque values use ids from here on
};
inline constexpr TableId UserTable(std::uint16_t n) {
  return static_cast<TableId>(static_cast<std::uint16_t>(TableId::kFirstUser) + n);
}
inline bool IsUserTable(TableId t) {
  return t >= TableId::kFirstUser;
}
std::string TableName(TableId t);  // "fw_sessions", "calls", ..., "user_16"
// The inverse of TableName: nothing for a name that is not a table's (a user id below 16).
std::optional<TableId> ParseTableName(std::string_view name);

enum class DeltaKind : std::uint8_t { kUpsert = 0, kDelete = 1, kExpire = 2 };

// Per-table replication policy (the firewall's session-pickup knobs).
struct SyncPolicy {
  // A record younger than this is not replicated; one that reaches this age is emitted then,
  // and one that is deleted or expires younger is never sent at all. A change of the delay
  // applies to records created after it; those already held keep their release time.
  std::chrono::milliseconds pickup_delay{0};
  // Replicate UDP, ICMP and ICMPv6 firewall sessions. Off: they stay local to the primary.
  // This and `expectations` are decided when a record is created and hold for its life.
  bool connectionless = true;
  // Replicate firewall sessions that were expected by a helper (they have an expectation
  // parent). Off: they stay local to the primary.
  bool expectations = true;
};

}  // namespace statesync
