// What the replication adapters report: events worth an alert or a log line, and the counters of
// refused input.
//
// Thread-safety: plain values. An EventSink is called from the adapters' threads (possibly two
// at once) and must not block.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>

#include "statesync/schemas/codec.h"

namespace statesync::replication {

struct ReplicationEvent {
  enum class Kind : std::uint8_t {
    kPeerJoined,   // a subordinate said HELLO (text: CONTINUE or SNAPSHOT, from where)
    kPeerLost,     // no word from a subordinate (or the primary) for the peer timeout
    kSyncTimeout,  // a sync write could not get its acknowledgements in time (alert)
    kSnapshotStarted,
    kSnapshotFinished,
    kFork,         // a history left the primary's; the divergent tail went to quarantine
    kBadInput,     // a message was refused (text: the reason)
    kBlobCorrupt,  // a received blob failed its checksum and is received again
    kCaughtUp,     // a subordinate reached the primary's head
  };
  Kind kind;
  std::string peer;  // the other node's id, when there is one
  std::string text;  // a full sentence for the log and the alert
};
using EventSink = std::function<void(const ReplicationEvent&)>;

std::string_view EventKindName(ReplicationEvent::Kind kind);

// Refused input, by reason. Every refusal is also logged with its reason (rate-limited).
struct InputCounters {
  std::array<std::uint64_t, wire::kDecodeErrorCount> decode{};  // by wire::DecodeError
  std::uint64_t stale_epoch = 0;   // from an epoch older than the newest seen
  std::uint64_t bad_batch = 0;     // a batch that breaks the stream's rules (seq, epoch, kind)
  std::uint64_t bad_record = 0;    // a record that does not verify as its table's type
  std::uint64_t gap = 0;           // a batch that does not follow the applied position
  std::uint64_t unexpected = 0;    // a message this role does not take, or of another session
  std::uint64_t blob_corrupt = 0;  // a chunk or blob whose checksum does not match
  // Not errors, so not in total(): messages of a connection or session that a new HELLO
  // replaced, still in flight when it went out (dropped quietly).
  std::uint64_t late = 0;
  std::uint64_t total() const {
    std::uint64_t n = stale_epoch + bad_batch + bad_record + gap + unexpected + blob_corrupt;
    for (std::size_t i = 1; i < decode.size(); ++i) n += decode[i];
    return n;
  }
};

}  // namespace statesync::replication
