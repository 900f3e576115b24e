// Synthetic records: deterministic functions of an index, so that a benchmark, a test and the
// node that checks its result make the same record from the same number.
//
// Thread-safety: stateless functions.
#pragma once

#include <cstdint>
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

}  // namespace statesync::workload
