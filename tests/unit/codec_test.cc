#include "statesync/schemas/codec.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <set>
#include <vector>

#include "statesync/sessiontable/records.h"
#include "statesync/workload/workload.h"

namespace statesync {
namespace {

using wire::DecodeError;
namespace fbs = statesync::fb;

constexpr std::uint64_t kCluster = 0x5eed;
const TimePoint kT0{std::chrono::milliseconds(1'780'000'000'000)};

std::vector<std::uint8_t> Bytes(const std::string& s) {
  return {s.begin(), s.end()};
}

template <typename Fn>
std::string Envelope(fbs::Body type, Fn&& body, std::uint64_t cluster = kCluster,
                     std::uint16_t version = wire::kSchemaVersion) {
  flatbuffers::FlatBufferBuilder b;
  auto sender = b.CreateString("node-a");
  auto offset = body(b);
  fbs::EnvelopeBuilder e(b);
  e.add_schema_version(version);
  e.add_cluster_id(cluster);
  e.add_sender(sender);
  e.add_body_type(type);
  e.add_body(offset);
  fbs::FinishEnvelopeBuffer(b, e.Finish());
  return wire::Frame(b);
}

flatbuffers::Offset<fbs::Delta> MakeDelta(flatbuffers::FlatBufferBuilder& b, std::uint64_t seq,
                                          std::uint64_t i) {
  const FirewallSession s = workload::Ipv4Session(i, kT0);
  const std::string key = FirewallKey(s.orig, s.zone);
  const std::string value = EncodeFirewallSession(s);
  const fbs::Position pos(7, seq);
  auto k = b.CreateVector(reinterpret_cast<const std::uint8_t*>(key.data()), key.size());
  auto v = b.CreateVector(reinterpret_cast<const std::uint8_t*>(value.data()), value.size());
  return fbs::CreateDelta(b, &pos, static_cast<std::uint16_t>(TableId::kFwSessions),
                          fbs::DeltaKind::Upsert, k, v);
}

// One valid frame of every message type.
std::vector<std::string> EveryMessage() {
  std::vector<std::string> out;
  out.push_back(Envelope(fbs::Body::DeltaBatch, [](auto& b) {
    std::vector<flatbuffers::Offset<fbs::Delta>> deltas;
    for (std::uint64_t i = 0; i < 3; ++i) deltas.push_back(MakeDelta(b, 100 + i, i));
    return fbs::CreateDeltaBatchDirect(b, "rid-1", &deltas).Union();
  }));
  out.push_back(Envelope(fbs::Body::Heartbeat, [](auto& b) {
    return fbs::CreateHeartbeatDirect(b, "node-a", 7, 1234, fbs::Role::Primary, fbs::Role::Primary,
                                      200, true, 2, 3, 86'400'000, "FGT-0001", 1, 42,
                                      (3ull << 32) + 17, 2, 6, true, "node-a")
        .Union();
  }));
  out.push_back(Envelope(fbs::Body::Hello, [](auto& b) {
    const fbs::Position last(6, 99);
    return fbs::CreateHelloDirect(b, "node-b", "rid-1", &last).Union();
  }));
  out.push_back(Envelope(fbs::Body::Continue, [](auto& b) {
    const fbs::Position from(6, 99);
    return fbs::CreateContinueDirect(b, "rid-1", &from).Union();
  }));
  out.push_back(Envelope(fbs::Body::SnapshotChunk, [](auto& b) {
    std::vector<flatbuffers::Offset<fbs::Delta>> records{MakeDelta(b, 1, 5)};
    return fbs::CreateSnapshotChunkDirect(b, 3, &records, 1000, 150000).Union();
  }));
  out.push_back(Envelope(fbs::Body::SnapshotEnd, [](auto& b) {
    const fbs::Position at(7, 5000);
    return fbs::CreateSnapshotEndDirect(b, 3, "rid-1", &at, 1000).Union();
  }));
  out.push_back(Envelope(fbs::Body::Ack, [](auto& b) {
    const fbs::Position applied(7, 120), persisted(7, 118);
    return fbs::CreateAckDirect(b, "node-b", &applied, &persisted, 8).Union();
  }));
  out.push_back(Envelope(fbs::Body::BlobChunk, [](auto& b) {
    std::vector<std::uint8_t> data(300, 0x5a);
    return fbs::CreateBlobChunkDirect(b, "vm-0042", fbs::BlobKind::Voicemail, 4096, 1 << 20, &data,
                                      11, 22, "mailbox/2001/msg0042.wav")
        .Union();
  }));
  out.push_back(Envelope(fbs::Body::Control, [](auto& b) {
    const fbs::Position final_position(7, 5000);
    return fbs::CreateControlDirect(b, fbs::ControlCommand::TakeOver, 0, fbs::Role::Primary,
                                    "handed over", 7, &final_position)
        .Union();
  }));
  out.push_back(Envelope(fbs::Body::Fork, [](auto& b) {
    const fbs::Position common(6, 90);
    return fbs::CreateForkDirect(b, "rid-1", &common, 5).Union();
  }));
  out.push_back(Envelope(fbs::Body::VoteRequest, [](auto& b) {
    const fbs::Position applied(7, 5000);
    return fbs::CreateVoteRequest(b, 130, &applied).Union();
  }));
  out.push_back(Envelope(fbs::Body::Vote, [](auto& b) {
    return fbs::CreateVoteDirect(b, 130, false, "already voted in round 2").Union();
  }));
  return out;
}

// Reads every field an accepted envelope holds, nested record values included, so that ASan
// sees any read the Verifier should have prevented.
std::uint64_t Touch(const fbs::Envelope* e) {
  std::uint64_t sum = e->schema_version() + e->cluster_id();
  auto str = [&sum](const flatbuffers::String* s) {
    if (s == nullptr) return;
    for (char c : s->string_view()) sum += static_cast<unsigned char>(c);
  };
  auto bytes = [&sum](const flatbuffers::Vector<std::uint8_t>* v) {
    if (v == nullptr) return;
    for (std::uint8_t c : *v) sum += c;
  };
  auto pos = [&sum](const fbs::Position* p) {
    if (p) sum += p->epoch() + p->seq();
  };
  auto delta = [&](const fbs::Delta* d) {
    if (!d) return;
    pos(d->position());
    sum += d->table_id() + static_cast<int>(d->kind());
    bytes(d->key());
    bytes(d->value());
    if (d->value() && d->table_id() == static_cast<std::uint16_t>(TableId::kFwSessions)) {
      auto s = DecodeFirewallSession({d->value()->data(), d->value()->size()});
      if (s.ok()) sum += s->orig_bytes + s->orig.src.bytes[0];
    }
  };
  str(e->sender());
  switch (e->body_type()) {
    case fbs::Body::DeltaBatch: {
      auto* m = e->body_as_DeltaBatch();
      str(m->replication_id());
      if (m->deltas()) {
        for (auto* d : *m->deltas()) delta(d);
      }
      break;
    }
    case fbs::Body::Heartbeat: {
      auto* m = e->body_as_Heartbeat();
      str(m->node_id());
      str(m->serial());
      str(m->following());
      sum += m->epoch() + m->applied_seq() + m->uptime_ms() + m->links_up() + m->sequence() +
             m->slot() + m->applied_epoch() + m->ready();
      break;
    }
    case fbs::Body::Hello: {
      auto* m = e->body_as_Hello();
      str(m->node_id());
      str(m->replication_id());
      pos(m->last_applied());
      break;
    }
    case fbs::Body::Continue: {
      auto* m = e->body_as_Continue();
      str(m->replication_id());
      pos(m->from());
      break;
    }
    case fbs::Body::SnapshotChunk: {
      auto* m = e->body_as_SnapshotChunk();
      if (m->records()) {
        for (auto* d : *m->records()) delta(d);
      }
      sum += m->records_total();
      break;
    }
    case fbs::Body::SnapshotEnd: {
      auto* m = e->body_as_SnapshotEnd();
      str(m->replication_id());
      pos(m->position());
      break;
    }
    case fbs::Body::Ack: {
      auto* m = e->body_as_Ack();
      str(m->node_id());
      pos(m->applied());
      pos(m->persisted());
      break;
    }
    case fbs::Body::BlobChunk: {
      auto* m = e->body_as_BlobChunk();
      str(m->blob_id());
      str(m->name());
      bytes(m->data());
      break;
    }
    case fbs::Body::Control: {
      auto* m = e->body_as_Control();
      str(m->reason());
      pos(m->final_position());
      sum += m->holdoff_ms() + m->epoch();
      break;
    }
    case fbs::Body::Fork: {
      auto* m = e->body_as_Fork();
      str(m->replication_id());
      pos(m->common());
      break;
    }
    case fbs::Body::VoteRequest: {
      auto* m = e->body_as_VoteRequest();
      pos(m->applied());
      sum += m->epoch();
      break;
    }
    case fbs::Body::Vote: {
      auto* m = e->body_as_Vote();
      str(m->why_not());
      sum += m->epoch() + m->granted();
      break;
    }
    default:
      break;
  }
  return sum;
}

wire::Decoded DecodeString(const std::string& frame, std::uint64_t cluster = kCluster,
                           const wire::DecodeLimits& limits = {}) {
  return wire::Decode(wire::AsBytes(frame), cluster, limits);
}

TEST(Codec, EveryMessageRoundTrips) {
  const auto messages = EveryMessage();
  ASSERT_EQ(messages.size(), 12u);
  std::set<fbs::Body> seen;
  for (const auto& frame : messages) {
    auto d = DecodeString(frame);
    ASSERT_TRUE(d.ok()) << d.reason;
    seen.insert(d.envelope->body_type());
    EXPECT_EQ(d.envelope->sender()->str(), "node-a");
    Touch(d.envelope);
  }
  EXPECT_EQ(seen.size(), 12u);
  // The failover core's fields (issue 5) come back as written.
  auto heartbeat = DecodeString(messages[1]).envelope->body_as_Heartbeat();
  EXPECT_EQ(heartbeat->sequence(), (3ull << 32) + 17);
  EXPECT_EQ(heartbeat->slot(), 2u);
  EXPECT_EQ(heartbeat->applied_epoch(), 6u);
  EXPECT_TRUE(heartbeat->ready());
  EXPECT_EQ(heartbeat->following()->str(), "node-a");
  auto control = DecodeString(messages[8]).envelope->body_as_Control();
  EXPECT_EQ(control->command(), fbs::ControlCommand::TakeOver);
  EXPECT_EQ(control->epoch(), 7u);
  EXPECT_EQ(control->final_position()->seq(), 5000u);
  auto request = DecodeString(messages[10]).envelope->body_as_VoteRequest();
  EXPECT_EQ(request->epoch(), 130u);
  EXPECT_EQ(request->applied()->seq(), 5000u);
  auto vote = DecodeString(messages[11]).envelope->body_as_Vote();
  EXPECT_FALSE(vote->granted());
  EXPECT_EQ(vote->why_not()->str(), "already voted in round 2");
  auto batch = DecodeString(messages[0]).envelope->body_as_DeltaBatch();
  ASSERT_EQ(batch->deltas()->size(), 3u);
  EXPECT_EQ(batch->deltas()->Get(2)->position()->seq(), 102u);
  EXPECT_EQ(batch->deltas()->Get(2)->position()->epoch(), 7u);
  auto value = batch->deltas()->Get(1)->value();
  EXPECT_EQ(*DecodeFirewallSession({value->data(), value->size()}), workload::Ipv4Session(1, kT0));
  auto hb = DecodeString(messages[1]).envelope->body_as_Heartbeat();
  EXPECT_EQ(hb->serial()->str(), "FGT-0001");
  EXPECT_EQ(hb->effective_role(), fbs::Role::Primary);
  EXPECT_EQ(control->reason()->str(), "handed over");
}

TEST(Codec, EveryRecordRoundTrips) {
  FirewallSession v4 = workload::Ipv4Session(12345, kT0);
  v4.expectation_parent = workload::Ipv4Session(1, kT0).orig;
  v4.sctp_state = SctpState::Established;
  const FirewallSession v6 = workload::Ipv6Session(777, kT0);
  for (const auto& s : {v4, v6}) {
    EXPECT_EQ(*DecodeFirewallSession(wire::AsBytes(EncodeFirewallSession(s))), s);
    Tuple orig;
    std::uint16_t zone = 0;
    ASSERT_TRUE(ParseFirewallKey(FirewallKey(s.orig, s.zone), &orig, &zone).ok());
    EXPECT_EQ(orig, s.orig);
  }
  const CallSession call = workload::Call(9, kT0);
  EXPECT_EQ(*DecodeCallSession(wire::AsBytes(EncodeCallSession(call))), call);
  const Cdr cdr = workload::CallRecord(9, kT0);
  EXPECT_EQ(*DecodeCdr(wire::AsBytes(EncodeCdr(cdr))), cdr);

  flatbuffers::FlatBufferBuilder b;
  std::vector<std::uint8_t> key{1, 2, 3}, value{4, 5};
  b.Finish(fbs::CreateGenericRecordDirect(b, 17, &key, &value));
  const wire::AlignedBytes generic({b.GetBufferPointer(), b.GetSize()});
  auto* g = wire::VerifyRecord<fbs::GenericRecord>(generic.view());
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->table_id(), 17);
  EXPECT_EQ(g->value()->Get(1), 5);

