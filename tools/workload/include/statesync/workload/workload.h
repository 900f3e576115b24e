// Synthetic records: deterministic functions of an index, so that a benchmark, a test and the
// node that checks its result make the same record from the same number.
//
// Thread-safety: stateless functions.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "statesync/sessiontable/records.h"

namespace statesync::workload {

// An IPv4 firewall session, distinct for every i below 2^40: a client 10.a.b.c:port behind a
// source NAT talking to a server; every 8th is UDP (DNS), the rest TCP (HTTPS).
inline FirewallSession Ipv4Session(std::uint64_t i, TimePoint now,
                                   std::chrono::milliseconds timeout = std::chrono::seconds(300)) {
  const std::uint32_t client = 0x0a000000u + static_cast<std::uint32_t>(i / 60000);
  const std::uint16_t client_port = static_cast<std::uint16_t>(1024 + i % 60000);
  const bool udp = i % 8 == 7;
  const std::uint32_t server = 0xc6336400u + static_cast<std::uint32_t>(i % 200);  // 198.51.100.x
  const std::uint32_t nat = 0xcb007100u + static_cast<std::uint32_t>(i % 16);      // 203.0.113.x
  FirewallSession s;
  s.orig.family = L3Family::IPv4;
  s.orig.proto = udp ? kProtoUdp : kProtoTcp;
  s.orig.src = IpAddress::V4(client);
  s.orig.dst = IpAddress::V4(server);
  s.orig.src_port = client_port;
  s.orig.dst_port = udp ? 53 : 443;
  s.reply.family = L3Family::IPv4;
  s.reply.proto = s.orig.proto;
  s.reply.src = s.orig.dst;
  s.reply.dst = IpAddress::V4(nat);
  s.reply.src_port = s.orig.dst_port;
  s.reply.dst_port = static_cast<std::uint16_t>(20000 + (i * 7) % 40000);
  s.zone = 0;
  s.tcp_state = udp ? TcpState::None : TcpState::Established;
  s.status = 0x18e;  // SEEN_REPLY | ASSURED | CONFIRMED | SRC_NAT | SRC_NAT_DONE
  s.mark = static_cast<std::uint32_t>(i % 4);
  s.expiry = now + timeout;
  s.orig_packets = 10 + i % 1000;
  s.orig_bytes = s.orig_packets * 700;
  s.reply_packets = 8 + i % 900;
  s.reply_bytes = s.reply_packets * 1100;
  return s;
}

// An IPv6 firewall session, distinct for every i.
inline FirewallSession Ipv6Session(std::uint64_t i, TimePoint now) {
  FirewallSession s = Ipv4Session(i, now);
  std::array<std::uint8_t, 16> src{0x20, 0x01, 0x0d, 0xb8};
  std::array<std::uint8_t, 16> dst{0x20, 0x01, 0x0d, 0xb8, 0xff};
  for (int b = 0; b < 8; ++b) src[8 + b] = static_cast<std::uint8_t>(i >> (8 * b));
  dst[15] = static_cast<std::uint8_t>(i % 200);
  s.orig.family = s.reply.family = L3Family::IPv6;
  s.orig.src = IpAddress::V6(src);
  s.orig.dst = IpAddress::V6(dst);
  s.reply.src = s.orig.dst;
  s.reply.dst = s.orig.src;
  return s;
}

inline CallSession Call(std::uint64_t i, TimePoint now) {
  CallSession c;
  c.call_id = "call-" + std::to_string(i) + "@pbx.example";
  c.from = "sip:" + std::to_string(2000 + i % 500) + "@pbx.example";
  c.to = "sip:+4930" + std::to_string(1000000 + i % 9000000) + "@trunk.example";
  c.dialog_state = DialogState::Confirmed;
  c.line_appearance = static_cast<std::uint16_t>(1 + i % 4);
  c.extension = std::to_string(2000 + i % 500);
  c.trunk = "trunk-" + std::to_string(i % 3);
  c.codec = i % 2 ? "PCMA" : "G722";
  c.local_media_port = static_cast<std::uint16_t>(10000 + (2 * i) % 20000);
  c.remote_media_port = static_cast<std::uint16_t>(30000 + (2 * i) % 20000);
  c.start = now;
  return c;
}

inline Cdr CallRecord(std::uint64_t i, TimePoint now) {
  Cdr c;
  c.id = "cdr-" + std::to_string(i);
  c.call_id = "call-" + std::to_string(i) + "@pbx.example";
  c.from = "sip:" + std::to_string(2000 + i % 500) + "@pbx.example";
  c.to = "sip:+4930" + std::to_string(1000000 + i % 9000000) + "@trunk.example";
  c.trunk = "trunk-" + std::to_string(i % 3);
  c.start = now - std::chrono::seconds(120);
  c.answer = now - std::chrono::seconds(115);
  c.end = now;
  c.disposition = CallDisposition::Answered;
  c.billable = std::chrono::seconds(115);
  return c;
}

// A voice-data blob: voicemails, recordings, prompts, faxes and directory exports in turn
// (fb::BlobKind 1-5), `size` bytes that do not compress (like encoded audio), the same for the
// same i.
struct VoiceBlob {
  std::string id;
  std::uint8_t kind = 0;
  std::string name;
  std::string data;
};
inline VoiceBlob Blob(std::uint64_t i, std::size_t size) {
  static constexpr const char* kPaths[] = {"voicemail/%u/msg%04u.wav", "recordings/%u/call%04u.wav",
                                           "prompts/%u/greeting%04u.wav", "fax/%u/page%04u.tif",
                                           "directory/%u/export%04u.csv"};
  VoiceBlob b;
  b.kind = static_cast<std::uint8_t>(1 + i % 5);
  b.id = "blob-" + std::to_string(i);
  char name[96];
  std::snprintf(name, sizeof name, kPaths[i % 5], static_cast<unsigned>(2000 + i % 500),
                static_cast<unsigned>(i % 10000));
  b.name = name;
  b.data.resize(size);
  std::uint64_t x = 0x9e3779b97f4a7c15ull * (i + 1);  // xorshift64*, seeded by i
  for (std::size_t k = 0; k < size; k += 8) {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    const std::uint64_t v = x * 0x2545f4914f6cdd1dull;
    std::memcpy(b.data.data() + k, &v, std::min<std::size_t>(8, size - k));
  }
  return b;
}

}  // namespace statesync::workload
