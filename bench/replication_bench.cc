// End-to-end replication benchmark: a write to the primary's table -> ZeroMQ -> the
// subordinate's RocksDB commit, with the primary in this process and the subordinate in a child
// process, both on this machine. Prints one JSON document (and writes it to --out).
//
// Cases (DESIGN.md and issue 3):
//   baseline   naive pipeline: ZeroMQ PUSH/PULL of 500-record batches into a default-options
//              RocksDB WriteBatch (sender and receiver in two processes)
//   a          distinct-key upserts of ~128-byte firewall sessions
//   b          session life cycles (create, 4 updates, close) with coalescing
//   c          blobs of 1 MB
//   lag        write -> subordinate commit lag at 50 % of (a)'s rate, without and with (c) running:
//              with the stream's I/O threads in the normal class (io_realtime_priority 0) and,
//              where the process may use SCHED_FIFO, at priority 10 (the `_io_realtime` fields:
//              what the default, kIoRealtimeWhenPermitted, gives here); and once in steady
//              state, after 4M sessions (lag_half_rate_steady; not with --quick)
//   catchup    catch-up time by CONTINUE (at once after the writes, and from a primary that has
//              materialized them) and by SNAPSHOT
//   limits     (only with --case limits; issue 6) the machine's limits with the same 1M records
//              (STATESYNC_BENCH_A_RECORDS sets another count), encoded before each clock starts:
//              ZeroMQ PUSH/PULL between two processes with no processing, and RocksDB WriteBatch
//              (default options, WAL on) with no network; then the naive pipeline and case (a),
//              all interleaved; statesync's rate as a fraction of each
//   lag-curve  (only with --case lag-curve; issue 6) the sustained sync-mode rate (the lag
//              case's writer asked for twice case (a)'s rate with 1M records; medians of the
//              repetitions), then the lag (as `lag`: sync mode, the default scheduling) at 10, 50
//              and 90 % of it, for STATESYNC_BENCH_LAG_SECONDS (5) after the warm-up
//   scaling    (only with --case scaling; issue 6) case (a) with 100k, 1M (repetitions, medians)
//              and 10M sessions (once): the rate, and the primary's resident memory grown per
//              session; then the rate at each size, the table settled first: 1M updates spread
//              over the table, once each (deltas/s)
//   fan-out    (only with --case fan-out; issue 6) case (a) with 1, 2 and 3 subordinate
//              processes, until all persisted the last record (repetitions interleaved, medians)
//   rejoin     (only with --case rejoin; issue 6) a subordinate with 1M sessions stops, misses
//              100k-10M new ones, restarts: the time until it has them (CONTINUE), once each
// Repetitions of `baseline` and `a` are interleaved; medians are reported. Every case but the
// lag's normal-class runs uses the replication options' defaults (`io_scheduling` in the JSON
// says what the default scheduling came to).
//
// Lag is measured on the primary: the time from a write until the subordinate's acknowledgement
// that it persisted it arrives back (so it includes the ack's return trip on loopback).
//
// Diagnostics: `--case a-only` runs statesync's case (a) alone with 4M records (for perf; env
// STATESYNC_BENCH_A_RECORDS sets another count), `--case at-size-only` the scaling case's 1M
// updates at a table of 10M (STATESYNC_BENCH_A_RECORDS sets another size),
// STATESYNC_BENCH_LAG_RATE=R runs the lag case at R records/s instead of half of (a)'s measured
// rate, STATESYNC_BENCH_LAG_DUMP=PATH writes every lag sample ("seconds since start,lag ms") to
// PATH.csv and PATH.blobs.csv (PATH.rt.csv and PATH.rt.blobs.csv for the io_realtime runs) and the
// blob lane's rate after each blob ("seconds since start,MB/s") to PATH.lane.csv, and the start on
// the steady clock in ns to PATH.t0 and PATH.blobs.t0, STATESYNC_BENCH_LAG_SECONDS=S measures each
// lag run for S seconds after its warm-up (default 8, 3 with --quick),
// STATESYNC_BENCH_CATCHUP_RECORDS=N runs the catch-up case for N records only,
// STATESYNC_BENCH_BATCH_DELTAS=N sets the primaries' batch_max_deltas (for A/B runs),
// STATESYNC_BENCH_LAG_WARM=N writes N sessions at full speed before the lag case starts (its
// steady state with a larger table, the materializer then busy with them),
// STATESYNC_BENCH_MATERIALIZE_GROUP=N sets both stores' materialize_group (deltas per round),
// STATESYNC_BENCH_BLOB_YIELD_US=N sets the primaries' blob_yield_delay (0: the blob lane does not
// yield), STATESYNC_BENCH_NO_MATERIALIZE=1 turns both stores' materializers off (the hot path
// alone), STATESYNC_BENCH_NAIVE_TUNED_ALLOCATOR=1 gives the baseline's receiver the allocator
// setting statesync's processes use (TuneProcessAllocator), and STATESYNC_BENCH_DEFAULT_ALLOCATOR=1
// keeps statesync's processes on the C library's defaults. STATESYNC_BENCH_NO_PREFAULT=1 gives the
// tables no PrefaultedPages (their memory faulted in on the owner's thread, for A/B runs), and
// STATESYNC_BENCH_PAGES_STATS=1 prints how each table's supplier served it (ready and cold takes).
// STATESYNC_BENCH_PERF_CTL=FIFO writes "enable" to FIFO when the timing of case (a), case (b) or
// the at-size updates starts and "disable" when it ends, for `perf record -D -1 --control
// fifo:FIFO`: a profile of the timed part alone, without the baseline's processes or the generation
// of the records.
#include <pthread.h>
#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include <spdlog/spdlog.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "bench_util.h"
#include "statesync/common/prefaulted_pages.h"
#include "statesync/replication/primary.h"
#include "statesync/replication/store.h"
#include "statesync/replication/subordinate.h"
#include "statesync/workload/workload.h"

namespace statesync::bench {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr std::uint64_t kCluster = 77;
const char* g_self = nullptr;

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}
TimePoint WallNow() {
  return std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
}
double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}
double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t i = std::min(v.size() - 1, static_cast<std::size_t>(p * v.size()));
  return v[i];
}