  // Garbage is refused by every decoder, never half-read.
  EXPECT_FALSE(DecodeFirewallSession(wire::AsBytes("not a flatbuffer at all")).ok());
  EXPECT_FALSE(DecodeCallSession(wire::AsBytes("")).ok());
  EXPECT_FALSE(DecodeCdr(wire::AsBytes(std::string(3, '\0'))).ok());
}

TEST(Codec, EachKindOfBadFrameIsRefusedWithItsReason) {
  const std::string good = EveryMessage()[0];
  ASSERT_TRUE(DecodeString(good).ok());
  EXPECT_EQ(DecodeString(good.substr(0, 10)).error, DecodeError::kTooShort);
  EXPECT_EQ(DecodeString(good.substr(0, good.size() - 1)).error, DecodeError::kLengthMismatch);
  EXPECT_EQ(DecodeString(good + "x").error, DecodeError::kLengthMismatch);
  std::string bad_magic = good;
  bad_magic[0] = 'X';
  EXPECT_EQ(DecodeString(bad_magic).error, DecodeError::kBadMagic);
  std::string flipped = good;
  flipped[good.size() / 2] ^= 0x10;
  EXPECT_EQ(DecodeString(flipped).error, DecodeError::kChecksumMismatch);
  wire::DecodeLimits small;
  small.max_message_bytes = good.size() - 1;
  EXPECT_EQ(DecodeString(good, kCluster, small).error, DecodeError::kTooLarge);
  EXPECT_EQ(DecodeString(good, kCluster + 1).error, DecodeError::kWrongCluster);
  const std::string old = Envelope(
      fbs::Body::Control, [](auto& b) { return fbs::CreateControl(b).Union(); }, kCluster, 0);
  EXPECT_EQ(DecodeString(old).error, DecodeError::kWrongVersion);
  const std::string empty =
      Envelope(fbs::Body::NONE, [](auto&) { return flatbuffers::Offset<void>(); });
  EXPECT_EQ(DecodeString(empty).error, DecodeError::kNoBody);
  // A correct frame around bytes that are not an Envelope: the checksum passes, the Verifier
  // does not.
  const std::string junk = wire::Frame(wire::AsBytes(std::string(64, '\x7f')));
  EXPECT_EQ(DecodeString(junk).error, DecodeError::kMalformed);
  // The table limit: a batch of 3 deltas is more tables than a limit of 4 allows.
  wire::DecodeLimits few_tables;
  few_tables.max_tables = 4;
  EXPECT_EQ(DecodeString(good, kCluster, few_tables).error, DecodeError::kMalformed);
  // Every refusal says why.
  EXPECT_FALSE(DecodeString(flipped).reason.empty());
  EXPECT_EQ(wire::DecodeErrorName(DecodeError::kChecksumMismatch), "checksum_mismatch");
}

// One mutation of a buffer: bit flips, byte overwrites, truncation, extension, or a splice of
// a 4-byte value (offsets and lengths are what a hostile sender would forge).
std::vector<std::uint8_t> Mutate(std::vector<std::uint8_t> b, std::mt19937_64& rng) {
  const int kind = static_cast<int>(rng() % 6);
  const std::size_t n = b.size();
  switch (kind) {
    case 0: {
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int i = 0; i < flips; ++i) b[rng() % n] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
      break;
    }
    case 1: {
      const int bytes = 1 + static_cast<int>(rng() % 8);
      for (int i = 0; i < bytes; ++i) b[rng() % n] = static_cast<std::uint8_t>(rng());
      break;
    }
    case 2:
      b.resize(rng() % n);
      break;
    case 3:
      for (int i = 0, extra = 1 + static_cast<int>(rng() % 64); i < extra; ++i) {
        b.push_back(static_cast<std::uint8_t>(rng()));
      }
      break;
    case 4: {
      const std::size_t at = n >= 4 ? rng() % (n - 3) : 0;
      const std::uint32_t v =
          rng() % 3 == 0 ? 0xffffffffu : static_cast<std::uint32_t>(rng() % 4096);
      if (n >= 4) std::memcpy(&b[at], &v, 4);
      break;
    }
    default: {
      std::shuffle(b.begin() + static_cast<std::ptrdiff_t>(rng() % n), b.end(), rng);
      break;
    }
  }
  return b;
}

