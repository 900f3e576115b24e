// Codec: frames, verifies and unframes wire messages. Every decode path goes through here:
// the frame's length and checksum, then the FlatBuffers Verifier with explicit depth, table
// and size limits, then the schema version and the cluster id.
//
// A frame is a 16-byte header followed by the FlatBuffer of an Envelope:
//   bytes 0..3   magic "SSF1"
//   bytes 4..7   payload length, little-endian (the frame must be exactly 16 + length bytes)
//   bytes 8..15  XXH3-64 of the payload, little-endian
// The checksum makes any bit flip of a frame a rejection rather than accepted garbage; the
// Verifier then guarantees that even a frame built by a hostile sender is safe to read.
//
// Thread-safety: stateless functions; safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "statesync/common/status.h"
#include "statesync/fb/records_generated.h"
#include "statesync/fb/wire_generated.h"

namespace statesync::wire {

inline constexpr std::uint16_t kSchemaVersion = 1;
inline constexpr std::size_t kFrameHeaderBytes = 16;

struct DecodeLimits {
  std::size_t max_message_bytes = 64u << 20;  // a frame larger than this is refused unread
  flatbuffers::uoffset_t max_depth = 16;      // nesting of tables and vectors
  flatbuffers::uoffset_t max_tables = 1u << 20;
};

// Why a frame was refused; each reason has its own counter in the adapters.
enum class DecodeError : std::uint8_t {
  kNone = 0,
  kTooShort,          // fewer bytes than a frame header
  kTooLarge,          // larger than DecodeLimits::max_message_bytes
  kBadMagic,          // not a statesync frame
  kLengthMismatch,    // truncated or with trailing bytes
  kChecksumMismatch,  // the payload was altered
  kMalformed,         // the FlatBuffers Verifier refused it
  kWrongVersion,      // schema_version differs from kSchemaVersion
  kWrongCluster,      // cluster_id differs from ours
  kNoBody,            // a valid envelope with nothing in it
};
inline constexpr int kDecodeErrorCount = 10;
std::string_view DecodeErrorName(DecodeError error);

// FlatBuffers reads scalars in place, so a buffer must start on an 8-byte boundary. Bytes from
// a RocksDB slice or inside a std::string need not; this views them, through an aligned copy
// when they are not aligned.
class AlignedBytes {
 public:
  explicit AlignedBytes(std::span<const std::uint8_t> bytes);
  AlignedBytes(const AlignedBytes&) = delete;
  AlignedBytes& operator=(const AlignedBytes&) = delete;
  std::span<const std::uint8_t> view() const { return view_; }

 private:
  std::vector<std::uint64_t> copy_;
  std::span<const std::uint8_t> view_;
};

struct Decoded {
  // Valid while the frame's bytes live (or, when they were not aligned, while this lives: it
  // then points into aligned_copy).
  const fb::Envelope* envelope = nullptr;
  DecodeError error = DecodeError::kNone;
  std::string reason;  // a sentence for the log: what was wrong and by how much
  std::vector<std::uint64_t> aligned_copy;
  bool ok() const { return error == DecodeError::kNone; }

  // Move-only: `envelope` may point into aligned_copy, which a copy would not own.
  Decoded() = default;
  Decoded(Decoded&&) = default;
  Decoded& operator=(Decoded&&) = default;
  Decoded(const Decoded&) = delete;
  Decoded& operator=(const Decoded&) = delete;
};

// Wraps a finished FlatBuffer (an Envelope) in a frame.
std::string Frame(std::span<const std::uint8_t> payload);
inline std::string Frame(const flatbuffers::FlatBufferBuilder& builder) {
  return Frame({builder.GetBufferPointer(), builder.GetSize()});
}

// Checks the frame header and checksum; on success `payload` views the Envelope bytes.
Decoded Unframe(std::span<const std::uint8_t> frame, const DecodeLimits& limits,
                std::span<const std::uint8_t>* payload);

// Runs the Verifier (with the limits) on an Envelope FlatBuffer, without a frame, and checks
// that it carries a message: an accepted envelope is safe to read in full. Misaligned bytes are
// copied (into Decoded::aligned_copy) first.
Decoded VerifyEnvelope(std::span<const std::uint8_t> payload, const DecodeLimits& limits);

// The whole path: Unframe, VerifyEnvelope, schema version, cluster id.
Decoded Decode(std::span<const std::uint8_t> frame, std::uint64_t cluster_id,
               const DecodeLimits& limits = {});

// Verifies a record value (the bytes stored in RocksDB and carried in Delta.value) as the
// FlatBuffer of type T (FirewallSession, CallSession, Cdr, BlobChunk, GenericRecord).
// REQUIRES: bytes.data() is 8-byte aligned (see AlignedBytes).
template <typename T>
const T* VerifyRecord(std::span<const std::uint8_t> bytes, const DecodeLimits& limits = {}) {
  STATESYNC_CHECK(reinterpret_cast<std::uintptr_t>(bytes.data()) % 8 == 0,
                  "FlatBuffers need an 8-byte aligned buffer; wrap it in AlignedBytes");
  if (bytes.size() < sizeof(flatbuffers::uoffset_t) || bytes.size() > limits.max_message_bytes) {
    return nullptr;
  }
  flatbuffers::Verifier verifier(bytes.data(), bytes.size(), limits.max_depth, limits.max_tables);
  if (!verifier.VerifyBuffer<T>(nullptr)) return nullptr;
  return flatbuffers::GetRoot<T>(bytes.data());
}

inline std::span<const std::uint8_t> AsBytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}
inline std::string_view AsChars(std::span<const std::uint8_t> b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

}  // namespace statesync::wire
