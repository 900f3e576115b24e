#include "statesync/sessiontable/records.h"

#include <cstring>
#include <exception>
#include <string>

#include "statesync/schemas/codec.h"

namespace statesync {
namespace {

fb::Tuple ToFb(const Tuple& t) {
  fb::Address src(flatbuffers::span<const std::uint8_t, 16>(t.src.bytes.data(), 16));
  fb::Address dst(flatbuffers::span<const std::uint8_t, 16>(t.dst.bytes.data(), 16));
  return fb::Tuple(src, dst, t.src_port, t.dst_port, t.family, t.proto);
}

Tuple FromFb(const fb::Tuple& t) {
  Tuple out;
  std::memcpy(out.src.bytes.data(), t.src().bytes()->data(), 16);
  std::memcpy(out.dst.bytes.data(), t.dst().bytes()->data(), 16);
  out.src_port = t.src_port();
  out.dst_port = t.dst_port();
  out.family = t.family();
  out.proto = t.proto();
  return out;
}

std::string Finish(flatbuffers::FlatBufferBuilder& b) {
  return std::string(reinterpret_cast<const char*>(b.GetBufferPointer()), b.GetSize());
}

std::string Str(const flatbuffers::String* s) {
  return s ? s->str() : std::string();
}

void PutBe16(std::string& out, std::uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v & 0xff));
}
std::uint16_t GetBe16(const char* p) {
  return static_cast<std::uint16_t>((static_cast<std::uint8_t>(p[0]) << 8) |
                                    static_cast<std::uint8_t>(p[1]));
}

}  // namespace

std::string TableName(TableId t) {
  switch (t) {
    case TableId::kFwSessions:
      return "fw_sessions";
    case TableId::kCalls:
      return "calls";
    case TableId::kCdrs:
      return "cdrs";
    case TableId::kBlobs:
      return "blobs";
    default:
      return "user_" + std::to_string(static_cast<unsigned>(t));
  }
}

