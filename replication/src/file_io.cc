#include "file_io.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace statesync::detail {

std::string Why(const std::string& what, const std::filesystem::path& path) {
  return what + " " + path.string() + ": " + std::strerror(errno);
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
