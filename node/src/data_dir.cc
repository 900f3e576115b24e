#include "statesync/node/data_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace statesync::node {
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

constexpr char kLockFile[] = "LOCK";
constexpr char kStateFile[] = "ha-state";
constexpr char kEventLog[] = "events.log";

std::string Errno(const std::string& what) {
  return what + ": " + std::strerror(errno);
}

Status WriteAll(int fd, const std::string& bytes, const fs::path& file) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::IOError(Errno("cannot write " + file.string()));
    done += static_cast<std::size_t>(n);
  }
  return Status::Ok();
}

Status SyncDirectory(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::IOError(Errno("cannot open the directory " + dir.string()));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Status::IOError(Errno("cannot sync the directory " + dir.string()));
  return Status::Ok();
}

Result<failover::EffectiveRole> ParseRole(std::string_view name) {
  using failover::EffectiveRole;
  for (EffectiveRole r :
       {EffectiveRole::kOff, EffectiveRole::kPrimary, EffectiveRole::kSecondary,
        EffectiveRole::kHoldOff, EffectiveRole::kFailed, EffectiveRole::kWitness}) {
    if (failover::RoleName(r) == name) return r;
  }
  return Status::InvalidArgument("'" + std::string(name) + "' is not a role");
}

std::vector<std::string> ReadLines(const fs::path& file) {
  std::vector<std::string> lines;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) {
    if (in.eof()) break;  // no newline after it: cut by a crash mid-write
    if (!line.empty()) lines.push_back(std::move(line));
  }
  return lines;
}

}  // namespace

DataDir::DataDir(fs::path dir, int lock_fd, std::uint64_t max_event_log_bytes)
    : dir_(std::move(dir)), lock_fd_(lock_fd), max_event_log_bytes_(max_event_log_bytes) {}

DataDir::~DataDir() {
  // Closing the descriptor releases the flock; the pid stays in the file for the curious.
  ::close(lock_fd_);
}

Result<std::unique_ptr<DataDir>> DataDir::Open(const fs::path& dir,
                                               std::uint64_t max_event_log_bytes) {
  std::error_code ec;
  const bool created = fs::create_directories(dir, ec);
  if (ec) {
    return Status::IOError("cannot create the data directory " + dir.string() + ": " +
                           ec.message());
  }
  // A directory made here is on the disk before anything in it is relied on (ha-state).
  if (created) {
    if (Status st = SyncDirectory(fs::absolute(dir).parent_path()); !st.ok()) return st;
  }
  const fs::path lock = dir / kLockFile;
  const int fd = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IOError(Errno("cannot open " + lock.string()));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int why = errno;
    char pid[32] = {};
    const ssize_t n = ::pread(fd, pid, sizeof(pid) - 1, 0);
    ::close(fd);
    if (why != EWOULDBLOCK) {
      errno = why;
      return Status::IOError(Errno("cannot lock " + lock.string()));
    }
    std::string holder = n > 0 ? std::string(pid, static_cast<std::size_t>(n)) : "";
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    return Status::FailedPrecondition(
        "the data directory " + dir.string() + " is in use by another statesyncd" +
        (holder.empty() ? "" : " (pid " + holder + ")") + ": one node per directory");
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    const Status st = Status::IOError(Errno("cannot write the pid into " + lock.string()));
    ::close(fd);
    return st;
  }
  return std::unique_ptr<DataDir>(new DataDir(dir, fd, max_event_log_bytes));
}

Result<failover::DurableState> DataDir::LoadState() const {
  const fs::path file = dir_ / kStateFile;
  std::ifstream in(file);
  if (!in) {
    if (!fs::exists(file)) return failover::DurableState{};
    return Status::IOError("cannot read " + file.string());
  }
  std::stringstream text;
  text << in.rdbuf();
  const auto refuse = [&](const std::string& why) {
    return Status::Corruption(file.string() + ": " + why +
                              "; the node's epoch and vote cannot be known, so it does not start "
                              "(move the file away to start as a new node)");
  };
  boost::system::error_code ec;
  const json::value v = json::parse(text.str(), ec);
  if (ec || !v.is_object()) return refuse("not a JSON object");
  const json::object& o = v.as_object();
  failover::DurableState s;
  try {
    s.epoch = json::value_to<std::uint64_t>(o.at("epoch"));
    auto role = ParseRole(json::value_to<std::string>(o.at("role")));
    if (!role.ok()) return refuse(role.status().message());
    s.role = *role;
    s.planned_stop = o.at("planned_stop").as_bool();
    s.voted_round = json::value_to<std::uint64_t>(o.at("voted_round"));
    s.voted_for = json::value_to<std::string>(o.at("voted_for"));
    s.boots = json::value_to<std::uint64_t>(o.at("boots"));
  } catch (const std::exception& e) {
    return refuse(std::string("a field is missing or of the wrong type (") + e.what() + ")");
  }
  return s;
}

Status DataDir::SaveState(const failover::DurableState& s) {
  json::object o;
  o["epoch"] = s.epoch;
  o["role"] = std::string(failover::RoleName(s.role));
  o["planned_stop"] = s.planned_stop;
  o["voted_round"] = s.voted_round;
  o["voted_for"] = s.voted_for;
  o["boots"] = s.boots;
  const std::string text = json::serialize(o) + "\n";
  const fs::path file = dir_ / kStateFile;
  const fs::path temporary = dir_ / (std::string(kStateFile) + ".new");
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IOError(Errno("cannot create " + temporary.string()));
  Status st = WriteAll(fd, text, temporary);
  if (st.ok() && ::fsync(fd) != 0) st = Status::IOError(Errno("cannot sync " + temporary.string()));
  ::close(fd);
  if (!st.ok()) return st;
  if (::rename(temporary.c_str(), file.c_str()) != 0) {
    return Status::IOError(Errno("cannot replace " + file.string()));
  }
  return SyncDirectory(dir_);
}

Status DataDir::AppendEvent(const std::string& json_object) {
  const fs::path file = dir_ / kEventLog;
  std::error_code ec;
  const auto size = fs::file_size(file, ec);
  if (!ec && size + json_object.size() + 1 > max_event_log_bytes_) {
    fs::rename(file, dir_ / (std::string(kEventLog) + ".1"), ec);
    if (ec) return Status::IOError("cannot rotate " + file.string() + ": " + ec.message());
  }
  const int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IOError(Errno("cannot open " + file.string()));
  // After a line cut by a crash, start on a line of its own.
  std::string line = json_object + "\n";
  const off_t end = ::lseek(fd, 0, SEEK_END);
  char last = '\n';
  if (end > 0 && ::pread(fd, &last, 1, end - 1) == 1 && last != '\n') line.insert(0, "\n");
  // One write per line: a reader never sees half of one (O_APPEND).
  Status st = WriteAll(fd, line, file);
  ::close(fd);
  return st;
}

Result<std::vector<std::string>> DataDir::RecentEvents(std::size_t max) const {
  std::vector<std::string> lines = ReadLines(dir_ / kEventLog);
  if (lines.size() < max) {
    std::vector<std::string> older = ReadLines(dir_ / (std::string(kEventLog) + ".1"));
    older.insert(older.end(), std::make_move_iterator(lines.begin()),
                 std::make_move_iterator(lines.end()));
    lines = std::move(older);
  }
  if (lines.size() > max) lines.erase(lines.begin(), lines.end() - static_cast<long>(max));
  return lines;
}

}  // namespace statesync::node