std::optional<TableId> ParseTableName(std::string_view name) {
  for (TableId t : {TableId::kFwSessions, TableId::kCalls, TableId::kCdrs, TableId::kBlobs}) {
    if (name == TableName(t)) return t;
  }
  if (name.rfind("user_", 0) != 0) return std::nullopt;
  try {
    const unsigned long id = std::stoul(std::string(name.substr(5)));
    if (id >= static_cast<unsigned>(TableId::kFirstUser) && id <= 0xffff) {
      return static_cast<TableId>(id);
    }
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

IpAddress IpAddress::V4(std::uint32_t host_order) {
  IpAddress a;
  a.bytes[0] = static_cast<std::uint8_t>(host_order >> 24);
  a.bytes[1] = static_cast<std::uint8_t>(host_order >> 16);
  a.bytes[2] = static_cast<std::uint8_t>(host_order >> 8);
  a.bytes[3] = static_cast<std::uint8_t>(host_order);
  return a;
}

std::uint32_t IpAddress::v4() const {
  return (std::uint32_t{bytes[0]} << 24) | (std::uint32_t{bytes[1]} << 16) |
         (std::uint32_t{bytes[2]} << 8) | std::uint32_t{bytes[3]};
}

std::string FirewallKey(const Tuple& orig, std::uint16_t zone) {
  const bool v6 = orig.family == L3Family::IPv6;
  const std::size_t addr = v6 ? 16 : 4;
  std::string key;
  key.reserve(v6 ? kFwKeyV6Bytes : kFwKeyV4Bytes);
  key.push_back(static_cast<char>(v6 ? 6 : 4));
  key.push_back(static_cast<char>(orig.proto));
  PutBe16(key, zone);
  key.append(reinterpret_cast<const char*>(orig.src.bytes.data()), addr);
  key.append(reinterpret_cast<const char*>(orig.dst.bytes.data()), addr);
  PutBe16(key, orig.src_port);
  PutBe16(key, orig.dst_port);
  return key;
}

Status ParseFirewallKey(std::string_view key, Tuple* orig, std::uint16_t* zone) {
  if (key.empty() || (key[0] != 4 && key[0] != 6)) {
    return Status::InvalidArgument("a firewall key must start with address family 4 or 6");
  }
  const bool v6 = key[0] == 6;
  const std::size_t want = v6 ? kFwKeyV6Bytes : kFwKeyV4Bytes;
  if (key.size() != want) {
    return Status::InvalidArgument("a firewall key of family " + std::to_string(int{key[0]}) +
                                   " has " + std::to_string(want) + " bytes, not " +
                                   std::to_string(key.size()));
  }
  const std::size_t addr = v6 ? 16 : 4;
  Tuple t;
  t.family = v6 ? L3Family::IPv6 : L3Family::IPv4;
  t.proto = static_cast<std::uint8_t>(key[1]);
  *zone = GetBe16(key.data() + 2);
  std::memcpy(t.src.bytes.data(), key.data() + 4, addr);
  std::memcpy(t.dst.bytes.data(), key.data() + 4 + addr, addr);
  t.src_port = GetBe16(key.data() + 4 + 2 * addr);
  t.dst_port = GetBe16(key.data() + 6 + 2 * addr);
  *orig = t;
  return Status::Ok();
}

void EncodeFirewallSessionTo(const FirewallSession& s, flatbuffers::FlatBufferBuilder& b) {
  const fb::Tuple orig = ToFb(s.orig);
  const fb::Tuple reply = ToFb(s.reply);
  fb::Tuple parent;
  if (s.expectation_parent) parent = ToFb(*s.expectation_parent);
  fb::FirewallSessionBuilder fs(b);
  fs.add_orig(&orig);
  fs.add_reply(&reply);
  fs.add_zone(s.zone);
  fs.add_tcp_state(s.tcp_state);
  fs.add_sctp_state(s.sctp_state);
  fs.add_status(s.status);
  fs.add_mark(s.mark);
  fs.add_expiry_ms(s.expiry.time_since_epoch().count());
  if (s.expectation_parent) {
    fs.add_expectation_parent(&parent);
    fs.add_has_expectation_parent(true);
  }
  fs.add_orig_packets(s.orig_packets);
  fs.add_orig_bytes(s.orig_bytes);
  fs.add_reply_packets(s.reply_packets);
  fs.add_reply_bytes(s.reply_bytes);
  b.Finish(fs.Finish());
}

std::string EncodeFirewallSession(const FirewallSession& s) {
  flatbuffers::FlatBufferBuilder b(256);
  EncodeFirewallSessionTo(s, b);
  return Finish(b);
}

Result<FirewallSession> DecodeFirewallSession(std::span<const std::uint8_t> bytes) {
  const wire::AlignedBytes aligned(bytes);
  const auto* f = wire::VerifyRecord<fb::FirewallSession>(aligned.view());
  if (f == nullptr) return Status::Corruption("not a valid FirewallSession record");
  if (f->orig() == nullptr) return Status::Corruption("a FirewallSession without its orig tuple");
  FirewallSession s;
  s.orig = FromFb(*f->orig());
  if (s.orig.family != L3Family::IPv4 && s.orig.family != L3Family::IPv6) {
    return Status::Corruption("a FirewallSession whose orig tuple has no address family");
  }
  if (f->reply() != nullptr) s.reply = FromFb(*f->reply());
  s.zone = f->zone();
  s.tcp_state = f->tcp_state();
  s.sctp_state = f->sctp_state();
  s.status = f->status();
  s.mark = f->mark();
  s.expiry = TimePoint(std::chrono::milliseconds(f->expiry_ms()));
  if (f->has_expectation_parent() && f->expectation_parent() != nullptr) {
    s.expectation_parent = FromFb(*f->expectation_parent());
  }
  s.orig_packets = f->orig_packets();
  s.orig_bytes = f->orig_bytes();
  s.reply_packets = f->reply_packets();
  s.reply_bytes = f->reply_bytes();
  return s;
}

std::string EncodeCallSession(const CallSession& c) {
  flatbuffers::FlatBufferBuilder b(256);
  auto call_id = b.CreateString(c.call_id);
  auto from = b.CreateString(c.from);
  auto to = b.CreateString(c.to);
  auto extension = b.CreateString(c.extension);
  auto trunk = b.CreateString(c.trunk);
  auto codec = b.CreateString(c.codec);
  fb::CallSessionBuilder cb(b);
  cb.add_call_id(call_id);
  cb.add_from(from);
  cb.add_to(to);
  cb.add_dialog_state(c.dialog_state);
  cb.add_line_appearance(c.line_appearance);
  cb.add_extension(extension);
  cb.add_trunk(trunk);
  cb.add_codec(codec);
  cb.add_local_media_port(c.local_media_port);
  cb.add_remote_media_port(c.remote_media_port);
  cb.add_start_ms(c.start.time_since_epoch().count());
  b.Finish(cb.Finish());
  return Finish(b);
}

Result<CallSession> DecodeCallSession(std::span<const std::uint8_t> bytes) {
  const wire::AlignedBytes aligned(bytes);
  const auto* f = wire::VerifyRecord<fb::CallSession>(aligned.view());
  if (f == nullptr) return Status::Corruption("not a valid CallSession record");
  CallSession c;
  c.call_id = Str(f->call_id());
  c.from = Str(f->from());
  c.to = Str(f->to());
  c.dialog_state = f->dialog_state();
  c.line_appearance = f->line_appearance();
  c.extension = Str(f->extension());
  c.trunk = Str(f->trunk());
  c.codec = Str(f->codec());
  c.local_media_port = f->local_media_port();
  c.remote_media_port = f->remote_media_port();
  c.start = TimePoint(std::chrono::milliseconds(f->start_ms()));
  return c;
}

std::string EncodeCdr(const Cdr& c) {
  flatbuffers::FlatBufferBuilder b(256);
  auto id = b.CreateString(c.id);
  auto call_id = b.CreateString(c.call_id);
  auto from = b.CreateString(c.from);
  auto to = b.CreateString(c.to);
  auto trunk = b.CreateString(c.trunk);
  fb::CdrBuilder cb(b);
  cb.add_id(id);
  cb.add_call_id(call_id);
  cb.add_from(from);
  cb.add_to(to);
  cb.add_trunk(trunk);
  cb.add_start_ms(c.start.time_since_epoch().count());
  cb.add_answer_ms(c.answer.time_since_epoch().count());
  cb.add_end_ms(c.end.time_since_epoch().count());
  cb.add_disposition(c.disposition);
  cb.add_billable_ms(c.billable.count());
  b.Finish(cb.Finish());
  return Finish(b);
}

Result<Cdr> DecodeCdr(std::span<const std::uint8_t> bytes) {
  const wire::AlignedBytes aligned(bytes);
  const auto* f = wire::VerifyRecord<fb::Cdr>(aligned.view());
  if (f == nullptr) return Status::Corruption("not a valid Cdr record");
  Cdr c;
  c.id = Str(f->id());
  c.call_id = Str(f->call_id());
  c.from = Str(f->from());
  c.to = Str(f->to());
  c.trunk = Str(f->trunk());
  c.start = TimePoint(std::chrono::milliseconds(f->start_ms()));
  c.answer = TimePoint(std::chrono::milliseconds(f->answer_ms()));
  c.end = TimePoint(std::chrono::milliseconds(f->end_ms()));
  c.disposition = f->disposition();
  c.billable = std::chrono::milliseconds(f->billable_ms());
  return c;
}

Status VerifyValue(TableId table, std::string_view value) {
  const auto bytes = wire::AsBytes(value);
  switch (table) {
    case TableId::kFwSessions:
      return DecodeFirewallSession(bytes).ok()
                 ? Status::Ok()
                 : Status::Corruption("the value is not a valid FirewallSession");
    case TableId::kCalls:
      return wire::VerifyRecord<fb::CallSession>(wire::AlignedBytes(bytes).view())
                 ? Status::Ok()
                 : Status::Corruption("the value is not a valid CallSession");
    case TableId::kCdrs:
      return wire::VerifyRecord<fb::Cdr>(wire::AlignedBytes(bytes).view())
                 ? Status::Ok()
                 : Status::Corruption("the value is not a valid Cdr");
    default:
      return Status::Ok();
  }
}

}  // namespace statesync
