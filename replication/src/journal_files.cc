#include "journal_files.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace statesync::detail {
namespace {

constexpr std::string_view kSuffix = ".seg";
// Write-back of a segment starts after every this many bytes, as RocksDB's wal_bytes_per_sync
// did for the WAL: dirty pages left to pile up were written back all at once later, holding up
// the appends around it.
constexpr std::uint64_t kWriteBackBytes = 4 << 20;

Result<std::vector<std::uint64_t>> ListSegments(const std::filesystem::path& dir) {
  std::vector<std::uint64_t> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::filesystem::path& path = entry.path();
    if (path.extension() != kSuffix) continue;
    if (auto n = ParseHexName(path.stem().string())) out.push_back(*n);
  }
  if (ec) return Status::IOError("cannot list " + dir.string() + ": " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

// ss-journal-io: reserves the blocks of segments before they are written, and starts the
// write-back of ranges already written.
class JournalFiles::Background {
 public:
  explicit Background(const JournalFiles& files) : files_(files) {
    thread_ = std::thread([this] { Run(); });
  }
  ~Background() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }

  void Reserve(std::uint64_t segment) {
    {
      std::lock_guard lock(mu_);
      reserve_ = segment;
    }
    cv_.notify_one();
  }
  void WriteBack(std::shared_ptr<const Fd> fd, std::uint64_t from, std::uint64_t to) {
    {
      std::lock_guard lock(mu_);
      write_back_.push_back({std::move(fd), from, to});
    }
    cv_.notify_one();
  }

 private:
  struct Range {
    std::shared_ptr<const Fd> fd;
    std::uint64_t from, to;
  };

  void Run() {
    pthread_setname_np(pthread_self(), "ss-journal-io");
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || reserve_ != 0 || !write_back_.empty(); });
      if (!write_back_.empty()) {
        Range r = std::move(write_back_.front());
        write_back_.pop_front();
        lock.unlock();
        // Only starts the write-back; a failure here is seen by a later sync or read.
        (void)::sync_file_range(r.fd->get(), static_cast<off_t>(r.from),
                                static_cast<off_t>(r.to - r.from), SYNC_FILE_RANGE_WRITE);
        lock.lock();
        continue;
      }
      if (reserve_ != 0) {
        const std::uint64_t segment = std::exchange(reserve_, 0);
        lock.unlock();
        ReserveBlocks(segment);
        lock.lock();
        continue;
      }
      if (stop_) return;
    }
  }

  // Best effort: without the reservation the appends allocate as they go, as they did before.
  void ReserveBlocks(std::uint64_t segment) const {
    const std::filesystem::path path = files_.SegmentPath(segment);
    const Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    if (!fd.ok()) return;
    (void)::fallocate(fd.get(), FALLOC_FL_KEEP_SIZE, 0, static_cast<off_t>(files_.segment_bytes_));
  }

  const JournalFiles& files_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::uint64_t reserve_ = 0;  // a segment to reserve blocks for (0: none)
  std::deque<Range> write_back_;
  std::thread thread_;
};

JournalFiles::JournalFiles(std::filesystem::path dir, std::uint64_t segment_bytes, bool sync)
    : dir_(std::move(dir)),
      segment_bytes_(std::max<std::uint64_t>(segment_bytes, 1)),
      sync_(sync) {}

JournalFiles::~JournalFiles() = default;

std::filesystem::path JournalFiles::SegmentPath(std::uint64_t segment) const {
  return dir_ / (HexName(segment) + std::string(kSuffix));
}

Status JournalFiles::ResumeAt(std::optional<FramePlace> end) {
  if (Status st = CreateDirectories(dir_); !st.ok()) return st;
  auto segments = ListSegments(dir_);
  if (!segments.ok()) return segments.status();
  if (!end) {
    // Nothing indexed: a new segment after any left (the store drops those at its next trim).
    return OpenSegment(segments->empty() ? 1 : segments->back() + 1, 0);
  }
  for (const std::uint64_t n : *segments) {
    if (n <= end->segment) continue;
    // The next segment, empty, with its blocks reserved: kept for the appends to come (removing
    // it would give its blocks back, which on a disk mounted with `discard` waits for the disk).
    auto size = SegmentSize(n);
    if (!size.ok()) return size.status();
    if (n == end->segment + 1 && *size == 0) continue;
    // Written after the newest indexed frame: appends that never got their index entry.
    if (Status st = RemoveIfPresent(SegmentPath(n)); !st.ok()) return st;
  }
  auto got = SegmentSize(end->segment);
  if (!got.ok()) return got.status();
  const std::uint64_t size = *got;
  if (size < end->offset) {
    return Status::Corruption("the journal segment " + SegmentPath(end->segment).string() +
                              " holds " + std::to_string(size) + " bytes, and the index names " +
                              std::to_string(end->offset));
  }
  return OpenSegment(end->segment, end->offset);
}

