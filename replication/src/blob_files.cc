#include "blob_files.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "file_io.h"

namespace statesync::detail {
Status BlobFiles::Open() const {
  return CreateDirectories(dir_);
}

std::filesystem::path BlobFiles::PartPath(std::uint64_t seq) const {
  return dir_ / (HexName(seq) + ".part");
}
std::filesystem::path BlobFiles::CompletePath(std::uint64_t seq) const {
  return dir_ / HexName(seq);
}

Status BlobFiles::WritePart(std::uint64_t seq, std::uint64_t offset, std::string_view data) const {
  // Nothing to write past the start: do not create a partial file. (The empty chunk that
  // completes a blob whose last bytes arrived before a crash must find the file published by
  // then, not a new empty one.)
  if (data.empty() && offset > 0) return Status::Ok();
  const std::filesystem::path path = PartPath(seq);
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | (offset == 0 ? O_TRUNC : 0), 0600));
  if (!fd.ok()) return Status::IOError(Why("cannot open", path));
  if (Status st = WriteFully(fd.get(), offset, data, path); !st.ok()) return st;
  if (sync_ && ::fdatasync(fd.get()) != 0) return Status::IOError(Why("cannot sync", path));
  return Status::Ok();
}

Status BlobFiles::Publish(std::uint64_t seq) const {
  const std::filesystem::path part = PartPath(seq);
  const std::filesystem::path complete = CompletePath(seq);
  {
    // On the disk before the store records the blob, whatever `sync`: the record and the bytes
    // are in two files, and a power loss must not leave a recorded blob without its data.
    Fd fd(::open(part.c_str(), O_WRONLY | O_CLOEXEC));
    if (fd.ok() && ::fdatasync(fd.get()) != 0) return Status::IOError(Why("cannot sync", part));
  }
  if (::rename(part.c_str(), complete.c_str()) != 0) {
    // Published before a crash, and not yet recorded: nothing left to do.
    if (errno == ENOENT && ::access(complete.c_str(), F_OK) == 0) return Status::Ok();
    return Status::IOError(Why("cannot rename " + part.string() + " to", complete));
  }
  return sync_ ? SyncDirectory(dir_) : Status::Ok();
}

Status BlobFiles::RemovePart(std::uint64_t seq) const {
  return RemoveIfPresent(PartPath(seq));
}

Status BlobFiles::Read(std::uint64_t seq, std::uint64_t size, std::uint64_t offset,
                       std::size_t max_bytes, std::string* out) const {
  out->clear();
  if (offset >= size) return Status::Ok();
  const std::filesystem::path path = CompletePath(seq);
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.ok()) {
    return Status::Corruption("blob " + std::to_string(seq) +
                              " has lost its data: " + Why("cannot open", path));
  }
  const std::size_t want =
      static_cast<std::size_t>(std::min<std::uint64_t>(max_bytes, size - offset));
  if (Status st = ReadFully(fd.get(), offset, want, out, path); !st.ok()) return st;
  if (out->size() != want) {
    return Status::Corruption("blob " + std::to_string(seq) + " misses bytes: " + path.string() +
                              " ends before " + std::to_string(size) + " bytes");
  }
  return Status::Ok();
}

Status BlobFiles::ReadWhole(std::uint64_t seq, std::string* out) const {
  out->clear();
  // The partial file, or the complete one when it was published before a crash and not yet
  // recorded.
  for (const std::filesystem::path& path : {PartPath(seq), CompletePath(seq)}) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.ok()) {
      if (errno == ENOENT) continue;
      return Status::IOError(Why("cannot open", path));
    }
    std::error_code ec;
    const auto size = std::filesystem::file_size(path, ec);
    if (ec) return Status::IOError("cannot size " + path.string() + ": " + ec.message());
    return ReadFully(fd.get(), 0, size, out, path);
  }
  return Status::Ok();  // nothing received yet
}

}  // namespace statesync::detail
