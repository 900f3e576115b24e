#include "statesync/node/data_dir.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <unistd.h>

#include <xxhash.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
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
    : dir_(std::move(dir)), lock_fd_(lock_fd), max_event_log_bytes_(max_event_log_bytes) {
  sync_wake_fd_ = ::eventfd(0, EFD_CLOEXEC);
  STATESYNC_CHECK(sync_wake_fd_ >= 0, "cannot create an eventfd for the HA state's sync");
  // Started here, before the node's loop takes a realtime class, so that it does not inherit it.
  sync_thread_ = std::thread([this] { SyncInBackground(); });
}

void DataDir::SyncInBackground() {
  pthread_setname_np(pthread_self(), "ss-state-sync");
  while (true) {
    std::uint64_t generation = 0;
    {
      std::lock_guard lock(sync_mu_);
      if (sync_asked_ > synced_up_to_) {
        generation = sync_asked_;
      } else if (stopping_) {
        return;
      }
    }
    if (generation == 0) {  // nothing to sync: wait for a save or the stop
      std::uint64_t wakes = 0;
      (void)!::read(sync_wake_fd_, &wakes, sizeof(wakes));
      continue;
    }
    const Status st = SyncStateFile();
    std::lock_guard lock(sync_mu_);
    if (!st.ok()) {
      sync_error_ = st;
      sync_asked_ = synced_up_to_;  // not retried: the node stops on the error
    } else {
      synced_up_to_ = std::max(synced_up_to_, generation);
    }
  }
}

bool DataDir::StateOnDisk() const {
  std::lock_guard lock(sync_mu_);
  return synced_up_to_ >= state_generation_;
}

Status DataDir::BackgroundSyncError() const {
  std::lock_guard lock(sync_mu_);
  return sync_error_;
}

Status DataDir::SyncStateFile() const {
  if (::fdatasync(state_fd_) != 0) {
    return Status::IOError(Errno("cannot sync " + (dir_ / kStateFile).string()));
  }
  return Status::Ok();
}

Status DataDir::SyncNow() {
  if (Status st = SyncStateFile(); !st.ok()) return st;
  std::lock_guard lock(sync_mu_);
  synced_up_to_ = std::max(synced_up_to_, state_generation_);
  return Status::Ok();
}

