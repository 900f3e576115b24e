// Status and Result: errors that can happen (I/O, decode, stale epoch, a full queue) travel as
// values. Exceptions thrown by third-party libraries are converted at the adapter that calls
// them; a broken invariant aborts through STATESYNC_CHECK with a message that names it.
//
// Thread-safety: plain values; distinct objects may be used from distinct threads.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace statesync {

class Status {
 public:
  enum class Code : unsigned char {
    kOk = 0,
    kInvalidArgument,     // the caller passed something malformed (a bad key, a bad config value)
    kNotFound,            // the key or file does not exist
    kCorruption,          // stored or received bytes failed verification
    kIOError,             // the operating system or the storage engine reported a failure
    kResourceExhausted,   // a bounded queue or log is full; nothing was changed, retry later
    kFailedPrecondition,  // the call is not allowed in the current state
    kStaleEpoch,          // a message from an epoch older than the newest one seen
    kUnavailable,         // a peer cannot be reached
  };

  Status() = default;
  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string msg) {
    return {Code::kInvalidArgument, std::move(msg)};
  }
  static Status NotFound(std::string msg) { return {Code::kNotFound, std::move(msg)}; }
  static Status Corruption(std::string msg) { return {Code::kCorruption, std::move(msg)}; }
  static Status IOError(std::string msg) { return {Code::kIOError, std::move(msg)}; }
  static Status ResourceExhausted(std::string msg) {
    return {Code::kResourceExhausted, std::move(msg)};
  }
  static Status FailedPrecondition(std::string msg) {
    return {Code::kFailedPrecondition, std::move(msg)};
  }
  static Status StaleEpoch(std::string msg) { return {Code::kStaleEpoch, std::move(msg)}; }
  static Status Unavailable(std::string msg) { return {Code::kUnavailable, std::move(msg)}; }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string ToString() const {
    return ok() ? std::string("OK") : std::string(CodeName(code_)) + ": " + message_;
  }

  static std::string_view CodeName(Code code) {
    switch (code) {
      case Code::kOk:
        return "OK";
      case Code::kInvalidArgument:
        return "invalid argument";
      case Code::kNotFound:
        return "not found";
      case Code::kCorruption:
        return "corruption";
      case Code::kIOError:
        return "I/O error";
      case Code::kResourceExhausted:
        return "resource exhausted";
      case Code::kFailedPrecondition:
        return "failed precondition";
      case Code::kStaleEpoch:
        return "stale epoch";
      case Code::kUnavailable:
        return "unavailable";
    }
    return "unknown";
  }

 private:
  Status(Code code, std::string msg) : code_(code), message_(std::move(msg)) {}
  Code code_ = Code::kOk;
  std::string message_;
};

// A value or the Status that explains why there is none.
// REQUIRES: value() only when ok(); status() only when !ok().
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    if (std::get<Status>(v_).ok()) {
      std::fprintf(stderr, "statesync: a Result was built from an OK Status without a value\n");
      std::abort();
    }
  }
  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const { return std::get<Status>(v_); }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

[[noreturn]] inline void CheckFailed(const char* expr, const char* file, int line,
                                     const char* why) {
  std::fprintf(stderr, "statesync: invariant broken at %s:%d: %s (%s)\n", file, line, why, expr);
  std::abort();
}

}  // namespace statesync

// Aborts with a clear message when an invariant does not hold. Not for errors that can happen.
#define STATESYNC_CHECK(cond, why)                                         \
  do {                                                                     \
    if (!(cond)) ::statesync::CheckFailed(#cond, __FILE__, __LINE__, why); \
  } while (0)
