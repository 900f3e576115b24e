// Messages of the replication protocol: plain structs for the control messages, a builder for
// delta batches, and their encoding into wire frames (see docs/wire-protocol.md). Decoding goes
// through wire::Decode; the From() functions then copy a verified FlatBuffers table into its
// struct.
//
// Thread-safety: the functions are stateless; a DeltaBatchBuilder belongs to one thread.
#pragma once

#include <flatbuffers/flatbuffers.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "statesync/replication/store.h"
#include "statesync/schemas/codec.h"
#include "statesync/sessiontable/session_table.h"

namespace statesync::replication {

// What every envelope carries about its sender.
struct EnvelopeHeader {
  std::uint64_t cluster_id = 0;
  std::string_view sender;
  Epoch epoch = 0;  // the sender's newest epoch (fencing)
};

struct HelloMsg {
  std::string node_id;
  std::string replication_id;
  Position last_applied;
  std::uint64_t session = 0;
  std::vector<Position> history;
  BlobCursor blob_next;
  std::uint32_t credit_batches = 0;
  std::uint32_t credit_blob_chunks = 0;
};

struct AckMsg {
  std::string node_id;
  Position applied;
  Position persisted;
  std::uint32_t credit_batches = 0;
  std::uint64_t session = 0;
  std::uint64_t received = 0;
  BlobCursor blob_next;
  std::uint64_t blob_received = 0;
  std::uint32_t credit_blob_chunks = 0;
};

struct ContinueMsg {
  std::string replication_id;
  Position from;
  std::uint64_t session = 0;
  Seq head = 0;
};

struct ForkMsg {
  std::string replication_id;
  Position common;
  std::uint64_t session = 0;
};

struct SnapshotEndMsg {
  std::uint64_t snapshot_id = 0;
  std::string replication_id;
  Position position;
  std::uint64_t records = 0;
  std::vector<Position> history;
};

struct BlobChunkMsg {
  BlobInfo info;
  std::uint64_t offset = 0;
  std::string_view data;  // views the frame it was decoded from
  std::uint64_t chunk_xxh64 = 0;
};

std::string Encode(const EnvelopeHeader& h, const HelloMsg& m);
std::string Encode(const EnvelopeHeader& h, const AckMsg& m);
std::string Encode(const EnvelopeHeader& h, const ContinueMsg& m);
std::string Encode(const EnvelopeHeader& h, const ForkMsg& m);
std::string Encode(const EnvelopeHeader& h, const SnapshotEndMsg& m);
std::string Encode(const EnvelopeHeader& h, const BlobChunkMsg& m);
// The primary's keepalive on a replication connection: a Heartbeat carrying its head seq.
std::string EncodeKeepalive(const EnvelopeHeader& h, Seq head);
std::string EncodeSnapshotChunk(const EnvelopeHeader& h, std::uint64_t snapshot_id,
                                std::span<const StoreSnapshot::Record> records,
                                std::uint64_t records_total, std::uint64_t bytes_total);

HelloMsg From(const fb::Hello& m);
AckMsg From(const fb::Ack& m);
ContinueMsg From(const fb::Continue& m);
ForkMsg From(const fb::Fork& m);
SnapshotEndMsg From(const fb::SnapshotEnd& m);
BlobChunkMsg From(const fb::BlobChunk& m);

// A delta as a view into a verified FlatBuffer.
DeltaView ViewOf(const fb::Delta& d);

// Checks a received DeltaBatch: at least one delta, seq consecutive and increasing, one epoch,
// no epoch newer than the envelope's, known kinds. Returns why not, or an empty string.
std::string CheckBatch(const fb::DeltaBatch& batch, Epoch envelope_epoch);

// Collects deltas into a DeltaBatch frame. Closing a batch is the caller's choice (size,
// deadline, an epoch change).
class DeltaBatchBuilder {
 public:
  DeltaBatchBuilder();
  void Add(const DeltaView& d);
  bool empty() const { return offsets_.empty(); }
  std::size_t deltas() const { return offsets_.size(); }
  std::size_t bytes() const { return builder_.GetSize(); }
  Position first() const { return first_; }
  Position last() const { return last_; }
  // Returns the frame and starts a new batch.
  std::string Finish(const EnvelopeHeader& h, std::string_view replication_id);

 private:
  flatbuffers::FlatBufferBuilder builder_;
  std::vector<flatbuffers::Offset<fb::Delta>> offsets_;
  Position first_;
  Position last_;
};

// A batch sent again under another envelope (a promoted node serving batches its old primary
// sent, or a batch cut to the deltas after `after`).
std::string Rewrap(const fb::DeltaBatch& batch, const EnvelopeHeader& h, Seq after = 0);

// The point where two histories part. `mine` and `theirs` are lists of (epoch, first seq),
// oldest first; heads are the last seq each holds. Returns the last position both share, and
// whether `theirs` holds anything beyond it (a divergent tail that must be quarantined).
struct ForkPoint {
  Position common;
  bool diverged = false;
};
ForkPoint FindFork(std::span<const Position> mine, Seq my_head, std::span<const Position> theirs,
                   Position their_last);

}  // namespace statesync::replication