// With the frame: any change of a valid frame is refused (the checksum); nothing is accepted
// that is not byte for byte what was sent.
TEST(CodecFuzz, NoMutatedFrameIsAccepted) {
  std::mt19937_64 rng(20261122);
  const auto messages = EveryMessage();
  int accepted_changed = 0;
  for (int i = 0; i < 100'000; ++i) {
    const std::string& original = messages[static_cast<std::size_t>(i) % messages.size()];
    const auto mutated = Mutate(Bytes(original), rng);
    const auto d = wire::Decode(mutated, kCluster);
    const bool same = std::string(mutated.begin(), mutated.end()) == original;
    if (d.ok()) {
      Touch(d.envelope);
      if (!same) ++accepted_changed;
    } else {
      EXPECT_FALSE(d.reason.empty());
    }
  }
  EXPECT_EQ(accepted_changed, 0);
}

// Without the frame (a hostile sender can compute a checksum): the Verifier alone must make
// every accepted buffer safe to read in full. ASan (the asan preset) checks the reads.
TEST(CodecFuzz, TheVerifierMakesEveryAcceptedEnvelopeSafeToRead) {
  std::mt19937_64 rng(4242);
  std::vector<std::vector<std::uint8_t>> payloads;
  for (const auto& frame : EveryMessage()) {
    payloads.emplace_back(frame.begin() + wire::kFrameHeaderBytes, frame.end());
  }
  int accepted = 0, refused = 0;
  std::uint64_t sink = 0;
  for (int i = 0; i < 100'000; ++i) {
    const auto mutated = Mutate(payloads[static_cast<std::size_t>(i) % payloads.size()], rng);
    const auto d = wire::VerifyEnvelope(mutated, {});
    if (d.ok()) {
      ++accepted;
      sink += Touch(d.envelope);
    } else {
      ++refused;
    }
  }
  // Both outcomes occur: mutations of scalar bytes leave valid buffers, structural ones do not.
  EXPECT_GT(refused, 10'000);
  EXPECT_GT(accepted, 1'000);
  RecordProperty("accepted", accepted);
  RecordProperty("refused", refused);
  EXPECT_NE(sink, 1u);
}

// Records stored in RocksDB and carried in deltas go through the same Verifier.
TEST(CodecFuzz, MutatedRecordsAreRefusedOrSafe) {
  std::mt19937_64 rng(99);
  const std::string fw = EncodeFirewallSession(workload::Ipv6Session(3, kT0));
  const std::string call = EncodeCallSession(workload::Call(3, kT0));
  int refused = 0;
  for (int i = 0; i < 20'000; ++i) {
    auto a = Mutate(Bytes(fw), rng);
    auto s = DecodeFirewallSession(a);
    if (!s.ok()) ++refused;
    auto b = Mutate(Bytes(call), rng);
    auto c = DecodeCallSession(b);
    if (c.ok()) {
      EXPECT_LE(c->call_id.size(), b.size());
    } else {
      ++refused;
    }
  }
  EXPECT_GT(refused, 1000);
}

}  // namespace
}  // namespace statesync