Status JournalFiles::OpenSegment(std::uint64_t segment, std::uint64_t size) {
  const std::filesystem::path path = SegmentPath(segment);
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
  if (!fd.ok()) return Status::IOError(Why("cannot open", path));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Status::IOError(Why("cannot look at", path));
  // Cut an unindexed tail: the next frame goes where it began. Only when there is one: cutting
  // a file to its own size also gives back the blocks reserved past it.
  if (static_cast<std::uint64_t>(st.st_size) != size &&
      ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    return Status::IOError(Why("cannot truncate", path));
  }
  if (sync_) {
    if (Status s = SyncDirectory(dir_); !s.ok()) return s;
  }
  if (fd_ != nullptr) RequestWriteBack();  // the rest of the segment left behind
  fd_ = std::make_shared<const Fd>(std::move(fd));
  offset_ = size;
  written_back_to_ = size;
  current_.store(segment, std::memory_order_release);
  if (background_ == nullptr) background_ = std::make_unique<Background>(*this);
  background_->Reserve(segment + 1);
  return Status::Ok();
}

void JournalFiles::RequestWriteBack() {
  if (sync_ || offset_ <= written_back_to_) return;  // synced frames are on the disk already
  background_->WriteBack(fd_, written_back_to_, offset_);
  written_back_to_ = offset_;
}

Status JournalFiles::StartSegment() {
  return OpenSegment(current_segment() + 1, 0);
}

Result<FramePlace> JournalFiles::Append(std::span<const std::uint8_t> frame) {
  if (offset_ > 0 && offset_ + frame.size() > segment_bytes_) {
    if (Status st = StartSegment(); !st.ok()) return st;
  }
  const std::filesystem::path path = SegmentPath(current_segment());
  const std::string_view bytes(reinterpret_cast<const char*>(frame.data()), frame.size());
  if (Status st = WriteFully(fd_->get(), offset_, bytes, path); !st.ok()) return st;
  const FramePlace at{current_segment(), offset_};
  offset_ += frame.size();
  if (sync_) {
    if (::fdatasync(fd_->get()) != 0) return Status::IOError(Why("cannot sync", path));
  } else if (offset_ - written_back_to_ >= kWriteBackBytes) {
    RequestWriteBack();
  }
  return at;
}

Status JournalFiles::Read(FramePlace at, std::size_t bytes, std::string* out,
                          ReadHandle* keep) const {
  const std::filesystem::path path = SegmentPath(at.segment);
  ReadHandle here;
  ReadHandle& open = keep != nullptr ? *keep : here;
  if (!open.fd.ok() || open.segment != at.segment) {
    open.fd = Fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    open.segment = at.segment;
    if (!open.fd.ok()) {
      if (errno == ENOENT) {
        return Status::NotFound("the journal segment " + path.string() + " is gone");
      }
      return Status::IOError(Why("cannot open", path));
    }
  }
  if (Status st = ReadFully(open.fd.get(), at.offset, bytes, out, path); !st.ok()) return st;
  if (out->size() != bytes) {
    return Status::Corruption("the journal segment " + path.string() + " ends before byte " +
                              std::to_string(at.offset + bytes));
  }
  return Status::Ok();
}

Result<std::uint64_t> JournalFiles::SegmentSize(std::uint64_t segment) const {
  const std::filesystem::path path = SegmentPath(segment);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return std::uint64_t{0};
    return Status::IOError(Why("cannot look at", path));
  }
  return static_cast<std::uint64_t>(st.st_size);
}

Status JournalFiles::DropBefore(std::uint64_t segment) const {
  const std::uint64_t limit = std::min(segment, current_segment());
  auto segments = ListSegments(dir_);
  if (!segments.ok()) return segments.status();
  for (const std::uint64_t n : *segments) {
    if (n >= limit) break;
    if (Status st = RemoveIfPresent(SegmentPath(n)); !st.ok()) return st;
  }
  return Status::Ok();
}

}  // namespace statesync::detail