std::unique_ptr<Store> OpenStore(const fs::path& dir, bool materialize = true) {
  StoreOptions o;
  o.dir = dir;
  o.materialize = materialize && std::getenv("STATESYNC_BENCH_NO_MATERIALIZE") == nullptr;
  if (const char* g = std::getenv("STATESYNC_BENCH_MATERIALIZE_GROUP")) {
    o.materialize_group = std::stoull(g);
  }
  auto s = Store::Open(o);
  if (!s.ok()) {
    std::fprintf(stderr, "cannot open the store: %s\n", s.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(s).value();
}

// ---- the subordinate child ----
// The child publishes its progress in a small shared memory block (a memfd inherited across
// exec), which the parent polls. Not a file: a status file renamed into place every 10 ms freed
// a block each time, and on this disk (mounted with `discard`) every free is a synchronous
// discard; those were seen to stall for 200-500 ms and to load the device under the journal of
// the stream being measured (bpftrace, docs/BENCHMARKS.md).
struct SharedStatus {
  std::atomic<std::uint64_t> persisted{0}, materialized{0}, blob_seq{0}, state{0}, snapshots{0};
  // When the subordinate had started (store opened, tables loaded), on the steady clock in ns:
  // the same clock (CLOCK_MONOTONIC) in both processes.
  std::atomic<std::int64_t> started_ns{0};
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

// The tables' memory written ahead by a thread of its own (PrefaultedPages), as a node should;
// STATESYNC_BENCH_NO_PREFAULT maps it on the owner's thread instead, for A/B runs.
std::shared_ptr<PageSupplier> TablePages() {
  if (std::getenv("STATESYNC_BENCH_NO_PREFAULT") != nullptr) return nullptr;
  return std::make_shared<PrefaultedPages>();
}
// STATESYNC_BENCH_PAGES_STATS=1: how a table's supplier served it, on stderr.
void ReportPages(const char* who, const std::shared_ptr<PageSupplier>& pages) {
  const auto* prefaulted = dynamic_cast<const PrefaultedPages*>(pages.get());
  if (prefaulted == nullptr || std::getenv("STATESYNC_BENCH_PAGES_STATS") == nullptr) return;
  const PrefaultedPages::Stats st = prefaulted->stats();
  std::fprintf(stderr,
               "%s pages: ready takes %llu, cold takes %llu, ignored %llu, withdrawn %llu\n", who,
               static_cast<unsigned long long>(st.ready_takes),
               static_cast<unsigned long long>(st.cold_takes),
               static_cast<unsigned long long>(st.ignored_expects),
               static_cast<unsigned long long>(st.withdrawn));
}

SharedStatus* MapStatus(int fd) {
  void* p = ::mmap(nullptr, sizeof(SharedStatus), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    std::perror("mmap of the subordinate's status");
    std::exit(1);
  }
  return static_cast<SharedStatus*>(p);
}

int RunSubordinate(const char* dir, const char* endpoint, const char* status_fd,
                   int io_realtime_priority, const char* node_id) {
  static std::atomic<bool> stop{false};
  ::signal(SIGTERM, [](int) { stop = true; });
  // Stops with the benchmark: a run interrupted with SIGKILL left this child polling for its
  // primary for as long as nobody noticed (21 minutes once, under later measurements).
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (::getppid() == 1) return 5;  // the parent was gone before the line above
  spdlog::set_level(spdlog::level::warn);
  SharedStatus* shared = MapStatus(std::atoi(status_fd));
  auto store = OpenStore(dir);
  const std::shared_ptr<PageSupplier> pages = TablePages();
  auto table =
      std::make_unique<SessionTable>(SessionTableOptions{.writable = false, .pages = pages});
  if (!store->LoadInto(*table).ok()) return 3;
  replication::SubordinateOptions o;
  o.node_id = node_id;
  o.cluster_id = kCluster;
  o.primary_endpoint = endpoint;
  o.io_realtime_priority = io_realtime_priority;
  auto sub = replication::Subordinate::Start(o, *store, std::move(table));
  if (!sub.ok()) return 4;
  shared->started_ns = Clock::now().time_since_epoch() / std::chrono::nanoseconds(1);
  while (!stop) {
    const auto st = (*sub)->status();
    shared->persisted = store->applied().seq;
    shared->materialized = store->materialized().seq;
    shared->blob_seq = store->blob_cursor().seq;
    shared->snapshots = st.snapshots;
    shared->state = static_cast<std::uint64_t>(st.state);  // last: it says "connected"
    std::this_thread::sleep_for(2ms);
  }
  (*sub)->Stop();
  ReportPages("subordinate", pages);
  return 0;
}

struct SubStatus {
  Seq persisted = 0, materialized = 0;
  std::uint64_t blob_seq = 0;
  int state = 0;
  std::uint64_t snapshots = 0;
  Clock::time_point started;  // epoch of the clock until it has started
};

// STATESYNC_BENCH_A_RECORDS, for the cases whose record count it sets, else `otherwise`.
std::uint64_t RecordsFromEnv(std::uint64_t otherwise) {
  const char* n = std::getenv("STATESYNC_BENCH_A_RECORDS");
  return n != nullptr ? std::stoull(n) : otherwise;
}

// How long any wait of a case may take before the benchmark gives up (a stuck child, a stream
// that stopped): far above the slowest case (the 10M fills, tens of seconds).
constexpr auto kWaitLimit = std::chrono::minutes(10);
[[noreturn]] void GiveUp(const std::string& what) {
  std::fprintf(stderr, "replication_bench: %s\n", what.c_str());
  std::exit(1);
}

class SubordinateProcess {
 public:
  // `node_id` must differ between subordinates of one primary (it is their routing id).
  SubordinateProcess(const fs::path& dir, const std::string& endpoint,
                     int io_realtime_priority = replication::kIoRealtimeWhenPermitted,
                     const std::string& node_id = "sub") {
    const int fd = ::memfd_create("statesync-bench-status", 0);  // inherited across exec
    if (fd < 0 || ::ftruncate(fd, sizeof(SharedStatus)) != 0) {
      std::perror("memfd for the subordinate's status");
      std::exit(1);
    }
    shared_ = MapStatus(fd);
    pid_ = ::fork();
    if (pid_ == 0) {
      const std::string fd_arg = std::to_string(fd);
      const std::string realtime_arg = std::to_string(io_realtime_priority);
      ::execl(g_self, g_self, "--subordinate", dir.c_str(), endpoint.c_str(), fd_arg.c_str(),
              realtime_arg.c_str(), node_id.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(fd);
  }
  ~SubordinateProcess() {
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
    ::munmap(shared_, sizeof(SharedStatus));
  }
  SubStatus status() const {
    SubStatus s;
    s.persisted = shared_->persisted;
    s.materialized = shared_->materialized;
    s.blob_seq = shared_->blob_seq;
    s.state = static_cast<int>(shared_->state.load());
    s.snapshots = shared_->snapshots;
    s.started = Clock::time_point(std::chrono::nanoseconds(shared_->started_ns.load()));
    return s;
  }
  // Until the subordinate has said HELLO and been answered.
  void WaitConnected() const {
    WaitFor([](const SubStatus& s) { return s.state != 0; });
  }
  // Gives up if the child exits or kWaitLimit passes first.
  template <typename Pred>
  void WaitFor(Pred pred) const {
    const auto deadline = Clock::now() + kWaitLimit;
    while (!pred(status())) {
      int wstatus = 0;
      if (::waitpid(pid_, &wstatus, WNOHANG) == pid_) {
        GiveUp("the subordinate process exited (status " + std::to_string(wstatus) +
               ") before the case was done");
      }
      if (Clock::now() > deadline) GiveUp("the subordinate did not get there in 10 minutes");
      std::this_thread::sleep_for(1ms);
    }
  }

 private:
  SharedStatus* shared_ = nullptr;
  pid_t pid_;
};

// Sessions [from, from + n), stamped `now`, expiring in 2 hours.
std::vector<FirewallSession> Sessions(std::uint64_t from, std::size_t n, TimePoint now) {
  std::vector<FirewallSession> v;
  v.reserve(n);
  for (std::uint64_t i = from; i < from + n; ++i) {
    FirewallSession s = workload::Ipv4Session(i, now);
    s.expiry = now + std::chrono::hours(2);
    v.push_back(s);
  }
  return v;
}

// Diagnostics: tells a `perf record --control fifo:...` waiting on STATESYNC_BENCH_PERF_CTL.
void PerfControl(const char* command) {
  if (const char* fifo = std::getenv("STATESYNC_BENCH_PERF_CTL")) {
    std::ofstream(fifo) << command << std::endl;
  }
}

// ---- the primary side ----
struct PrimarySide {
  ScratchDir dir;
  std::unique_ptr<Store> store;
  std::shared_ptr<PageSupplier> pages = TablePages();
  SessionTable table{SessionTableOptions{.change_log_capacity = 1 << 20, .pages = pages}};
  std::unique_ptr<replication::Primary> primary;

  explicit PrimarySide(const std::string& name, replication::PrimaryOptions o = {}) : dir(name) {
    store = OpenStore(dir.path() / "primary");
    table.Tick(WallNow());
    if (!table.BecomeWritable(1).ok()) std::exit(1);
    o.node_id = "primary";
    o.cluster_id = kCluster;
    o.endpoint = "tcp://127.0.0.1:*";
    if (const char* n = std::getenv("STATESYNC_BENCH_BATCH_DELTAS")) {
      o.batch_max_deltas = std::stoull(n);
    }
    if (const char* us = std::getenv("STATESYNC_BENCH_BLOB_YIELD_US")) {
      o.blob_yield_delay = std::chrono::microseconds(std::stoll(us));
    }
    auto p = replication::Primary::Start(o, *store, 1);
    if (!p.ok()) {
      std::fprintf(stderr, "%s\n", p.status().ToString().c_str());
      std::exit(1);
    }
    primary = std::move(p).value();
  }
  ~PrimarySide() { ReportPages("primary", pages); }
  fs::path sub_dir() const { return dir.path() / "subordinate"; }

  // Upserts the sessions, pumping whenever the change log is full.
  void Upsert(std::span<const FirewallSession> sessions) {
    while (!sessions.empty()) {
      const BatchResult r = table.UpsertFirewallBatch(sessions);
      sessions = sessions.subspan(r.applied);
      primary->Pump(table);
      if (!r.status.ok() && r.applied == 0) std::this_thread::sleep_for(50us);
    }
  }
  // Upserts sessions [from, from + n), stamped `now`, in rounds of 100k, and closes the batch.
  void Fill(std::uint64_t from, std::uint64_t n, TimePoint now) {
    for (std::uint64_t i = from; i < from + n; i += 100'000) {
      Upsert(Sessions(i, std::min<std::uint64_t>(100'000, from + n - i), now));
    }
    primary->Flush(table);
  }
  // Waits until the journal holds the head (with no subordinate, nothing else says so).
  void AwaitJournaled() const {
    const auto deadline = Clock::now() + kWaitLimit;
    while (primary->stats().journaled.seq < head()) {
      if (Clock::now() > deadline) GiveUp("the head was not journaled in 10 minutes");
      std::this_thread::sleep_for(1ms);
    }
  }
  // Waits until the store's tables hold all it applied (its materializer idle).
  void Settle() const {
    if (!store->WaitMaterialized(store->applied(), kWaitLimit)) {
      GiveUp("the primary's store did not materialize in 10 minutes");
    }
  }
  // Waits until the head is durable as min_acks asks (the subordinates persisted it).
  void AwaitAcked() const {
    const auto deadline = Clock::now() + kWaitLimit;
    while (acked() < head()) {
      if (Clock::now() > deadline) GiveUp("the head was not acknowledged in 10 minutes");
      std::this_thread::sleep_for(200us);
    }
  }
  // The timed part of a case: upserts `sessions` 500 a call, as a firewall's batches come, until
  // the subordinates acknowledged the last; returns the seconds (and tells a waiting `perf`).
  double TimedWrite(std::span<const FirewallSession> sessions) {
    PerfControl("enable");
    const auto t0 = Clock::now();
    for (std::size_t i = 0; i < sessions.size(); i += 500) {
      Upsert(sessions.subspan(i, std::min<std::size_t>(500, sessions.size() - i)));
    }
    primary->Flush(table);
    AwaitAcked();
    const double seconds = Seconds(Clock::now() - t0);
    PerfControl("disable");
    return seconds;
  }
  Seq head() const { return table.last_position().seq; }
  // The highest seq the subordinates have acknowledged as persisted (by min_acks of them).
  Seq acked() const { return primary->durable().seq; }
};

// ---- the naive baseline ----
// The sender encodes 500 FirewallSession records (key and value, as our batches carry them) per
// message and PUSHes them; the receiver PULLs each into a RocksDB WriteBatch with default
// options and the WAL on.
// Appends records [from, min(n, from + 500)) to `msg`: key and value lengths, then the bytes.
void AppendMessageRecords(std::string& msg, std::uint64_t from, std::uint64_t n, TimePoint now) {
  for (std::uint64_t j = from; j < std::min(n, from + 500); ++j) {
    const FirewallSession s = workload::Ipv4Session(j, now);
    const std::string k = FirewallKey(s.orig, s.zone);
    const std::string v = EncodeFirewallSession(s);
    const std::uint32_t kl = k.size(), vl = v.size();
    msg.append(reinterpret_cast<const char*>(&kl), 4);
    msg.append(reinterpret_cast<const char*>(&vl), 4);
    msg += k;
    msg += v;
  }
}

// Puts a message's records into `batch`; returns how many.
std::uint64_t PutMessageRecords(rocksdb::WriteBatch& batch, const char* p, std::size_t size) {
  const char* end = p + size;
  std::uint64_t records = 0;
  while (p + 8 <= end) {
    std::uint32_t kl, vl;
    std::memcpy(&kl, p, 4);
    std::memcpy(&vl, p + 4, 4);
    p += 8;
    batch.Put(rocksdb::Slice(p, kl), rocksdb::Slice(p + kl, vl));
    p += kl + vl;
    ++records;
  }
  return records;
}

// A receiver: this program run again with `args`, which writes a byte to the pipe's end named
// by its last argument once it has everything.
struct Receiver {
  pid_t pid = -1;
  int done = -1;
};
Receiver StartReceiver(std::vector<std::string> args) {
  int fds[2];
  if (::pipe(fds) != 0) std::exit(1);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    args.push_back(std::to_string(fds[1]));
    std::vector<char*> argv{const_cast<char*>(g_self)};
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(g_self, argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  return Receiver{pid, fds[0]};
}
void AwaitReceiver(const Receiver& r) {
  char byte = 0;
  if (::read(r.done, &byte, 1) != 1) std::exit(1);
  ::close(r.done);
  ::waitpid(r.pid, nullptr, 0);
}

int RunNaiveReceiver(const char* dir, const char* endpoint, const char* count_arg,
                     const char* done_fd) {
  const std::uint64_t expect = std::stoull(count_arg);
  rocksdb::Options options;
  options.create_if_missing = true;
  rocksdb::DB* raw = nullptr;
  if (!rocksdb::DB::Open(options, dir, &raw).ok()) return 3;
  std::unique_ptr<rocksdb::DB> db(raw);
  zmq::context_t ctx;
  zmq::socket_t pull(ctx, zmq::socket_type::pull);
  pull.connect(endpoint);
  std::uint64_t got = 0;
  while (got < expect) {
    zmq::message_t m;
    if (!pull.recv(m)) return 4;
    rocksdb::WriteBatch batch;
    got += PutMessageRecords(batch, static_cast<const char*>(m.data()), m.size());
    if (!db->Write(rocksdb::WriteOptions(), &batch).ok()) return 5;
  }
  const char byte = 1;
  return ::write(std::atoi(done_fd), &byte, 1) == 1 ? 0 : 6;
}

double RunNaive(std::uint64_t n) {
  ScratchDir dir("naive");
  zmq::context_t ctx;
  zmq::socket_t push(ctx, zmq::socket_type::push);
  push.bind("tcp://127.0.0.1:*");
  const std::string endpoint = push.get(zmq::sockopt::last_endpoint);
  const Receiver receiver = StartReceiver(
      {"--naive-receiver", (dir.path() / "db").string(), endpoint, std::to_string(n)});
  const TimePoint now = WallNow();
  const auto t0 = Clock::now();
  std::string msg;
  for (std::uint64_t i = 0; i < n; i += 500) {
    msg.clear();
    AppendMessageRecords(msg, i, n, now);
    push.send(zmq::buffer(msg), zmq::send_flags::none);
  }
  AwaitReceiver(receiver);
  return static_cast<double>(n) / Seconds(Clock::now() - t0);
}

// ---- the machine's limits (issue 6): each component alone, with the records encoded first ----
// The same 500-record messages as the naive baseline's, made before the clock starts.
std::vector<std::string> EncodedMessages(std::uint64_t n) {
  const TimePoint now = WallNow();
  std::vector<std::string> messages;
  for (std::uint64_t i = 0; i < n; i += 500) {
    std::string msg;
    AppendMessageRecords(msg, i, n, now);
    messages.push_back(std::move(msg));
  }
  return messages;
}

// Receives `count` messages and does nothing with them.
int RunCountReceiver(const char* endpoint, const char* count_arg, const char* done_fd) {
  const std::uint64_t expect = std::stoull(count_arg);
  zmq::context_t ctx;
  zmq::socket_t pull(ctx, zmq::socket_type::pull);
  pull.connect(endpoint);
  for (std::uint64_t got = 0; got < expect; ++got) {
    zmq::message_t m;
    if (!pull.recv(m)) return 4;
  }
  const char byte = 1;
  return ::write(std::atoi(done_fd), &byte, 1) == 1 ? 0 : 6;
}

// ZeroMQ PUSH/PULL of the messages between two processes on loopback, no processing.
double RunRawZmq(std::uint64_t n) {
  const std::vector<std::string> messages = EncodedMessages(n);
  zmq::context_t ctx;
  zmq::socket_t push(ctx, zmq::socket_type::push);
  push.bind("tcp://127.0.0.1:*");
  const std::string endpoint = push.get(zmq::sockopt::last_endpoint);
  const Receiver receiver =
      StartReceiver({"--count-receiver", endpoint, std::to_string(messages.size())});
  const auto t0 = Clock::now();
  for (const std::string& m : messages) push.send(zmq::buffer(m), zmq::send_flags::none);
  AwaitReceiver(receiver);
  return static_cast<double>(n) / Seconds(Clock::now() - t0);
}

// RocksDB WriteBatch of the messages' records, one batch per message, default options, the WAL
// on, in this process: no network.
double RunRawRocks(std::uint64_t n) {
  const std::vector<std::string> messages = EncodedMessages(n);
  ScratchDir dir("rawrocks");
  rocksdb::Options options;
  options.create_if_missing = true;
  rocksdb::DB* raw = nullptr;
  if (!rocksdb::DB::Open(options, (dir.path() / "db").string(), &raw).ok()) std::exit(3);
  std::unique_ptr<rocksdb::DB> db(raw);
  const auto t0 = Clock::now();
  for (const std::string& m : messages) {
    rocksdb::WriteBatch batch;
    PutMessageRecords(batch, m.data(), m.size());
    if (!db->Write(rocksdb::WriteOptions(), &batch).ok()) std::exit(5);
  }
  return static_cast<double>(n) / Seconds(Clock::now() - t0);
}

// ---- the cases ----
struct CaseA {
  double records_per_s = 0;       // until the subordinate persisted the last record
  double materialized_per_s = 0;  // until its tables held them all
  double mb_per_s = 0;
  // The primary process's resident memory grown while it took the n sessions, per session
  // (the table, its change log and the store's caches; the generated input is made before).
  double primary_bytes_per_session = 0;
};

// With `subordinates` subordinate processes (fan-out); the rate is then until every one of them
// persisted the last record (min_acks = all).
CaseA RunA(std::uint64_t n, int subordinates = 1) {
  replication::PrimaryOptions o;
  o.min_acks = subordinates;
  PrimarySide p("a", o);
  std::vector<std::unique_ptr<SubordinateProcess>> subs;
  for (int i = 0; i < subordinates; ++i) {
    const std::string suffix = i == 0 ? "" : std::to_string(i + 1);
    subs.push_back(std::make_unique<SubordinateProcess>(
        p.sub_dir().string() + suffix, p.primary->endpoint(), replication::kIoRealtimeWhenPermitted,
        "sub" + suffix));
  }
  for (const auto& sub : subs) sub->WaitConnected();
  const auto sessions = Sessions(1, n, WallNow());
  const std::uint64_t resident_before = ResidentBytes();
  const auto t0 = Clock::now();
  const double t_persisted = p.TimedWrite(sessions);
  const Seq head = p.head();
  if (!std::getenv("STATESYNC_BENCH_NO_MATERIALIZE")) {
    for (const auto& sub : subs) {
      sub->WaitFor([&](const SubStatus& s) { return s.materialized >= head; });
    }
  }
  const double t_materialized = Seconds(Clock::now() - t0);
  CaseA r;
  r.records_per_s = n / t_persisted;
  r.materialized_per_s = n / t_materialized;
  r.mb_per_s = p.primary->stats().bytes / t_persisted / 1e6;
  r.primary_bytes_per_session =
      static_cast<double>(ResidentBytes() - resident_before) / static_cast<double>(n);
  return r;
}

// The rate at a table size: `sessions` written and settled first (persisted by the subordinate,
// and both stores' tables materialized, as on a node that has been running), then `window`
// updates of those sessions, spread over the whole table, timed until the subordinate persisted
// the last. The rate counts the deltas sent, so that updates folded into a pending one are not
// counted (a session is updated again only `sessions` updates later, so none should be).
struct AtSize {
  double deltas_per_s = 0;
  double coalesced = 0;
};

AtSize RunAtSize(std::uint64_t sessions, std::uint64_t window) {
  PrimarySide p("at-size");
  SubordinateProcess sub(p.sub_dir(), p.primary->endpoint());
  sub.WaitConnected();
  const TimePoint now = WallNow();
  p.Fill(0, sessions, now);
  const Seq loaded = p.head();
  sub.WaitFor([&](const SubStatus& s) { return s.materialized >= loaded; });
  p.Settle();
  // A stride coprime with `sessions` visits every session before any twice; near the golden
  // ratio of it, consecutive updates land far apart all over the table (half of it would make
  // two dense bands).
  auto stride = static_cast<std::uint64_t>(static_cast<double>(sessions) * 0.6180339887);
  while (std::gcd(stride, sessions) != 1) ++stride;
  std::vector<FirewallSession> updates;
  updates.reserve(window);
  for (std::uint64_t i = 0; i < window; ++i) {
    FirewallSession s = workload::Ipv4Session(i * stride % sessions, now);
    s.expiry = now + std::chrono::hours(2);
    s.orig_packets = i + 1;
    updates.push_back(s);
  }
  const std::uint64_t deltas_before = p.primary->stats().deltas;
  const std::uint64_t coalesced_before = p.table.stats().coalesced;
  const double seconds = p.TimedWrite(updates);
  AtSize r;
  r.deltas_per_s = static_cast<double>(p.primary->stats().deltas - deltas_before) / seconds;
  r.coalesced = static_cast<double>(p.table.stats().coalesced - coalesced_before);
  return r;
}

// A subordinate rejoins after missing `missed` records: it persisted (and materialized) `base`
// sessions, stopped, the primary took `missed` new sessions (its journal keeps them all), and
// the subordinate restarted from its data directory. Timed from the restart until it has
// persisted the primary's head (CONTINUE); `restart_s` is until it had started (the process,
// its store opened, its tables loaded, the subordinate started: stamped by the child).
struct Rejoin {
  double restart_s = 0;
  double catch_up_s = 0;
};

Rejoin RunRejoin(std::uint64_t base, std::uint64_t missed) {
  replication::PrimaryOptions o;
  o.journal.max_bytes = 64ull << 30;
  PrimarySide p("rejoin", o);
  const TimePoint now = WallNow();
  {
    SubordinateProcess sub(p.sub_dir(), p.primary->endpoint());
    sub.WaitConnected();
    p.Fill(0, base, now);
    const Seq head = p.head();
    sub.WaitFor([&](const SubStatus& s) { return s.materialized >= head; });
  }  // stopped
  p.Fill(base, missed, now);
  p.AwaitJournaled();
  p.Settle();  // as after writes spread over the outage
  Rejoin r;
  const auto t0 = Clock::now();
  SubordinateProcess sub(p.sub_dir(), p.primary->endpoint());
  const Seq head = p.head();
  sub.WaitFor([&](const SubStatus& s) { return s.persisted >= head; });
  r.catch_up_s = Seconds(Clock::now() - t0);
  const SubStatus done = sub.status();
  r.restart_s = Seconds(done.started - t0);
  if (done.snapshots != 0) GiveUp("rejoin: the subordinate took a snapshot, not CONTINUE");
  return r;
}

struct CaseB {
  double mutations_per_s = 0;
  double deltas_sent = 0;
  double mutations = 0;
};

// One round of case (b): the sessions created or updated, then the keys of those closed.
struct LifecycleRound {
  std::vector<FirewallSession> upserts;
  std::vector<std::string> closes;
};

// Rounds of 500 new sessions, 2000 updates of sessions alive, 500 closes of the oldest: each
// session lives about 4 rounds. Made before the timing starts, as case (a)'s sessions are: the
// case measures the engine, not the generator.
std::vector<LifecycleRound> LifecycleRounds(std::uint64_t sessions, TimePoint now) {
  constexpr std::uint64_t kPerRound = 500;
  std::mt19937_64 rng(1);
  std::vector<LifecycleRound> rounds;
  std::uint64_t created = 0, closed = 0;
  while (closed < sessions) {
    LifecycleRound& round = rounds.emplace_back();
    const std::uint64_t create = std::min(kPerRound, sessions - created);
    for (std::uint64_t i = 0; i < create; ++i) {
      FirewallSession s = workload::Ipv4Session(created + i, now);
      s.expiry = now + std::chrono::hours(1);
      round.upserts.push_back(s);
    }
    created += create;
    const std::uint64_t alive = created - closed;
    for (std::uint64_t i = 0; i < 4 * kPerRound && alive > 0; ++i) {
      FirewallSession s = workload::Ipv4Session(closed + rng() % alive, now);
      s.expiry = now + std::chrono::hours(1);
      s.orig_packets = rng();
      round.upserts.push_back(s);
    }
    const std::uint64_t close = created - closed > 4 * kPerRound || created == sessions
                                    ? std::min(kPerRound, created - closed)
                                    : 0;
    for (std::uint64_t i = 0; i < close; ++i) {
      const FirewallSession s = workload::Ipv4Session(closed + i, now);
      round.closes.push_back(FirewallKey(s.orig, s.zone));
    }
    closed += close;
  }
  return rounds;
}

CaseB RunB(std::uint64_t sessions) {
  PrimarySide p("b");
  SubordinateProcess sub(p.sub_dir(), p.primary->endpoint());
  sub.WaitConnected();
  const std::vector<LifecycleRound> rounds = LifecycleRounds(sessions, WallNow());
  std::uint64_t mutations = 0;
  PerfControl("enable");
  const auto t0 = Clock::now();
  for (const LifecycleRound& round : rounds) {
    p.Upsert(round.upserts);
    mutations += round.upserts.size();
    for (const std::string& key : round.closes) {
      for (;;) {
        auto m = p.table.Delete(TableId::kFwSessions, key);
        if (m.ok()) break;
        p.primary->Pump(p.table);
      }
    }
    mutations += round.closes.size();
    p.primary->Pump(p.table);  // after every round, about every 3000 mutations
  }
  p.primary->Flush(p.table);
  p.AwaitAcked();
  CaseB r;
  r.mutations_per_s = mutations / Seconds(Clock::now() - t0);
  PerfControl("disable");
  r.deltas_sent = static_cast<double>(p.primary->stats().deltas);
  r.mutations = static_cast<double>(mutations);
  return r;
}

struct CaseC {
  double mb_per_s = 0;
  double blobs = 0;
};

CaseC RunC(int blobs) {
  PrimarySide p("c");
  SubordinateProcess sub(p.sub_dir(), p.primary->endpoint());
  sub.WaitConnected();
  std::string data(1 << 20, '\0');
  std::mt19937_64 rng(2);
  for (auto& c : data) c = static_cast<char>(rng());
  const auto t0 = Clock::now();
  for (int i = 0; i < blobs; ++i) {
    data[0] = static_cast<char>(i);
    if (!p.primary->PutBlob("vm/" + std::to_string(i), 1, "msg.wav", data).ok()) std::exit(1);
  }
  sub.WaitFor([&](const SubStatus& s) { return s.blob_seq > static_cast<std::uint64_t>(blobs); });
  CaseC r;
  r.mb_per_s = blobs * (data.size() / 1e6) / Seconds(Clock::now() - t0);
  r.blobs = blobs;
  return r;
}

struct Lag {
  double rate = 0;
  double p50_ms = 0, p99_ms = 0, p999_ms = 0;
  double warm_up_p99_ms = 0;  // of the first kLagWarmUpSeconds, not in the percentiles above
  double samples = 0;
  double blob_mb_per_s = 0;
};

// Writes at `rate` records/s for `kLagWarmUpSeconds` and then `seconds`, and measures the lag
// of every 50th record. The percentiles are those of the measured part; the warm-up's own p99
// is reported apart. A fresh subordinate process first faults in its memory (the ring of
// recent frames, the table as it grows, RocksDB's memtables, ZeroMQ's buffers): in 8-second
// runs from a cold start, 40-90 % of the first half second's samples were above 5 ms, 3-5 % of
// the run, which alone set the p99; that is the cost of a process start, not the steady lag.
constexpr double kLagWarmUpSeconds = 2;
// The SCHED_FIFO priority of the lag runs in the realtime class: the default's, where permitted.
constexpr int kLagRealtimePriority = replication::kDefaultIoRealtimePriority;

Lag RunLag(double rate, double seconds, bool with_blobs, int io_realtime_priority,
           std::uint64_t warm_sessions = 0) {
  replication::PrimaryOptions o;
  o.durability[TableId::kFwSessions] = replication::Durability::kSync;
  o.min_acks = 1;
  // A write slower than the sync timeout is part of what is measured, not a failure: the base
  // rate's run asks for more than the stream takes, and on a slower machine (fresh-debian's
  // container) its writes waited past 1 s, which failed them and stopped the benchmark.
  o.on_sync_timeout = replication::SyncFailure::kBlock;
  o.io_realtime_priority = io_realtime_priority;
  PrimarySide p(with_blobs ? "lag-blobs" : "lag", o);
  SubordinateProcess sub(p.sub_dir(), p.primary->endpoint(), io_realtime_priority);
  sub.WaitConnected();
  std::uint64_t i = 0;
  if (const char* w = std::getenv("STATESYNC_BENCH_LAG_WARM")) warm_sessions = std::stoull(w);
  if (warm_sessions > 0) {
    for (; i < warm_sessions; i += 1000) p.Upsert(Sessions(i, 1000, WallNow()));
    p.primary->Flush(p.table);
    p.AwaitAcked();
    std::this_thread::sleep_for(std::chrono::seconds(2));
  }
  const std::uint64_t i0 = i;
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> blob_bytes{0};
  std::thread blobs;
  std::vector<std::pair<double, double>> lane_rates;  // (seconds since start, MB/s allowed)
  const auto t0 = Clock::now();
  if (with_blobs) {
    blobs = std::thread([&] {
      std::string data(1 << 20, 'b');
      for (int i = 0; !stop; ++i) {
        data[0] = static_cast<char>(i);
        if (!p.primary->PutBlob("rec/" + std::to_string(i), 2, "rec.wav", data).ok()) return;
        blob_bytes += data.size();
        lane_rates.emplace_back(Seconds(Clock::now() - t0),
                                p.primary->stats().blob_bytes_per_second / 1e6);
        // Keep the lane's queue short: the primary holds blobs in its store, not in memory,
        // so this only avoids filling the disk during long runs.
        std::this_thread::sleep_for(1ms);
      }
    });
  }
  // Sampled writes: every chunk's last position is handed to WhenDurable with a callback that
  // stamps the time on the primary's I/O thread as the acknowledgement covering it arrives. (A
  // watcher thread waiting on futures woke ~7000 times a second and its own wake-up delay, on
  // 2 busy cores, was part of what it measured.)
  constexpr std::size_t kChunk = 50;  // records per write call
  const auto max_samples =
      static_cast<std::size_t>(rate * (kLagWarmUpSeconds + seconds) / kChunk * 1.2) + 1000;
  std::vector<Clock::time_point> written(max_samples), acked(max_samples);
  std::atomic<std::size_t> acked_count{0};
  std::size_t samples = 0;
  const auto interval = std::chrono::duration<double>(kChunk / rate);
  std::vector<FirewallSession> chunk;
  while (Seconds(Clock::now() - t0) < kLagWarmUpSeconds + seconds) {
    // Upsert pumps after each chunk, well inside the 1 ms batch deadline.
    std::this_thread::sleep_until(
        t0 + std::chrono::duration_cast<Clock::duration>(interval * ((i - i0) / kChunk)));
    // Stamped with the time they are written, as a firewall's new sessions are: their expiry
    // timers then fall into the timer wheel's second of their creation. (Sessions all stamped
    // with the run's start time filed 2M timers in one bucket, whose vector's doublings showed
    // in the lag at 0.5M, 1M and 2M sessions.)
    chunk = Sessions(i, kChunk, WallNow());
    p.Upsert(chunk);
    const Position at = p.table.last_position();
    if (samples < max_samples) {
      const std::size_t k = samples++;
      written[k] = Clock::now();
      p.primary->WhenDurable(TableId::kFwSessions, at, [&, k](const Status& st) {
        if (!st.ok()) std::exit(1);
        acked[k] = Clock::now();
        acked_count.fetch_add(1, std::memory_order_release);
      });
    }
    i += kChunk;
  }
  const double written_s = Seconds(Clock::now() - t0);
  p.primary->Flush(p.table);
  while (acked_count.load(std::memory_order_acquire) < samples) std::this_thread::sleep_for(1ms);
  std::vector<std::pair<double, double>> lags;  // (seconds since start, lag ms)
  lags.reserve(samples);
  for (std::size_t k = 0; k < samples; ++k) {
    lags.emplace_back(Seconds(written[k] - t0),
                      std::chrono::duration<double, std::milli>(acked[k] - written[k]).count());
  }
  stop = true;
  if (blobs.joinable()) blobs.join();
  if (const char* dump = std::getenv("STATESYNC_BENCH_LAG_DUMP")) {
    // Diagnostics: "seconds since start, lag ms" of every sample, to see when the tail happens.
    const std::string name = std::string(dump) + (io_realtime_priority > 0 ? ".rt" : "");
    std::ofstream out(name + (with_blobs ? ".blobs.csv" : ".csv"));
    for (const auto& [at, ms] : lags) out << at << "," << ms << "\n";
    std::ofstream rates(name + ".lane.csv");
    for (const auto& [at, mb_per_s] : lane_rates) rates << at << "," << mb_per_s << "\n";
    // The start on the steady clock (CLOCK_MONOTONIC), in ns: to line the samples up with a
    // `perf record -k CLOCK_MONOTONIC` of the same run.
    std::ofstream(name + (with_blobs ? ".blobs.t0" : ".t0"))
        << std::chrono::duration_cast<std::chrono::nanoseconds>(t0.time_since_epoch()).count();
  }
  std::vector<double> lags_ms, warm_up_ms;
  for (const auto& [at, ms] : lags) (at < kLagWarmUpSeconds ? warm_up_ms : lags_ms).push_back(ms);
  Lag r;
  r.rate = (i - i0) / written_s;
  r.p50_ms = Percentile(lags_ms, 0.50);
  r.p99_ms = Percentile(lags_ms, 0.99);
  r.p999_ms = Percentile(lags_ms, 0.999);
  r.warm_up_p99_ms = Percentile(warm_up_ms, 0.99);
  r.samples = static_cast<double>(lags_ms.size());
  r.blob_mb_per_s = blob_bytes / 1e6 / (kLagWarmUpSeconds + seconds);
  return r;
}

struct CatchUp {
  double records = 0;
  double continue_busy_primary_s = 0;
  double continue_s = 0;
  double snapshot_s = 0;
};

CatchUp RunCatchUp(std::uint64_t n) {
  CatchUp r;
  r.records = static_cast<double>(n);
  replication::PrimaryOptions o;
  o.journal.max_bytes = 64ull << 30;  // the whole history stays in the journal: CONTINUE
  PrimarySide p("catchup", o);
  p.Fill(0, n, WallNow());
  p.AwaitJournaled();
  const auto continue_from_the_start = [&] {
    double seconds = 0;
    {
      const auto t0 = Clock::now();
      SubordinateProcess sub(p.sub_dir(), p.primary->endpoint());
      const Seq head = p.head();
      sub.WaitFor([&](const SubStatus& s) { return s.persisted >= head; });
      seconds = Seconds(Clock::now() - t0);
    }  // the subordinate stopped: its directory can go
    fs::remove_all(p.sub_dir());
    return seconds;
  };
  // Twice: at once, while the primary still materializes (and compacts) the n records it was
  // just given as fast as it could take them, which on 2 cores competes with the catch-up; then
  // from a primary whose tables hold them, as after writes spread over time (and as the
  // SNAPSHOT case below starts).
  r.continue_busy_primary_s = continue_from_the_start();
  p.Settle();
  r.continue_s = continue_from_the_start();
  // SNAPSHOT: the same history with the journal trimmed away (a snapshot is read from the
  // tables, which hold everything by now).
  p.primary.reset();
  o.journal.max_bytes = 1;
  o.trim_interval = 10ms;
  o.node_id = "primary";
  o.cluster_id = kCluster;
  o.endpoint = "tcp://127.0.0.1:*";
  auto restarted = replication::Primary::Start(o, *p.store, 1);
  if (!restarted.ok()) std::exit(1);
  p.primary = std::move(restarted).value();
  while (p.store->journal().batches > 0) std::this_thread::sleep_for(5ms);
  {
    const auto t0 = Clock::now();
    SubordinateProcess sub(p.sub_dir(), p.primary->endpoint());
    const Seq head = p.head();
    sub.WaitFor([&](const SubStatus& s) { return s.persisted >= head && s.snapshots == 1; });
    r.snapshot_s = Seconds(Clock::now() - t0);
  }
  return r;
}

// ---- JSON ----
class Json {
 public:
  void Add(const std::string& key, double v) {
    std::ostringstream s;
    s.precision(6);
    s << v;
    Raw(key, s.str());
  }
  void Raw(const std::string& key, const std::string& v) {
    if (!body_.empty()) body_ += ",\n";
    body_ += "  \"" + key + "\": " + v;
  }
  std::string str() const { return "{\n" + body_ + "\n}\n"; }

 private:
  std::string body_;
};

std::string Obj(const std::map<std::string, double>& m) {
  std::ostringstream s;
  s.precision(6);
  s << '{';
  bool first = true;
  for (const auto& [k, v] : m) {
    s << (first ? "" : ", ") << '"' << k << "\": " << v;
    first = false;
  }
  s << '}';
  return s.str();
}

// Appends an item to a JSON list being built ("[" at first; close it with "]").
void Append(std::string& list, const std::string& item) {
  list += (list.size() > 1 ? ", " : "") + item;
}

// Prints the document, and writes it to `out` when given.
int Emit(const Json& json, const std::string& out) {
  const std::string doc = json.str();
  std::fputs(doc.c_str(), stdout);
  if (!out.empty()) std::ofstream(out) << doc;
  return 0;
}

int Main(int argc, char** argv) {
  bool quick = false;
  int reps = 3;
  std::string which = "all", out;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") {
      quick = true;
    } else if (a == "--repetitions" && i + 1 < argc) {
      reps = std::stoi(argv[++i]);
    } else if (a == "--out" && i + 1 < argc) {
      out = argv[++i];
    } else if (a == "--case" && i + 1 < argc) {
      which = argv[++i];
    } else {
      std::fprintf(stderr,
                   "usage: replication_bench [--quick] [--repetitions N] [--case "
                   "a|b|c|lag|catchup|limits|lag-curve|scaling|fan-out|rejoin|all] [--out FILE]\n");
      return 2;
    }
  }
  spdlog::set_level(spdlog::level::warn);
  if (quick) reps = 1;
  const std::uint64_t n_a = quick ? 500'000 : 2'000'000;
  auto want = [&](const char* c) { return which == "all" || which == c; };
  Json json;
  json.Add("nproc", std::thread::hardware_concurrency());
  json.Raw("quick", quick ? "true" : "false");
  // What the default io_realtime_priority comes to in this process.
  bool realtime = false;
  std::thread([&] {
    sched_param param{};
    param.sched_priority = kLagRealtimePriority;
    realtime = pthread_setschedparam(pthread_self(), SCHED_FIFO, &param) == 0;
  }).join();
  json.Raw("io_scheduling", realtime ? "\"SCHED_FIFO 10 (the default, permitted here)\""
                                     : "\"normal class (SCHED_FIFO refused here)\"");

  double a_rate = 0;
  if (which == "limits") {  // issue 6: the machine's limits, the naive pipeline and statesync
    const std::uint64_t n = RecordsFromEnv(1'000'000);
    std::vector<double> zmq_rates, rocks_rates, naive_rates, ours;
    for (int r = 0; r < reps; ++r) {  // interleaved, so that a slow phase hits every case
      zmq_rates.push_back(RunRawZmq(n));
      rocks_rates.push_back(RunRawRocks(n));
      naive_rates.push_back(RunNaive(n));
      ours.push_back(RunA(n).records_per_s);
      std::fprintf(stderr, "rep %d: zmq %.0f, rocksdb %.0f, naive %.0f, statesync %.0f rec/s\n", r,
                   zmq_rates.back(), rocks_rates.back(), naive_rates.back(), ours.back());
    }
    const double z = Median(zmq_rates), k = Median(rocks_rates), b = Median(naive_rates),
                 a = Median(ours);
    json.Add("records", static_cast<double>(n));
    json.Raw("limits", Obj({{"zmq_push_pull_records_per_s", z},
                            {"rocksdb_write_batch_records_per_s", k},
                            {"naive_pipeline_records_per_s", b},
                            {"statesync_records_per_s", a},
                            {"statesync_fraction_of_zmq", a / z},
                            {"statesync_fraction_of_rocksdb", a / k},
                            {"statesync_over_naive", a / b}}));
    return Emit(json, out);
  }
  if (which == "lag-curve") {  // issue 6: lag at 10, 50 and 90 % of case (a)'s rate
    std::vector<double> rates;
    for (int r = 0; r < reps; ++r) rates.push_back(RunA(1'000'000).records_per_s);
    const double async_rate = Median(rates);
    double secs = 5;
    if (const char* s = std::getenv("STATESYNC_BENCH_LAG_SECONDS")) secs = std::stod(s);
    // The base: what the lag case's writer sustains in sync mode, asked for twice case (a)'s
    // rate. It stays below case (a)'s (it writes 50 records a call and waits on acks), and 90 %
    // of case (a)'s rate was beyond it: the stream queued.
    std::vector<double> sustained;
    for (int r = 0; r < reps; ++r) {
      sustained.push_back(
          RunLag(2 * async_rate, 3, false, replication::kIoRealtimeWhenPermitted).rate);
    }
    const double max_rate = Median(sustained);
    std::string points = "[";
    for (const double fraction : {0.1, 0.5, 0.9}) {
      const Lag l = RunLag(fraction * max_rate, secs, false, replication::kIoRealtimeWhenPermitted);
      std::fprintf(stderr, "lag at %.0f %% (%.0f rec/s): p50 %.2f, p99 %.2f, p99.9 %.2f ms\n",
                   fraction * 100, l.rate, l.p50_ms, l.p99_ms, l.p999_ms);
      Append(points, Obj({{"fraction", fraction},
                          {"records_per_s", l.rate},
                          {"p50_ms", l.p50_ms},
                          {"p99_ms", l.p99_ms},
                          {"p999_ms", l.p999_ms},
                          {"samples", l.samples}}));
    }
    json.Add("async_case_a_records_per_s", async_rate);
    json.Add("max_records_per_s", max_rate);
    json.Add("seconds_per_point", secs);
    json.Raw("lag", points + "]");
    return Emit(json, out);
  }
  if (which == "scaling") {  // issue 6: end-to-end rate and memory as the table grows
    std::string points = "[";
    // The resident growth from the previous size to this one, per session added: the cost of a
    // session once the bounded buffers (change log, rings, memtables) are full.
    double previous_sessions = 0, previous_bytes = 0;
    for (const std::uint64_t n : {100'000ULL, 1'000'000ULL, 10'000'000ULL}) {
      std::vector<double> rates, bytes;
      for (int r = 0; r < (n >= 10'000'000 ? 1 : reps); ++r) {
        const CaseA x = RunA(n);
        rates.push_back(x.records_per_s);
        bytes.push_back(x.primary_bytes_per_session);
      }
      std::fprintf(stderr, "scaling %llu sessions: %.0f rec/s, %.0f bytes/session\n",
                   static_cast<unsigned long long>(n), Median(rates), Median(bytes));
      const double grown = Median(bytes) * static_cast<double>(n);
      std::map<std::string, double> fields{{"sessions", static_cast<double>(n)},
                                           {"records_per_s", Median(rates)},
                                           {"primary_bytes_per_session", Median(bytes)},
                                           {"runs", static_cast<double>(rates.size())}};
      if (previous_sessions > 0) {
        fields["marginal_bytes_per_session"] =
            (grown - previous_bytes) / (static_cast<double>(n) - previous_sessions);
      }
      previous_sessions = static_cast<double>(n);
      previous_bytes = grown;
      Append(points, Obj(fields));
    }
    // The rate at each size, the table settled first (RunAtSize): 1M updates each, once.
    std::string at_size = "[";
    for (const std::uint64_t n : {100'000ULL, 1'000'000ULL, 10'000'000ULL}) {
      const AtSize x = RunAtSize(n, 1'000'000);
      std::fprintf(stderr, "at %llu sessions: %.0f deltas/s (%.0f coalesced)\n",
                   static_cast<unsigned long long>(n), x.deltas_per_s, x.coalesced);
      Append(at_size, Obj({{"sessions", static_cast<double>(n)},
                           {"updates", 1e6},
                           {"deltas_per_s", x.deltas_per_s},
                           {"coalesced", x.coalesced}}));
    }
    json.Raw("scaling", points + "]");
    json.Raw("at_size", at_size + "]");
    return Emit(json, out);
  }
  if (which == "fan-out") {  // issue 6: case (a) with 1, 2 and 3 subordinates
    const std::uint64_t n = RecordsFromEnv(1'000'000);
    std::map<int, std::vector<double>> rates;
    for (int r = 0; r < reps; ++r) {  // interleaved
      for (const int subs : {1, 2, 3}) rates[subs].push_back(RunA(n, subs).records_per_s);
      std::fprintf(stderr, "rep %d: 1 subordinate %.0f, 2: %.0f, 3: %.0f rec/s\n", r,
                   rates[1].back(), rates[2].back(), rates[3].back());
    }
    std::string points = "[";
    for (const auto& [subs, v] : rates) {
      Append(points, Obj({{"subordinates", subs},
                          {"records_per_s", Median(v)},
                          {"fraction_of_one", Median(v) / Median(rates[1])}}));
    }
    json.Add("records", static_cast<double>(n));
    json.Raw("fan_out", points + "]");
    return Emit(json, out);
  }
  if (which == "rejoin") {  // issue 6: catch-up time against the amount missed
    constexpr std::uint64_t kBase = 1'000'000;
    std::string points = "[";
    for (const std::uint64_t missed :
         {100'000ULL, 300'000ULL, 1'000'000ULL, 3'000'000ULL, 10'000'000ULL}) {
      const Rejoin x = RunRejoin(kBase, missed);
      std::fprintf(stderr, "rejoin after %llu missed: started in %.2f s, caught up in %.2f s\n",
                   static_cast<unsigned long long>(missed), x.restart_s, x.catch_up_s);
      Append(points, Obj({{"missed", static_cast<double>(missed)},
                          {"restart_s", x.restart_s},
                          {"catch_up_s", x.catch_up_s},
                          // the rate once started: what the catch-up itself moves
                          {"missed_per_s_after_start",
                           static_cast<double>(missed) / (x.catch_up_s - x.restart_s)}}));
    }
    json.Add("base_sessions", static_cast<double>(kBase));
    json.Raw("rejoin", points + "]");
    return Emit(json, out);
  }
  if (which == "at-size-only") {  // for profiling: RunAtSize alone, 1M updates
    const AtSize x = RunAtSize(RecordsFromEnv(10'000'000), 1'000'000);
    std::printf("%.0f deltas/s (%.0f coalesced)\n", x.deltas_per_s, x.coalesced);
    return 0;
  }
  if (which == "a-only") {  // for profiling: statesync's case (a) alone, 4M records
    const CaseA x = RunA(RecordsFromEnv(4'000'000));
    std::printf("%.0f rec/s (tables %.0f), primary grew %.1f bytes/session\n", x.records_per_s,
                x.materialized_per_s, x.primary_bytes_per_session);
    return 0;
  }
  if (want("a")) {
    std::vector<double> base, a, mat, mb;
    for (int r = 0; r < reps; ++r) {
      // Interleaved, and in alternating order, so that a slow phase hits both.
      if (r % 2 == 0) {
        base.push_back(RunNaive(n_a));
        const CaseA x = RunA(n_a);
        a.push_back(x.records_per_s), mat.push_back(x.materialized_per_s), mb.push_back(x.mb_per_s);
      } else {
        const CaseA x = RunA(n_a);
        a.push_back(x.records_per_s), mat.push_back(x.materialized_per_s), mb.push_back(x.mb_per_s);
        base.push_back(RunNaive(n_a));
      }
      std::fprintf(stderr, "rep %d: naive %.0f rec/s, statesync %.0f rec/s (tables %.0f)\n", r,
                   base.back(), a.back(), mat.back());
    }
    a_rate = Median(a);
    json.Raw("baseline_naive", Obj({{"records_per_s", Median(base)}, {"records", double(n_a)}}));
    json.Raw("a_distinct_upserts", Obj({{"records_per_s", a_rate},
                                        {"tables_materialized_per_s", Median(mat)},
                                        {"mb_per_s", Median(mb)},
                                        {"records", double(n_a)},
                                        {"ratio_to_baseline", a_rate / Median(base)}}));
  }
  if (want("b")) {
    std::vector<double> v;
    CaseB last;
    for (int r = 0; r < reps; ++r) {
      last = RunB(quick ? 200'000 : 500'000);
      v.push_back(last.mutations_per_s);
    }
    json.Raw("b_lifecycle", Obj({{"effective_deltas_per_s", Median(v)},
                                 {"mutations", last.mutations},
                                 {"deltas_sent", last.deltas_sent}}));
  }
  if (want("c")) {
    std::vector<double> v;
    for (int r = 0; r < reps; ++r) v.push_back(RunC(quick ? 100 : 300).mb_per_s);
    json.Raw("c_blobs_1mb", Obj({{"mb_per_s", Median(v)}}));
  }
  if (want("lag")) {
    if (const char* r = std::getenv("STATESYNC_BENCH_LAG_RATE")) a_rate = 2 * std::stod(r);
    if (a_rate == 0) a_rate = RunA(n_a).records_per_s;
    const double rate = a_rate / 2;
    double secs = quick ? 3 : 8;
    if (const char* s = std::getenv("STATESYNC_BENCH_LAG_SECONDS")) secs = std::stod(s);
    // With the stream's I/O threads in the normal class, and in SCHED_FIFO (the default) where
    // this process may use it, interleaved.
    std::vector<double> p99, p99b, p99_rt, p99b_rt;
    Lag plain, blobs, plain_rt, blobs_rt;
    for (int r = 0; r < reps; ++r) {
      plain = RunLag(rate, secs, false, replication::kIoNormalClass);
      blobs = RunLag(rate, secs, true, replication::kIoNormalClass);
      p99.push_back(plain.p99_ms);
      p99b.push_back(blobs.p99_ms);
      if (realtime) {
        plain_rt = RunLag(rate, secs, false, kLagRealtimePriority);
        blobs_rt = RunLag(rate, secs, true, kLagRealtimePriority);
        p99_rt.push_back(plain_rt.p99_ms);
        p99b_rt.push_back(blobs_rt.p99_ms);
      }
      std::fprintf(stderr, "lag rep %d: normal class p99 %.2f ms, with blobs %.2f ms", r,
                   plain.p99_ms, blobs.p99_ms);
      if (realtime) {
        std::fprintf(stderr, "; io_realtime %.2f ms, with blobs %.2f ms", plain_rt.p99_ms,
                     blobs_rt.p99_ms);
      }
      std::fprintf(stderr, "\n");
    }
    if (realtime) {
      json.Raw("lag_half_rate_io_realtime", Obj({{"io_realtime_priority", kLagRealtimePriority},
                                                 {"rate", plain_rt.rate},
                                                 {"p50_ms", plain_rt.p50_ms},
                                                 {"p99_ms", Median(p99_rt)},
                                                 {"p999_ms", plain_rt.p999_ms},
                                                 {"warm_up_p99_ms", plain_rt.warm_up_p99_ms}}));
      json.Raw("d_lag_half_rate_with_blobs_io_realtime",
               Obj({{"rate", blobs_rt.rate},
                    {"p50_ms", blobs_rt.p50_ms},
                    {"p99_ms", Median(p99b_rt)},
                    {"p999_ms", blobs_rt.p999_ms},
                    {"blob_mb_per_s", blobs_rt.blob_mb_per_s},
                    {"p99_ratio_to_without", Median(p99b_rt) / Median(p99_rt)}}));
    }
    // In steady state: 4M sessions written at full speed first, so that the measured part
    // runs while both materializers work through their rounds (they start at 512 MiB of
    // journal), as on a node that has been running; the cold-start runs above see only the
    // first rounds. Once each (about 25 s a run).
    if (!quick) {
      constexpr std::uint64_t kSteadyWarmSessions = 4'000'000;
      const Lag steady =
          RunLag(rate, secs, false, replication::kIoNormalClass, kSteadyWarmSessions);
      std::map<std::string, double> fields{
          {"rate", steady.rate},       {"warm_sessions", double(kSteadyWarmSessions)},
          {"p50_ms", steady.p50_ms},   {"p99_ms", steady.p99_ms},
          {"p999_ms", steady.p999_ms}, {"samples", steady.samples}};
      if (realtime) {
        const Lag steady_rt = RunLag(rate, secs, false, kLagRealtimePriority, kSteadyWarmSessions);
        fields["io_realtime_p50_ms"] = steady_rt.p50_ms;
        fields["io_realtime_p99_ms"] = steady_rt.p99_ms;
        fields["io_realtime_p999_ms"] = steady_rt.p999_ms;
      }
      json.Raw("lag_half_rate_steady", Obj(fields));
    }
    json.Raw("lag_half_rate", Obj({{"io_realtime_priority", replication::kIoNormalClass},
                                   {"target_rate", rate},
                                   {"rate", plain.rate},
                                   {"p50_ms", plain.p50_ms},
                                   {"p99_ms", Median(p99)},
                                   {"p999_ms", plain.p999_ms},
                                   {"warm_up_s", kLagWarmUpSeconds},
                                   {"warm_up_p99_ms", plain.warm_up_p99_ms},
                                   {"samples", plain.samples}}));
    json.Raw("d_lag_half_rate_with_blobs",
             Obj({{"rate", blobs.rate},
                  {"p50_ms", blobs.p50_ms},
                  {"p99_ms", Median(p99b)},
                  {"p999_ms", blobs.p999_ms},
                  {"warm_up_p99_ms", blobs.warm_up_p99_ms},
                  {"blob_mb_per_s", blobs.blob_mb_per_s},
                  {"p99_ratio_to_without", Median(p99b) / Median(p99)}}));
  }
  if (want("catchup")) {
    std::vector<std::uint64_t> sizes = quick ? std::vector<std::uint64_t>{1'000'000}
                                             : std::vector<std::uint64_t>{1'000'000, 10'000'000};
    if (const char* n = std::getenv("STATESYNC_BENCH_CATCHUP_RECORDS")) sizes = {std::stoull(n)};
    for (std::uint64_t n : sizes) {
      const CatchUp c = RunCatchUp(n);
      json.Raw("catchup_" + std::to_string(n / 1'000'000) + "m",
               Obj({{"records", c.records},
                    {"continue_busy_primary_s", c.continue_busy_primary_s},
                    {"continue_busy_primary_per_s", c.records / c.continue_busy_primary_s},
                    {"continue_s", c.continue_s},
                    {"continue_per_s", c.records / c.continue_s},
                    {"snapshot_s", c.snapshot_s},
                    {"snapshot_per_s", c.records / c.snapshot_s}}));
    }
  }
  return Emit(json, out);
}

}  // namespace
}  // namespace statesync::bench

int main(int argc, char** argv) {
  statesync::bench::g_self = argv[0];
  // The naive receiver keeps the C library's defaults unless asked (a side measurement, to
  // show what the allocator setting alone is worth); statesync's processes use the setting
  // that statesyncd uses.
  const bool naive = argc == 6 && std::string(argv[1]) == "--naive-receiver";
  const bool tune = naive ? std::getenv("STATESYNC_BENCH_NAIVE_TUNED_ALLOCATOR") != nullptr
                          : std::getenv("STATESYNC_BENCH_DEFAULT_ALLOCATOR") == nullptr;
  if (tune) {
    statesync::TuneProcessAllocator();
  }
  if (argc == 7 && std::string(argv[1]) == "--subordinate") {
    return statesync::bench::RunSubordinate(argv[2], argv[3], argv[4], std::atoi(argv[5]), argv[6]);
  }
  if (argc == 5 && std::string(argv[1]) == "--count-receiver") {
    return statesync::bench::RunCountReceiver(argv[2], argv[3], argv[4]);
  }
  if (argc == 6 && std::string(argv[1]) == "--naive-receiver") {
    return statesync::bench::RunNaiveReceiver(argv[2], argv[3], argv[4], argv[5]);
  }
  return statesync::bench::Main(argc, argv);
}
