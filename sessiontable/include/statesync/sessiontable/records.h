// Typed records of the built-in tables and their canonical encodings. The encoding of a record
// (its FlatBuffer, schemas/records.fbs) is what RocksDB stores and what a Delta carries; the
// key encodings below are what both use as keys.
//
// Thread-safety: plain values and stateless functions.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "statesync/common/status.h"
#include "statesync/fb/records_generated.h"
#include "statesync/sessiontable/types.h"

namespace statesync {

using L3Family = fb::L3Family;
using TcpState = fb::TcpState;
using SctpState = fb::SctpState;
using DialogState = fb::DialogState;
using CallDisposition = fb::CallDisposition;

inline constexpr std::uint8_t kProtoIcmp = 1;
inline constexpr std::uint8_t kProtoTcp = 6;
inline constexpr std::uint8_t kProtoUdp = 17;
inline constexpr std::uint8_t kProtoIcmpV6 = 58;
inline constexpr std::uint8_t kProtoSctp = 132;
inline constexpr std::uint8_t kProtoUdpLite = 136;

// An IPv4 or IPv6 address in network byte order; IPv4 uses the first four bytes.
struct IpAddress {
  std::array<std::uint8_t, 16> bytes{};
  static IpAddress V4(std::uint32_t host_order);
  static IpAddress V6(const std::array<std::uint8_t, 16>& b) { return IpAddress{b}; }
  std::uint32_t v4() const;  // host order
  bool operator==(const IpAddress&) const = default;
};

struct Tuple {
  IpAddress src;
  IpAddress dst;
  std::uint16_t src_port = 0;
  std::uint16_t dst_port = 0;
  L3Family family = L3Family::IPv4;
  std::uint8_t proto = kProtoTcp;
  bool operator==(const Tuple&) const = default;
};

struct FirewallSession {
  Tuple orig;
  Tuple reply;
  std::uint16_t zone = 0;
  TcpState tcp_state = TcpState::None;
  SctpState sctp_state = SctpState::None;
  std::uint32_t status = 0;
  std::uint32_t mark = 0;
  TimePoint expiry = kNever;
  std::optional<Tuple> expectation_parent;
  std::uint64_t orig_packets = 0;
  std::uint64_t orig_bytes = 0;
  std::uint64_t reply_packets = 0;
  std::uint64_t reply_bytes = 0;
  bool operator==(const FirewallSession&) const = default;
};

struct CallSession {
  std::string call_id;
  std::string from;
  std::string to;
  DialogState dialog_state = DialogState::Init;
  std::uint16_t line_appearance = 0;
  std::string extension;
  std::string trunk;
  std::string codec;
  std::uint16_t local_media_port = 0;
  std::uint16_t remote_media_port = 0;
  TimePoint start{};
  bool operator==(const CallSession&) const = default;
};

struct Cdr {
  std::string id;
  std::string call_id;
  std::string from;
  std::string to;
  std::string trunk;
  TimePoint start{};
  TimePoint answer{};
  TimePoint end{};
  CallDisposition disposition = CallDisposition::Answered;
  std::chrono::milliseconds billable{0};
  bool operator==(const Cdr&) const = default;
};

// Key of a firewall session in table fw_sessions:
//   IPv4: family(1)=4 proto(1) zone(2) src(4) dst(4) sport(2) dport(2)   = 16 bytes
//   IPv6: family(1)=6 proto(1) zone(2) src(16) dst(16) sport(2) dport(2) = 40 bytes
// Multi-byte fields are big-endian so that keys sort by address in RocksDB.
inline constexpr std::size_t kFwKeyV4Bytes = 16;
inline constexpr std::size_t kFwKeyV6Bytes = 40;
std::string FirewallKey(const Tuple& orig, std::uint16_t zone);
Status ParseFirewallKey(std::string_view key, Tuple* orig, std::uint16_t* zone);

// Canonical encodings (the record's FlatBuffer). Decoders verify first and refuse garbage.
std::string EncodeFirewallSession(const FirewallSession& s);
Result<FirewallSession> DecodeFirewallSession(std::span<const std::uint8_t> bytes);
std::string EncodeCallSession(const CallSession& c);
Result<CallSession> DecodeCallSession(std::span<const std::uint8_t> bytes);
std::string EncodeCdr(const Cdr& c);
Result<Cdr> DecodeCdr(std::span<const std::uint8_t> bytes);

// Appends the encoding to `out` through a caller-owned builder (the hot path reuses both).
void EncodeFirewallSessionTo(const FirewallSession& s, flatbuffers::FlatBufferBuilder& builder);

// Checks that `value` is a valid encoding for `table` (user tables and blobs are opaque here).
Status VerifyValue(TableId table, std::string_view value);

}  // namespace statesync
