#include "file_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>

namespace statesync::detail {

std::string Why(const std::string& what, const std::filesystem::path& path) {
  return what + " " + path.string() + ": " + std::strerror(errno);
}

std::string HexName(std::uint64_t n) {
  char name[17];
  std::snprintf(name, sizeof name, "%016llx", static_cast<unsigned long long>(n));
  return name;
}

std::optional<std::uint64_t> ParseHexName(std::string_view name) {
  std::uint64_t n = 0;
  const char* end = name.data() + name.size();
  if (name.size() != 16 || name.find_first_of("ABCDEF") != std::string_view::npos) {
    return std::nullopt;
  }
  const auto [at, ec] = std::from_chars(name.data(), end, n, 16);
  if (ec != std::errc() || at != end) return std::nullopt;
  return n;
}

Status CreateDirectories(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IOError("cannot create " + dir.string() + ": " + ec.message());
  return Status::Ok();
}

Status SyncDirectory(const std::filesystem::path& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.ok() || ::fsync(fd.get()) != 0) return Status::IOError(Why("cannot sync", dir));
  return Status::Ok();
}

Status RemoveIfPresent(const std::filesystem::path& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Status::IOError(Why("cannot remove", path));
  }
  return Status::Ok();
}

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
}

Fd& Fd::operator=(Fd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

Status WriteFully(int fd, std::uint64_t offset, std::string_view data,
                  const std::filesystem::path& path) {
  while (!data.empty()) {
    const ssize_t n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::IOError(Why("cannot write", path));
    }
    data.remove_prefix(static_cast<std::size_t>(n));
    offset += static_cast<std::uint64_t>(n);
  }
  return Status::Ok();
}

Status ReadFully(int fd, std::uint64_t offset, std::size_t max_bytes, std::string* out,
                 const std::filesystem::path& path) {
  out->resize(max_bytes);
  std::size_t got = 0;
  while (got < max_bytes) {
    const ssize_t n =
        ::pread(fd, out->data() + got, max_bytes - got, static_cast<off_t>(offset + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::IOError(Why("cannot read", path));
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  out->resize(got);
  return Status::Ok();
}

}  // namespace statesync::detail
