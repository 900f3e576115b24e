// File helpers shared by the store's own files (BlobFiles, JournalFiles): a descriptor closed
// on every path out, whole writes and reads at an offset, errors that name the file.
//
// Internal to replication. Thread-safety: none needed (no shared state).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
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

// `n` as 16 lowercase hex digits: the name of a numbered file, in numeric order when sorted.
std::string HexName(std::uint64_t n);
// The number a HexName stands for, if `name` is one.
std::optional<std::uint64_t> ParseHexName(std::string_view name);

// Creates `dir` and its parents if needed.
Status CreateDirectories(const std::filesystem::path& dir);
// fsyncs `dir`, so that a file created or renamed in it stays after a power loss.
Status SyncDirectory(const std::filesystem::path& dir);
// Removes `path`; Ok when it is not there.
Status RemoveIfPresent(const std::filesystem::path& path);

// All of `data` at `offset`, through short writes and interruptions.
Status WriteFully(int fd, std::uint64_t offset, std::string_view data,
                  const std::filesystem::path& path);
// Up to `max_bytes` from `offset` into `out` (resized to what was read); fewer only at the end
// of the file.
Status ReadFully(int fd, std::uint64_t offset, std::size_t max_bytes, std::string* out,
                 const std::filesystem::path& path);

}  // namespace statesync::detail
