// File helpers shared by the store's own files (BlobFiles, JournalFiles): a descriptor closed
// on every path out, whole writes and reads at an offset, errors that name the file.
//
// Internal to replication. Thread-safety: none needed (no shared state).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "statesync/common/status.h"

namespace statesync::detail {

// `what` and the path, with the reason errno gives.
std::string Why(const std::string& what, const std::filesystem::path& path);

// A file descriptor closed on every path out.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd();
  Fd(Fd&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  Fd& operator=(Fd&& other) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }

 private:
  int fd_;
};

// All of `data` at `offset`, through short writes and interruptions.
Status WriteFully(int fd, std::uint64_t offset, std::string_view data,
                  const std::filesystem::path& path);
// Up to `max_bytes` from `offset` into `out` (resized to what was read); fewer only at the end
// of the file.
Status ReadFully(int fd, std::uint64_t offset, std::size_t max_bytes, std::string* out,
                 const std::filesystem::path& path);

}  // namespace statesync::detail
