#include "statesync/replication/messages.h"

#include <xxhash.h>

#include <algorithm>

namespace statesync::replication {
namespace {

using flatbuffers::FlatBufferBuilder;
using flatbuffers::Offset;

std::string Seal(FlatBufferBuilder& b, const EnvelopeHeader& h, fb::Body type, Offset<void> body) {
  auto sender = b.CreateString(h.sender.data(), h.sender.size());
  fb::EnvelopeBuilder e(b);
  e.add_schema_version(wire::kSchemaVersion);
  e.add_cluster_id(h.cluster_id);
  e.add_sender(sender);
  e.add_body_type(type);
  e.add_body(body);
  e.add_epoch(h.epoch);
  b.Finish(e.Finish(), fb::EnvelopeIdentifier());
  return wire::Frame(b);
}

fb::Position Pos(Position p) {
  return fb::Position(p.epoch, p.seq);
}
Position Pos(const fb::Position* p) {
  return p == nullptr ? Position{} : Position{p->epoch(), p->seq()};
}
fb::BlobCursor Cursor(BlobCursor c) {
  return fb::BlobCursor(c.seq, c.offset);
}
BlobCursor Cursor(const fb::BlobCursor* c) {
  return c == nullptr ? BlobCursor{} : BlobCursor{c->seq(), c->offset()};
}
Offset<flatbuffers::Vector<const fb::Position*>> History(FlatBufferBuilder& b,
                                                         std::span<const Position> h) {
  std::vector<fb::Position> v;
  v.reserve(h.size());
  for (Position p : h) v.push_back(Pos(p));
  return b.CreateVectorOfStructs(v);
}
std::vector<Position> History(const flatbuffers::Vector<const fb::Position*>* v) {
  std::vector<Position> out;
  if (v == nullptr) return out;
  for (const fb::Position* p : *v) out.push_back(Pos(p));
  return out;
}
std::string Str(const flatbuffers::String* s) {
  return s == nullptr ? std::string() : s->str();
}
Offset<flatbuffers::Vector<std::uint8_t>> Bytes(FlatBufferBuilder& b, std::string_view v) {
  return b.CreateVector(reinterpret_cast<const std::uint8_t*>(v.data()), v.size());
}

}  // namespace

std::string Encode(const EnvelopeHeader& h, const HelloMsg& m) {
  FlatBufferBuilder b(256);
  auto node = b.CreateString(m.node_id);
  auto rid = b.CreateString(m.replication_id);
  auto hist = History(b, m.history);
  const fb::Position last = Pos(m.last_applied);
  const fb::BlobCursor blob = Cursor(m.blob_next);
  fb::HelloBuilder x(b);
  x.add_node_id(node);
  x.add_replication_id(rid);
  x.add_last_applied(&last);
  x.add_session(m.session);
  x.add_history(hist);
  x.add_blob_next(&blob);
  x.add_credit_batches(m.credit_batches);
  x.add_credit_blob_chunks(m.credit_blob_chunks);
  return Seal(b, h, fb::Body::Hello, x.Finish().Union());
}

std::string Encode(const EnvelopeHeader& h, const AckMsg& m) {
  FlatBufferBuilder b(192);
  auto node = b.CreateString(m.node_id);
  const fb::Position applied = Pos(m.applied);
  const fb::Position persisted = Pos(m.persisted);
  const fb::BlobCursor blob = Cursor(m.blob_next);
  fb::AckBuilder x(b);
  x.add_node_id(node);
  x.add_applied(&applied);
  x.add_persisted(&persisted);
  x.add_credit_batches(m.credit_batches);
  x.add_session(m.session);
  x.add_received(m.received);
  x.add_blob_next(&blob);
  x.add_blob_received(m.blob_received);
  x.add_credit_blob_chunks(m.credit_blob_chunks);
  return Seal(b, h, fb::Body::Ack, x.Finish().Union());
}

std::string Encode(const EnvelopeHeader& h, const ContinueMsg& m) {
  FlatBufferBuilder b(128);
  auto rid = b.CreateString(m.replication_id);
  const fb::Position from = Pos(m.from);
  fb::ContinueBuilder x(b);
  x.add_replication_id(rid);
  x.add_from(&from);
  x.add_session(m.session);
  x.add_head(m.head);
  return Seal(b, h, fb::Body::Continue, x.Finish().Union());
}

std::string Encode(const EnvelopeHeader& h, const ForkMsg& m) {
  FlatBufferBuilder b(128);
  auto rid = b.CreateString(m.replication_id);
  const fb::Position common = Pos(m.common);
  fb::ForkBuilder x(b);
  x.add_replication_id(rid);
  x.add_common(&common);
  x.add_session(m.session);
  return Seal(b, h, fb::Body::Fork, x.Finish().Union());
}

std::string Encode(const EnvelopeHeader& h, const SnapshotEndMsg& m) {
  FlatBufferBuilder b(256);
  auto rid = b.CreateString(m.replication_id);
  auto hist = History(b, m.history);
  const fb::Position pos = Pos(m.position);
  fb::SnapshotEndBuilder x(b);
  x.add_snapshot_id(m.snapshot_id);
  x.add_replication_id(rid);
  x.add_position(&pos);
  x.add_records(m.records);
  x.add_history(hist);
  return Seal(b, h, fb::Body::SnapshotEnd, x.Finish().Union());
}

std::string Encode(const EnvelopeHeader& h, const BlobChunkMsg& m) {
  FlatBufferBuilder b(m.data.size() + 512);
  auto id = b.CreateString(m.info.blob_id);
  auto data = Bytes(b, m.data);
  auto name = b.CreateString(m.info.name);
  fb::BlobChunkBuilder x(b);
  x.add_blob_id(id);
  x.add_kind(static_cast<fb::BlobKind>(m.info.kind));
  x.add_offset(m.offset);
  x.add_total_size(m.info.size);
  x.add_data(data);
  x.add_chunk_xxh64(XXH3_64bits(m.data.data(), m.data.size()));
  x.add_blob_xxh64(m.info.xxh64);
  x.add_name(name);
  x.add_blob_seq(m.info.seq);
  return Seal(b, h, fb::Body::BlobChunk, x.Finish().Union());
}

std::string EncodeKeepalive(const EnvelopeHeader& h, Seq head) {
  FlatBufferBuilder b(128);
  auto node = b.CreateString(h.sender.data(), h.sender.size());
  fb::HeartbeatBuilder x(b);
  x.add_node_id(node);
  x.add_epoch(h.epoch);
  x.add_applied_seq(head);
  x.add_effective_role(fb::Role::Primary);
  return Seal(b, h, fb::Body::Heartbeat, x.Finish().Union());
}

std::string EncodeSnapshotChunk(const EnvelopeHeader& h, std::uint64_t snapshot_id,
                                std::span<const StoreSnapshot::Record> records,
                                std::uint64_t records_total, std::uint64_t bytes_total) {
  std::size_t bytes = 256;
  for (const auto& r : records) bytes += r.key.size() + r.value.size() + 48;
  FlatBufferBuilder b(bytes);
  std::vector<Offset<fb::Delta>> deltas;
  deltas.reserve(records.size());
  const fb::Position zero(0, 0);
  for (const auto& r : records) {
    auto k = Bytes(b, r.key);
    auto v = Bytes(b, r.value);
    fb::DeltaBuilder d(b);
    d.add_position(&zero);
    d.add_table_id(static_cast<std::uint16_t>(r.table));
    d.add_kind(fb::DeltaKind::Upsert);
    d.add_key(k);
    d.add_value(v);
    deltas.push_back(d.Finish());
  }
  auto vec = b.CreateVector(deltas);
  fb::SnapshotChunkBuilder x(b);
  x.add_snapshot_id(snapshot_id);
  x.add_records(vec);
  x.add_records_total(records_total);
  x.add_bytes_total(bytes_total);
  return Seal(b, h, fb::Body::SnapshotChunk, x.Finish().Union());
}

HelloMsg From(const fb::Hello& m) {
  HelloMsg o;
  o.node_id = Str(m.node_id());
  o.replication_id = Str(m.replication_id());
  o.last_applied = Pos(m.last_applied());
  o.session = m.session();
  o.history = History(m.history());
  o.blob_next = Cursor(m.blob_next());
  o.credit_batches = m.credit_batches();
  o.credit_blob_chunks = m.credit_blob_chunks();
  return o;
}

AckMsg From(const fb::Ack& m) {
  AckMsg o;
  o.node_id = Str(m.node_id());
  o.applied = Pos(m.applied());
  o.persisted = Pos(m.persisted());
  o.credit_batches = m.credit_batches();
  o.session = m.session();
  o.received = m.received();
  o.blob_next = Cursor(m.blob_next());
  o.blob_received = m.blob_received();
  o.credit_blob_chunks = m.credit_blob_chunks();
  return o;
}

ContinueMsg From(const fb::Continue& m) {
  return {Str(m.replication_id()), Pos(m.from()), m.session(), m.head()};
}

ForkMsg From(const fb::Fork& m) {
  return {Str(m.replication_id()), Pos(m.common()), m.session()};
}

SnapshotEndMsg From(const fb::SnapshotEnd& m) {
  return {m.snapshot_id(), Str(m.replication_id()), Pos(m.position()), m.records(),
          History(m.history())};
}

BlobChunkMsg From(const fb::BlobChunk& m) {
  BlobChunkMsg o;
  o.info.seq = m.blob_seq();
  o.info.blob_id = Str(m.blob_id());
  o.info.kind = static_cast<std::uint8_t>(m.kind());
  o.info.name = Str(m.name());
  o.info.size = m.total_size();
  o.info.xxh64 = m.blob_xxh64();
  o.offset = m.offset();
  if (m.data()) o.data = wire::AsChars({m.data()->data(), m.data()->size()});
  o.chunk_xxh64 = m.chunk_xxh64();
  return o;
}

DeltaView ViewOf(const fb::Delta& d) {
  DeltaView v;
  v.position = Pos(d.position());
  v.table = static_cast<TableId>(d.table_id());
  v.kind = static_cast<DeltaKind>(d.kind());
  if (d.key()) v.key = wire::AsChars({d.key()->data(), d.key()->size()});
  if (d.value()) v.value = wire::AsChars({d.value()->data(), d.value()->size()});
  return v;
}

std::string CheckBatch(const fb::DeltaBatch& batch, Epoch envelope_epoch) {
  const auto* deltas = batch.deltas();
  if (deltas == nullptr || deltas->size() == 0) return "a delta batch without deltas";
  Position prev;
  for (flatbuffers::uoffset_t i = 0; i < deltas->size(); ++i) {
    const fb::Delta* d = deltas->Get(i);
    const Position p = Pos(d->position());
    if (d->position() == nullptr) return "a delta without a position";
    if (i > 0 && (p.seq != prev.seq + 1 || p.epoch != prev.epoch)) {
      return "delta " + std::to_string(i) + " at (" + std::to_string(p.epoch) + ", " +
             std::to_string(p.seq) + ") does not follow (" + std::to_string(prev.epoch) + ", " +
             std::to_string(prev.seq) + ")";
    }
    if (p.epoch > envelope_epoch) {
      return "a delta of epoch " + std::to_string(p.epoch) + " in an envelope of epoch " +
             std::to_string(envelope_epoch);
    }
    if (static_cast<int>(d->kind()) > static_cast<int>(fb::DeltaKind::MAX)) {
      return "a delta of unknown kind " + std::to_string(static_cast<int>(d->kind()));
    }
    if (d->key() == nullptr || d->key()->size() == 0) return "a delta without a key";
    prev = p;
  }
  return {};
}

DeltaBatchBuilder::DeltaBatchBuilder() : builder_(64 << 10) {}

void DeltaBatchBuilder::Add(const DeltaView& d) {
  auto k = Bytes(builder_, d.key);
  Offset<flatbuffers::Vector<std::uint8_t>> v;
  if (d.kind == DeltaKind::kUpsert) v = Bytes(builder_, d.value);
  const fb::Position pos = Pos(d.position);
  fb::DeltaBuilder x(builder_);
  x.add_position(&pos);
  x.add_table_id(static_cast<std::uint16_t>(d.table));
  x.add_kind(static_cast<fb::DeltaKind>(d.kind));
  x.add_key(k);
  if (d.kind == DeltaKind::kUpsert) x.add_value(v);
  offsets_.push_back(x.Finish());
  if (offsets_.size() == 1) first_ = d.position;
  last_ = d.position;
}

std::string DeltaBatchBuilder::Finish(const EnvelopeHeader& h, std::string_view replication_id) {
  auto vec = builder_.CreateVector(offsets_);
  auto rid = builder_.CreateString(replication_id.data(), replication_id.size());
  fb::DeltaBatchBuilder x(builder_);
  x.add_replication_id(rid);
  x.add_deltas(vec);
  std::string frame = Seal(builder_, h, fb::Body::DeltaBatch, x.Finish().Union());
  builder_.Clear();
  offsets_.clear();
  first_ = last_ = Position{};
  return frame;
}

std::string Rewrap(const fb::DeltaBatch& batch, const EnvelopeHeader& h, Seq after) {
  DeltaBatchBuilder b;
  if (batch.deltas()) {
    for (const fb::Delta* d : *batch.deltas()) {
      const DeltaView v = ViewOf(*d);
      if (v.position.seq > after) b.Add(v);
    }
  }
  const std::string rid = Str(batch.replication_id());
  return b.Finish(h, rid);
}

namespace {
Epoch EpochAt(std::span<const Position> history, Seq s) {
  Epoch e = 0;
  for (const Position& p : history) {
    if (p.seq > s) break;
    e = p.epoch;
  }
  return e;
}
}  // namespace

ForkPoint FindFork(std::span<const Position> mine, Seq my_head, std::span<const Position> theirs,
                   Position their_last) {
  if (their_last.seq == 0) return {};
  // A node that kept no history: its whole stream is in the epoch of its last delta.
  const std::vector<Position> implied{{their_last.epoch, 1}};
  if (theirs.empty()) theirs = implied;
  const Seq limit = std::min(their_last.seq, my_head);
  // The epoch of a seq changes only where one of the histories starts an epoch, so comparing
  // at those points (and at 1) finds the first seq the two histories disagree about.
  std::vector<Seq> points{1};
  for (const Position& p : mine) points.push_back(p.seq);
  for (const Position& p : theirs) points.push_back(p.seq);
  std::sort(points.begin(), points.end());
  for (Seq p : points) {
    if (p == 0 || p > limit) continue;
    if (EpochAt(mine, p) != EpochAt(theirs, p)) {
      // Worked example: mine = [(1,1), (3,101)], theirs = [(1,1), (2,91)], their last (2,120),
      // my head 150. At 91 mine says 1 and theirs 2: they share seqs 1..90, common = (1, 90),
      // and their 91..120 (written in epoch 2, which lost) are the divergent tail.
      return {{EpochAt(mine, p - 1), p - 1}, true};
    }
  }
  if (their_last.seq <= my_head) return {their_last, false};
  // They hold seqs beyond my head: those never reached me and are divergent.
  return {{EpochAt(mine, my_head), my_head}, true};
}

}  // namespace statesync::replication