DataDir::~DataDir() {
  {
    std::lock_guard lock(sync_mu_);
    stopping_ = true;  // a sync asked for still runs: a clean stop leaves the state on the disk
  }
  const std::uint64_t one = 1;
  (void)!::write(sync_wake_fd_, &one, sizeof(one));
  sync_thread_.join();
  ::close(sync_wake_fd_);
  // Closing the descriptor releases the flock; the pid stays in the file for the curious.
  if (state_fd_ >= 0) ::close(state_fd_);
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

namespace {

// ha-state: two slots of kSlotBytes. A save overwrites the older slot in place and syncs its
// data only (fdatasync): the file's blocks are written once when it is created, so a save
// changes no metadata and does not wait for a journal commit of the file system, which under a
// busy store took 30-110 ms here where this takes about a millisecond. A slot torn by a crash
// fails its checksum and the other slot, one save older, is read.
//   magic "SSHA" (4) | version (4) | generation (8) | length (4) | JSON (length) | ... |
//   XXH3 of everything before it (8, at the slot's end)
constexpr std::size_t kSlotBytes = 4096;
constexpr char kSlotMagic[4] = {'S', 'S', 'H', 'A'};
constexpr std::uint32_t kSlotVersion = 1;
constexpr std::size_t kSlotHeader = 4 + 4 + 8 + 4;

std::string EncodeState(const failover::DurableState& s) {
  json::object o;
  o["epoch"] = s.epoch;
  o["role"] = std::string(failover::RoleName(s.role));
  o["planned_stop"] = s.planned_stop;
  o["voted_round"] = s.voted_round;
  o["voted_for"] = s.voted_for;
  o["boots"] = s.boots;
  o["reserved_epoch"] = s.reserved_epoch;
  return json::serialize(o);
}

// Why the text is not a state, or empty when `out` holds it.
std::string DecodeState(const std::string& text, failover::DurableState* out) {
  boost::system::error_code ec;
  const json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return "not a JSON object";
  const json::object& o = v.as_object();
  failover::DurableState s;
  try {
    s.epoch = json::value_to<std::uint64_t>(o.at("epoch"));
    auto role = ParseRole(json::value_to<std::string>(o.at("role")));
    if (!role.ok()) return role.status().message();
    s.role = *role;
    s.planned_stop = o.at("planned_stop").as_bool();
    s.voted_round = json::value_to<std::uint64_t>(o.at("voted_round"));
    s.voted_for = json::value_to<std::string>(o.at("voted_for"));
    s.boots = json::value_to<std::uint64_t>(o.at("boots"));
    // Absent in files written before epochs were reserved: nothing was reserved then.
    if (const json::value* reserved = o.if_contains("reserved_epoch")) {
      s.reserved_epoch = json::value_to<std::uint64_t>(*reserved);
    }
  } catch (const std::exception& e) {
    return std::string("a field is missing or of the wrong type (") + e.what() + ")";
  }
  *out = s;
  return "";
}

std::string EncodeSlot(std::uint64_t generation, const std::string& text) {
  std::string slot(kSlotBytes, '\0');
  char* p = slot.data();
  std::memcpy(p, kSlotMagic, 4);
  std::memcpy(p + 4, &kSlotVersion, 4);
  std::memcpy(p + 8, &generation, 8);
  const auto length = static_cast<std::uint32_t>(text.size());
  std::memcpy(p + 16, &length, 4);
  std::memcpy(p + kSlotHeader, text.data(), text.size());
  const std::uint64_t sum = XXH3_64bits(p, kSlotBytes - 8);
  std::memcpy(p + kSlotBytes - 8, &sum, 8);
  return slot;
}

struct Slot {
  std::uint64_t generation = 0;
  std::string text;
};

std::optional<Slot> DecodeSlot(std::string_view bytes) {
  if (bytes.size() != kSlotBytes || std::memcmp(bytes.data(), kSlotMagic, 4) != 0) {
    return std::nullopt;
  }
  std::uint64_t sum = 0;
  std::memcpy(&sum, bytes.data() + kSlotBytes - 8, 8);
  if (XXH3_64bits(bytes.data(), kSlotBytes - 8) != sum) return std::nullopt;
  std::uint32_t version = 0;
  std::uint32_t length = 0;
  Slot slot;
  std::memcpy(&version, bytes.data() + 4, 4);
  std::memcpy(&slot.generation, bytes.data() + 8, 8);
  std::memcpy(&length, bytes.data() + 16, 4);
  if (version != kSlotVersion || length > kSlotBytes - kSlotHeader - 8) return std::nullopt;
  slot.text.assign(bytes.data() + kSlotHeader, length);
  return slot;
}

}  // namespace

Result<failover::DurableState> DataDir::LoadState() const {
  const fs::path file = dir_ / kStateFile;
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    if (!fs::exists(file)) return failover::DurableState{};
    return Status::IOError("cannot read " + file.string());
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string bytes = buffer.str();
  const auto refuse = [&](const std::string& why) {
    return Status::Corruption(file.string() + ": " + why +
                              "; the node's epoch and vote cannot be known, so it does not start "
                              "(move the file away to start as a new node)");
  };
  failover::DurableState s;
  const bool slotted = bytes.size() == 2 * kSlotBytes ||
                       (bytes.size() >= 4 && std::memcmp(bytes.data(), kSlotMagic, 4) == 0);
  if (!slotted) {
    // The earlier format: the JSON object alone (replaced by a slot file at the next save).
    if (std::string why = DecodeState(bytes, &s); !why.empty()) return refuse(why);
    state_generation_ = 0;
    return s;
  }
  std::optional<Slot> newest;
  for (std::size_t k = 0; k * kSlotBytes < bytes.size(); ++k) {
    auto slot = DecodeSlot(std::string_view(bytes).substr(k * kSlotBytes, kSlotBytes));
    if (slot && (!newest || slot->generation > newest->generation)) newest = std::move(slot);
  }
  if (!newest) return refuse("neither of its two copies is whole (checksums differ)");
  if (std::string why = DecodeState(newest->text, &s); !why.empty()) return refuse(why);
  state_generation_ = newest->generation;
  return s;
}

Status DataDir::SaveState(const failover::DurableState& s, bool sync) {
  const std::string text = EncodeState(s);
  const fs::path file = dir_ / kStateFile;
  if (state_fd_ < 0) {
    // First save of this run: write a whole new file (both slots' blocks allocated and
    // written) and put it in place; later saves overwrite a slot of it.
    if (state_generation_ == 0 && fs::exists(file)) {
      if (auto current = LoadState(); !current.ok()) state_generation_ = 0;
    }
    const std::uint64_t generation = state_generation_ + 1;
    std::string bytes(2 * kSlotBytes, '\0');
    bytes.replace((generation % 2) * kSlotBytes, kSlotBytes, EncodeSlot(generation, text));
    const fs::path temporary = dir_ / (std::string(kStateFile) + ".new");
    const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return Status::IOError(Errno("cannot create " + temporary.string()));
    Status st = WriteAll(fd, bytes, temporary);
    // Synced even without `sync`: the slots' blocks must be allocated (not delayed) before
    // later saves overwrite them in place. Once per run, at start-up in practice.
    if (st.ok() && ::fsync(fd) != 0) {
      st = Status::IOError(Errno("cannot sync " + temporary.string()));
    }
    ::close(fd);
    if (!st.ok()) return st;
    if (::rename(temporary.c_str(), file.c_str()) != 0) {
      return Status::IOError(Errno("cannot replace " + file.string()));
    }
    if (Status synced = SyncDirectory(dir_); !synced.ok()) return synced;
    state_fd_ = ::open(file.c_str(), O_RDWR | O_CLOEXEC);
    if (state_fd_ < 0) return Status::IOError(Errno("cannot open " + file.string()));
    std::lock_guard lock(sync_mu_);
    state_generation_ = generation;
    synced_up_to_ = generation;
    return Status::Ok();
  }
  const std::uint64_t generation = state_generation_ + 1;
  bool previous_on_disk = false;
  {
    std::lock_guard lock(sync_mu_);
    if (!sync_error_.ok()) return sync_error_;
    previous_on_disk = synced_up_to_ >= state_generation_;
  }
  // This save overwrites the older slot, which may be the only synced one: the newer slot is
  // made durable first, or a power loss tearing this write could leave neither (or a state
  // from before both).
  if (!previous_on_disk) {
    if (Status st = SyncNow(); !st.ok()) return st;
  }
  const std::string slot = EncodeSlot(generation, text);
  const off_t offset = static_cast<off_t>((generation % 2) * kSlotBytes);
  std::size_t done = 0;
  while (done < slot.size()) {
    const ssize_t n = ::pwrite(state_fd_, slot.data() + done, slot.size() - done,
                               offset + static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::IOError(Errno("cannot write " + file.string()));
    done += static_cast<std::size_t>(n);
  }
  if (sync) {
    if (Status st = SyncStateFile(); !st.ok()) return st;
  }
  std::lock_guard lock(sync_mu_);
  state_generation_ = generation;
  if (sync) {
    synced_up_to_ = generation;
  } else {
    sync_asked_ = generation;
    const std::uint64_t one = 1;
    (void)!::write(sync_wake_fd_, &one, sizeof(one));
  }
  return Status::Ok();
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
