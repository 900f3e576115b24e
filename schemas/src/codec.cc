#include "statesync/schemas/codec.h"

#include <xxhash.h>

#include <cstring>

namespace statesync::wire {
namespace {

constexpr std::uint8_t kMagic[4] = {'S', 'S', 'F', '1'};

void PutLe32(std::uint8_t* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
void PutLe64(std::uint8_t* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
std::uint32_t GetLe32(const std::uint8_t* p) {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
std::uint64_t GetLe64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

Decoded Fail(DecodeError error, std::string reason) {
  Decoded d;
  d.error = error;
  d.reason = std::move(reason);
  return d;
}

}  // namespace

AlignedBytes::AlignedBytes(std::span<const std::uint8_t> bytes) {
  if (reinterpret_cast<std::uintptr_t>(bytes.data()) % 8 == 0) {
    view_ = bytes;
    return;
  }
  copy_.resize((bytes.size() + 7) / 8);
  if (!bytes.empty()) std::memcpy(copy_.data(), bytes.data(), bytes.size());
  view_ = {reinterpret_cast<const std::uint8_t*>(copy_.data()), bytes.size()};
}

std::string_view DecodeErrorName(DecodeError error) {
  switch (error) {
    case DecodeError::kNone:
      return "none";
    case DecodeError::kTooShort:
      return "too_short";
    case DecodeError::kTooLarge:
      return "too_large";
    case DecodeError::kBadMagic:
      return "bad_magic";
    case DecodeError::kLengthMismatch:
      return "length_mismatch";
    case DecodeError::kChecksumMismatch:
      return "checksum_mismatch";
    case DecodeError::kMalformed:
      return "malformed";
    case DecodeError::kWrongVersion:
      return "wrong_version";
    case DecodeError::kWrongCluster:
      return "wrong_cluster";
    case DecodeError::kNoBody:
      return "no_body";
  }
  return "unknown";
}

std::string Frame(std::span<const std::uint8_t> payload) {
  std::uint8_t header[kFrameHeaderBytes];
  std::memcpy(header, kMagic, 4);
  PutLe32(header + 4, static_cast<std::uint32_t>(payload.size()));
  PutLe64(header + 8, XXH3_64bits(payload.data(), payload.size()));
  // Reserved and appended rather than sized up front: a sized string is zeroed first, a second
  // pass over every batch (hundreds of KB) on the table owner's thread.
  std::string out;
  out.reserve(kFrameHeaderBytes + payload.size());
  out.append(reinterpret_cast<const char*>(header), kFrameHeaderBytes);
  out.append(reinterpret_cast<const char*>(payload.data()), payload.size());
  return out;
}

Decoded Unframe(std::span<const std::uint8_t> frame, const DecodeLimits& limits,
                std::span<const std::uint8_t>* payload) {
  if (frame.size() < kFrameHeaderBytes) {
    return Fail(DecodeError::kTooShort, "a frame of " + std::to_string(frame.size()) +
                                            " bytes is shorter than the 16-byte header");
  }
  if (frame.size() > limits.max_message_bytes) {
    return Fail(DecodeError::kTooLarge, "a frame of " + std::to_string(frame.size()) +
                                            " bytes exceeds the limit of " +
                                            std::to_string(limits.max_message_bytes));
  }
  if (std::memcmp(frame.data(), kMagic, 4) != 0) {
    return Fail(DecodeError::kBadMagic, "the frame does not start with the magic 'SSF1'");
  }
  const std::uint32_t length = GetLe32(frame.data() + 4);
  if (length != frame.size() - kFrameHeaderBytes) {
    return Fail(DecodeError::kLengthMismatch,
                "the header announces " + std::to_string(length) + " payload bytes but " +
                    std::to_string(frame.size() - kFrameHeaderBytes) + " arrived");
  }
  auto body = frame.subspan(kFrameHeaderBytes);
  if (XXH3_64bits(body.data(), body.size()) != GetLe64(frame.data() + 8)) {
    return Fail(DecodeError::kChecksumMismatch, "the payload checksum does not match");
  }
  *payload = body;
  return {};
}

Decoded VerifyEnvelope(std::span<const std::uint8_t> payload, const DecodeLimits& limits) {
  if (payload.size() < sizeof(flatbuffers::uoffset_t)) {
    return Fail(DecodeError::kMalformed, "an envelope of " + std::to_string(payload.size()) +
                                             " bytes is too short to hold a root offset");
  }
  if (payload.size() > limits.max_message_bytes) {
    return Fail(DecodeError::kTooLarge,
                "an envelope of " + std::to_string(payload.size()) + " bytes exceeds the limit");
  }
  Decoded d;
  if (reinterpret_cast<std::uintptr_t>(payload.data()) % 8 != 0) {
    d.aligned_copy.resize((payload.size() + 7) / 8);
    std::memcpy(d.aligned_copy.data(), payload.data(), payload.size());
    payload = {reinterpret_cast<const std::uint8_t*>(d.aligned_copy.data()), payload.size()};
  }
  flatbuffers::Verifier verifier(payload.data(), payload.size(), limits.max_depth,
                                 limits.max_tables);
  if (!fb::VerifyEnvelopeBuffer(verifier)) {
    return Fail(DecodeError::kMalformed, "the FlatBuffers verifier refused the envelope");
  }
  const fb::Envelope* env = fb::GetEnvelope(payload.data());
  // The Verifier accepts a union type without its value (the value is optional), so a reader
  // that trusts body_type() would follow a null pointer: refuse it here.
  if (env->body_type() == fb::Body::NONE || env->body() == nullptr) {
    return Fail(DecodeError::kNoBody, "the envelope carries no message");
  }
  d.envelope = env;
  return d;
}

Decoded Decode(std::span<const std::uint8_t> frame, std::uint64_t cluster_id,
               const DecodeLimits& limits) {
  std::span<const std::uint8_t> payload;
  Decoded d = Unframe(frame, limits, &payload);
  if (!d.ok()) return d;
  d = VerifyEnvelope(payload, limits);
  if (!d.ok()) return d;
  const fb::Envelope* env = d.envelope;
  if (env->schema_version() != kSchemaVersion) {
    return Fail(DecodeError::kWrongVersion,
                "schema version " + std::to_string(env->schema_version()) +
                    " is not the supported version " + std::to_string(kSchemaVersion));
  }
  if (env->cluster_id() != cluster_id) {
    return Fail(DecodeError::kWrongCluster, "cluster id " + std::to_string(env->cluster_id()) +
                                                " is not ours (" + std::to_string(cluster_id) +
                                                ")");
  }
  return d;
}

}  // namespace statesync::wire
