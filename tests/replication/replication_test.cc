// The replication engine end to end: a primary and subordinates on real ZeroMQ sockets on
// 127.0.0.1, each with a real RocksDB store in a temporary directory. Tests that kill or stop a
// subordinate run it as a child process (this binary, started with --subordinate).
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include <atomic>
#include <fstream>

#include <zmq.hpp>

#include "harness.h"
#include "resident_memory.h"
#include "statesync/replication/messages.h"

namespace statesync::testing {
namespace {

using replication::Primary;
using replication::Subordinate;
using replication::SyncState;

const char* g_self = nullptr;

// ---- the subordinate as a child process ----
// The child writes its status to a file (replaced atomically) every few milliseconds:
// "applied_seq state continues snapshots hellos gaps stale".
struct ChildStatus {
  Seq applied = 0;
  int state = 0;
  std::uint64_t continues = 0, snapshots = 0, hellos = 0, gaps = 0, stale = 0;
};

int RunSubordinateChild(const char* dir, const char* endpoint, const char* id,
                        const char* status_file) {
  static std::atomic<bool> stop{false};
  ::signal(SIGTERM, [](int) { stop = true; });
  // Dies with the test: a test binary killed from outside leaves no subordinate polling on.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() == 1) return 5;
  auto store = OpenStore(dir);
  if (!store) return 3;
  auto sub = Subordinate::Start(SubOptions(id, endpoint), *store, LoadTable(*store));
  if (!sub.ok()) return 4;
  const std::string tmp = std::string(status_file) + ".tmp";
  while (!stop) {
    const auto st = (*sub)->status();
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << st.applied.seq << ' ' << static_cast<int>(st.state) << ' ' << st.continues << ' '
          << st.snapshots << ' ' << st.hellos << ' ' << st.input.gap << ' ' << st.input.stale_epoch
          << '\n';
    }
    std::filesystem::rename(tmp, status_file);
    std::this_thread::sleep_for(5ms);
  }
  (*sub)->Stop();
  return 0;
}

class Child {
 public:
  Child(const fs::path& dir, const std::string& endpoint, const std::string& id)
      : dir_(dir), endpoint_(endpoint), id_(id), status_(dir.string() + ".status") {}
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    std::error_code ec;
    fs::remove(status_, ec);
  }
  void Start() {
    std::error_code ec;
    fs::remove(status_, ec);
    pid_ = ::fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {
      ::execl(g_self, g_self, "--subordinate", dir_.c_str(), endpoint_.c_str(), id_.c_str(),
              status_.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }
  void Signal(int sig) { ASSERT_EQ(::kill(pid_, sig), 0); }
  void Kill() {
    Signal(SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(pid_, &status, 0), pid_);
    ASSERT_TRUE(WIFSIGNALED(status));
    pid_ = -1;
  }
  void Terminate() {
    Signal(SIGTERM);
    int status = 0;
    ASSERT_EQ(::waitpid(pid_, &status, 0), pid_);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    pid_ = -1;
  }
  ChildStatus status() const {
    ChildStatus s;
    std::ifstream in(status_);
    in >> s.applied >> s.state >> s.continues >> s.snapshots >> s.hellos >> s.gaps >> s.stale;
    return s;
  }

 private:
  fs::path dir_;
  std::string endpoint_, id_;
  std::string status_;
  pid_t pid_ = -1;
};

// Every batch of a store's journal follows the previous one: no gap, no duplicate.
void ExpectContiguousJournal(const Store& store, Seq head) {
  std::vector<JournalBatch> batches;
  Seq at = store.journal().first_seq - 1;
  std::uint64_t count = 0;
  for (;;) {
    ASSERT_TRUE(store.ReadJournal(at, 8 << 20, &batches).ok());
    if (batches.empty()) break;
    for (const auto& b : batches) {
      ASSERT_EQ(b.first.seq, at + 1) << "a gap or a duplicate in the journal";
      at = b.last.seq;
      ++count;
    }
  }
  EXPECT_EQ(at, head);
  EXPECT_GT(count, 0u);
}

// The digest of every table, and that two tables hold the same records.
void ExpectSameData(const SessionTable& a, const SessionTable& b) {
  for (TableId t : kAllTables) {
    EXPECT_EQ(a.Digest(t), b.Digest(t)) << TableName(t);
    EXPECT_EQ(a.size(t), b.size(t)) << TableName(t);
  }
}

TEST(Replication, StreamsAMillionMixedDeltasToTwoSubordinatesAndTheDigestsAgree) {
  TempDir pdir, sdir, s2dir;
  PrimaryNode p;
  p.Start(pdir.path(), 1);
  auto sstore = OpenStore(sdir.path());
  auto sub =
      Subordinate::Start(SubOptions("s1", p.primary->endpoint()), *sstore, LoadTable(*sstore));
  ASSERT_TRUE(sub.ok()) << sub.status().ToString();
  auto s2store = OpenStore(s2dir.path());
  auto sub2 =
      Subordinate::Start(SubOptions("s2", p.primary->endpoint()), *s2store, LoadTable(*s2store));
  ASSERT_TRUE(sub2.ok()) << sub2.status().ToString();
  Mix mix(1);
  mix.Run(p, 1'000'000);
  const Position head = p.table->last_position();
  for (auto* s : {&*sub, &*sub2}) {
    ASSERT_TRUE(WaitFor([&] { return (*s)->status().applied == head; }, 120s))
        << "subordinate at " << (*s)->status().applied.seq << " of " << head.seq;
    EXPECT_EQ((*s)->status().state, SyncState::kInSync);
    // Progress is reported as a fraction of what there was to catch up.
    EXPECT_DOUBLE_EQ((*s)->status().progress.fraction, 1.0);
  }
  EXPECT_EQ(p.primary->peers().size(), 2u);
  (*sub2)->Read([&](const SessionTable& t) { ExpectSameData(*p.table, t); });
  (*sub)->Read([&](const SessionTable& t) {
    ExpectSameData(*p.table, t);
    // Record by record on a sample.
    std::mt19937_64 rng(9);
    int compared = 0;
    p.table->Scan(TableId::kFwSessions, [&](std::string_view k, std::string_view v) {
      if (rng() % 500 != 0) return;
      ++compared;
      EXPECT_EQ(t.Get(TableId::kFwSessions, k), std::optional<std::string>(v));
    });
    EXPECT_GT(compared, 50);
  });
  EXPECT_EQ((*sub)->status().input.total(), 0u);
  // The subordinate's store holds the same: reload it after a stop.
  auto table = (*sub)->Stop();
  ASSERT_TRUE(sstore->WaitMaterialized(head, 60s));
  auto reloaded = LoadTable(*sstore);
  ExpectSameData(*p.table, *reloaded);
  EXPECT_EQ(reloaded->last_position(), head);
}

// The scheduling class and realtime priority of this process's threads named `name`.
std::vector<std::pair<int, int>> SchedulingOf(const std::string& name) {
  std::vector<std::pair<int, int>> out;
  for (const auto& e : fs::directory_iterator("/proc/self/task")) {
    std::ifstream comm(e.path() / "comm");
    std::string c;
    std::getline(comm, c);
    if (c != name) continue;
    const pid_t tid = std::stoi(e.path().filename().string());
    sched_param param{};
    ::sched_getparam(tid, &param);
    out.emplace_back(::sched_getscheduler(tid), param.sched_priority);
  }
  return out;
}

// Whether this process may put a thread in SCHED_FIFO at `priority`.
bool MayUseRealtime(int priority) {
  bool permitted = false;
  std::thread([&] {
    sched_param param{};
    param.sched_priority = priority;
    permitted = pthread_setschedparam(pthread_self(), SCHED_FIFO, &param) == 0;
  }).join();
  return permitted;
}

// A primary and a subordinate whose I/O threads are scheduled as asked (io_realtime_priority
// values), once `writes` mixed writes over `keys` keys have reached the subordinate.
struct ScheduledStream {
  TempDir pdir, sdir;
  PrimaryNode p;
  std::unique_ptr<Store> sstore;
  std::unique_ptr<Subordinate> sub;
};
void StartScheduledStream(ScheduledStream& s, int primary_io, int subordinate_io, int keys,
                          int writes) {
  replication::PrimaryOptions po;
  po.io_realtime_priority = primary_io;
  s.p.Start(s.pdir.path(), 1, po);
  s.sstore = OpenStore(s.sdir.path());
  auto so = SubOptions("s1", s.p.primary->endpoint());
  so.io_realtime_priority = subordinate_io;
  auto sub = Subordinate::Start(so, *s.sstore, LoadTable(*s.sstore));
  ASSERT_TRUE(sub.ok()) << sub.status().ToString();
  s.sub = std::move(sub).value();
  Mix mix(3, keys);
  mix.Run(s.p, writes);
  const Position head = s.p.table->last_position();
  ASSERT_TRUE(WaitFor([&] { return s.sub->status().applied == head; }, 60s));
}

// io_realtime_priority: with it, the stream's I/O threads (the adapters' and ZeroMQ's) run in
// SCHED_FIFO where the process may use it, and the stream carries on as usual; where it may
// not, they keep the normal class and the stream still runs. Out of range, Start refuses it and
// says why.
TEST(Replication, TheIoThreadsRunInTheRealtimeClassWhenAskedAndPermitted) {
  TempDir bad;
  {
    PrimaryNode b;
    b.store = OpenStore(bad.path());
    b.table = LoadTable(*b.store);
    ASSERT_TRUE(b.table->BecomeWritable(1).ok());
    replication::PrimaryOptions o;
    o.cluster_id = kCluster;
    o.endpoint = "tcp://127.0.0.1:*";
    o.io_realtime_priority = 100;
    auto refused = Primary::Start(o, *b.store, 1);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.status().code(), Status::Code::kInvalidArgument);
    EXPECT_NE(refused.status().message().find("io_realtime_priority is 100"), std::string::npos)
        << refused.status().ToString();
  }
  const bool permitted = MayUseRealtime(5);
  ScheduledStream s;
  ASSERT_NO_FATAL_FAILURE(StartScheduledStream(s, 5, 5, 20'000, 50'000));
  s.sub->Read([&](const SessionTable& t) { ExpectSameData(*s.p.table, t); });
  const std::pair<int, int> want = permitted ? std::pair{SCHED_FIFO, 5} : std::pair{SCHED_OTHER, 0};
  using Classes = std::vector<std::pair<int, int>>;
  for (const char* name : {"ss-primary-io", "ss-follow-io"}) {
    EXPECT_EQ(SchedulingOf(name), Classes{want}) << name << (permitted ? "" : " (not permitted)");
  }
  // Two ZeroMQ I/O threads (the primary's context and the subordinate's), both in the class.
  EXPECT_EQ(SchedulingOf("ZMQbg/IO/0"), (Classes{want, want}));
  // The others keep theirs: the applier is not on the path to the acknowledgement.
  EXPECT_EQ(SchedulingOf("ss-apply"), (Classes{{SCHED_OTHER, 0}}));
}

// By default the stream's I/O threads are in SCHED_FIFO at kDefaultIoRealtimePriority where the
// process may use it (and in the normal class elsewhere); io_realtime_priority 0 keeps a side in
// the normal class.
TEST(Replication, TheIoThreadsAreRealtimeByDefaultWherePermittedAndNormalWhenAsked) {
  const bool permitted = MayUseRealtime(replication::kDefaultIoRealtimePriority);
  ScheduledStream s;
  ASSERT_NO_FATAL_FAILURE(StartScheduledStream(s,
                                               replication::PrimaryOptions{}.io_realtime_priority,
                                               replication::kIoNormalClass, 5'000, 10'000));
  using Classes = std::vector<std::pair<int, int>>;
  const std::pair<int, int> normal{SCHED_OTHER, 0};
  const std::pair<int, int> fifo{SCHED_FIFO, replication::kDefaultIoRealtimePriority};
  EXPECT_EQ(SchedulingOf("ss-follow-io"), Classes{normal});
  if (!permitted) {
    // The default falls back to the normal class, and the stream runs.
    EXPECT_EQ(SchedulingOf("ss-primary-io"), Classes{normal});
    GTEST_SKIP() << "SCHED_FIFO is not permitted here: only the default's fallback was checked";
  }
  EXPECT_EQ(SchedulingOf("ss-primary-io"), Classes{fifo});
  // ZeroMQ's threads of each context (I/O and reaper) follow their side: the primary's in
  // SCHED_FIFO, the subordinate's not.
  for (const char* name : {"ZMQbg/IO/0", "ZMQbg/Reaper"}) {
    Classes zmq = SchedulingOf(name);
    std::sort(zmq.begin(), zmq.end());
    EXPECT_EQ(zmq, (Classes{normal, fifo})) << name;
  }
}

TEST(Replication, ASubordinateKilledMidStreamContinuesWithoutGapOrDuplicate) {
  TempDir pdir, sdir;
  PrimaryNode p;
  p.Start(pdir.path(), 1);
  Child child(sdir.path() / "store", p.primary->endpoint(), "s1");
  child.Start();
  Mix mix(2);
  std::mt19937_64 rng(2);
  for (int round = 0; round < 3; ++round) {
    // Write a while, and kill the child while it is still taking the stream in.
    mix.Run(p, 60'000 + rng() % 40'000);
    const Seq head = p.head();
    ASSERT_TRUE(WaitFor([&] { return child.status().applied + 5'000 >= head; }, 120s));
    child.Kill();
    mix.Run(p, 20'000);  // written while it is down
    child.Start();
    ASSERT_TRUE(WaitFor([&] { return child.status().hellos > 0; }));
  }
  mix.Run(p, 10'000);
  const Seq head = p.head();
  ASSERT_TRUE(WaitFor([&] { return child.status().applied == head; }, 120s))
      << child.status().applied << " of " << head;
  const ChildStatus st = child.status();
  EXPECT_EQ(st.continues, 1u) << "the restarted subordinate continued from its place";
  EXPECT_EQ(st.snapshots, 0u);
  EXPECT_EQ(st.gaps, 0u);
  child.Terminate();
  auto store = OpenStore(sdir.path() / "store");
  ExpectContiguousJournal(*store, head);
  // Loaded as at start-up (tables, then the journal's tail), and once the materializer caught up.
  ExpectSameData(*p.table, *LoadTable(*store));
  ASSERT_TRUE(store->WaitMaterialized(store->applied(), 60s));
  ExpectSameData(*p.table, *LoadTable(*store));
}

TEST(Replication, ASubordinateOutOfTheBacklogGetsASnapshotWhileWritesGoOn) {
  TempDir pdir, sdir;
  PrimaryNode p;
  replication::PrimaryOptions po;
  po.journal = {.max_bytes = 16 << 20, .max_age = std::chrono::hours(1)};
  po.trim_interval = 20ms;
  p.Start(pdir.path(), 1, po);
  auto sstore = OpenStore(sdir.path());
  auto sub =
      Subordinate::Start(SubOptions("s1", p.primary->endpoint()), *sstore, LoadTable(*sstore));
  ASSERT_TRUE(sub.ok());
  Mix mix(3);
  mix.Run(p, 50'000);
  ASSERT_TRUE(WaitFor([&] { return (*sub)->status().applied.seq == p.head(); }));
  auto table = (*sub)->Stop();
  const Seq left_at = table->last_position().seq;
  // Offline while the journal moves past it.
  while (p.store->journal().first_seq <= left_at + 1) {
    mix.Run(p, 20'000);
    std::this_thread::sleep_for(20ms);
  }
  // The journal is trimmed only up to what is materialized: on a loaded machine it can be far
  // over its cap here, and a snapshot's pin holds only up to twice the cap. Start once the
  // journal is back within its cap, as the budget below assumes.
  ASSERT_TRUE(p.store->WaitMaterialized(p.store->applied(), 60s));
  ASSERT_TRUE(WaitFor([&] { return p.store->journal().bytes <= po.journal.max_bytes; }));
  sub = Subordinate::Start(SubOptions("s1", p.primary->endpoint()), *sstore, std::move(table));
  ASSERT_TRUE(sub.ok());
  // A writer thread (the table's owner meanwhile) goes on during the snapshot and after it. Its
  // volume is bounded in bytes, not in time: the journal keeps what a snapshot needs only up to
  // twice its cap, and a slow machine must not push the subordinate out of it again. A budget of
  // a quarter of the cap, in records of the size measured so far, leaves room for the batches
  // that sit below the snapshot's pin.
  const JournalStats js = p.store->journal();
  const std::uint64_t bytes_per_record =
      std::max<std::uint64_t>(1, js.bytes / std::max<Seq>(1, js.last_seq - js.first_seq + 1));
  const std::uint64_t budget_steps = po.journal.max_bytes / 4 / bytes_per_record / 100;
  ASSERT_GT(budget_steps, 50u);
  ASSERT_TRUE(WaitFor([&] { return (*sub)->status().snapshots > 0; }));
  std::atomic<bool> stop_writing{false};
  std::atomic<std::uint64_t> writes{0};
  std::thread writer([&] {
    while (!stop_writing && writes < budget_steps) {
      mix.Run(p, 100);
      ++writes;
      std::this_thread::sleep_for(1ms);
    }
  });
  const std::uint64_t writes_at_start = 0;
  bool saw_progress = false;  // records done and an estimate of the total, while it runs
  ASSERT_TRUE(WaitFor([&] {
    const auto st = (*sub)->status();
    if (st.state == SyncState::kSnapshot && st.progress.records_done > 0 &&
        st.progress.records_total >= st.progress.records_done && st.progress.fraction > 0) {
      saw_progress = true;
    }
    return st.state != SyncState::kSnapshot && st.state != SyncState::kConnecting;
  }));
  const std::uint64_t during = writes - writes_at_start;
  std::this_thread::sleep_for(300ms);
  stop_writing = true;
  writer.join();
  p.primary->Flush(*p.table);
  const Seq head = p.head();
  ASSERT_TRUE(WaitFor([&] { return (*sub)->status().applied.seq == head; }, 120s));
  const auto st = (*sub)->status();
  EXPECT_EQ(st.snapshots, 1u);
  EXPECT_EQ(st.forks, 0u);
  EXPECT_GT(during, 0u) << "no write landed while the snapshot ran";
  EXPECT_TRUE(saw_progress) << "no progress was reported during the snapshot";
  EXPECT_GE(p.primary->stats().snapshots, 1u);
  (*sub)->Read([&](const SessionTable& t) { ExpectSameData(*p.table, t); });
  table = (*sub)->Stop();
  ASSERT_TRUE(sstore->WaitMaterialized(sstore->applied(), 60s));
  ExpectSameData(*p.table, *LoadTable(*sstore));
}

// A subordinate keeps its journal (which it would serve from once promoted) within its limits,
// apart from what its tables do not hold yet.
TEST(Replication, ASubordinateTrimsItsJournalToItsLimits) {
  TempDir pdir, sdir;
  PrimaryNode p;
  p.Start(pdir.path(), 1);
  auto sstore = OpenStore(sdir.path());
  auto so = SubOptions("s1", p.primary->endpoint());
  so.journal = {.max_bytes = 4 << 20, .max_age = std::chrono::hours(1)};
  so.trim_interval = 20ms;
  auto sub = Subordinate::Start(so, *sstore, LoadTable(*sstore));
  ASSERT_TRUE(sub.ok()) << sub.status().ToString();
  Mix mix(5);
  mix.Run(p, 300'000);
  p.primary->Flush(*p.table);
  const Position head = p.table->last_position();
  ASSERT_TRUE(WaitFor([&] { return (*sub)->status().applied == head; }, 120s));
  ASSERT_GT(p.store->journal().bytes, 12u << 20) << "the stream must be well past the limit";
  ASSERT_TRUE(WaitFor([&] { return sstore->journal().bytes <= (4u << 20); }, 60s))
      << "the subordinate's journal holds " << sstore->journal().bytes << " bytes";
  EXPECT_GT(sstore->journal().first_seq, 1u);
  EXPECT_EQ(sstore->journal().last_seq, head.seq);
  auto table = (*sub)->Stop();
  ASSERT_TRUE(sstore->WaitMaterialized(head, 60s));
  ExpectSameData(*p.table, *LoadTable(*sstore));
}

TEST(Replication, ABlobCutInTheMiddleResumesFromItsOffset) {
  TempDir pdir, sdir;
  PrimaryNode p;
  replication::PrimaryOptions po;
  po.blob_chunk_bytes = 64 << 10;
  p.Start(pdir.path(), 1, po);
  auto sstore = OpenStore(sdir.path());
  auto so = SubOptions("s1", p.primary->endpoint());
  so.credit_blob_chunks = 1;
  std::unique_ptr<SessionTable> table = LoadTable(*sstore);
  std::string data(32 << 20, '\0');
  std::mt19937_64 rng(4);
  for (auto& c : data) c = static_cast<char>(rng());
  // Cut the lane while a blob is partly received: stop the subordinate then. A try in which the
  // blob completed first is repeated with the next blob.
  BlobCursor cut;
  std::string blob_id;
  for (int attempt = 0; attempt < 5 && cut.offset == 0; ++attempt) {
    auto sub = Subordinate::Start(so, *sstore, std::move(table));
    ASSERT_TRUE(sub.ok());
    blob_id = "rec/" + std::to_string(attempt);
    data[0] = static_cast<char>(attempt);
    auto info = p.primary->PutBlob(blob_id, 2, "call-" + std::to_string(attempt) + ".wav", data);
    ASSERT_TRUE(info.ok());
    WaitFor([&] {
      return sstore->blob_cursor().offset >= (4u << 20) || sstore->blob_cursor().seq > info->seq;
    });
    table = (*sub)->Stop();
    if (sstore->blob_cursor().seq == info->seq) cut = sstore->blob_cursor();
  }
  ASSERT_GT(cut.offset, 0u) << "never caught the blob half-way";
  ASSERT_LT(cut.offset, data.size());
  EXPECT_FALSE(sstore->GetBlob(blob_id, nullptr)->has_value()) << "visible before complete";
  const std::uint64_t sent_before = p.primary->stats().blob_bytes_sent;
  auto sub = Subordinate::Start(so, *sstore, std::move(table));
  ASSERT_TRUE(sub.ok());
  ASSERT_TRUE(WaitFor([&] { return sstore->GetBlob(blob_id, nullptr)->has_value(); }));
  const std::uint64_t resent = p.primary->stats().blob_bytes_sent - sent_before;
  // From the cut on: what was missing, plus at most the chunk in flight when it was cut.
  EXPECT_LE(resent, data.size() - cut.offset + po.blob_chunk_bytes);
  EXPECT_GE(resent, data.size() - cut.offset);
  BlobInfo info;
  auto got = sstore->GetBlob(blob_id, &info);
  EXPECT_EQ(**got, data);
  EXPECT_EQ(info.size, data.size());
  EXPECT_EQ((*sub)->status().input.blob_corrupt, 0u);
}

// Options of a primary whose firewall table is sync, with one ack asked for.
replication::PrimaryOptions SyncFirewallOptions(std::chrono::milliseconds sync_timeout,
                                                replication::SyncFailure on_sync_timeout) {
  replication::PrimaryOptions po;
  po.durability[TableId::kFwSessions] = replication::Durability::kSync;
  po.min_acks = 1;
  po.sync_timeout = sync_timeout;
  po.on_sync_timeout = on_sync_timeout;
  return po;
}

// Starts subordinate s1 of `p` on `store` and waits until it is in sync.
Result<std::unique_ptr<Subordinate>> StartInSync(const PrimaryNode& p, Store& store) {
  auto sub = Subordinate::Start(SubOptions("s1", p.primary->endpoint()), store, LoadTable(store));
  if (sub.ok()) {
    EXPECT_TRUE(WaitFor([&] { return (*sub)->status().state == SyncState::kInSync; }));
  }
  return sub;
}

TEST(Replication, SyncWritesCompleteOnlyWhenPersistedAndBlockOrFailAsConfigured) {
  TempDir pdir, sdir;
  PrimaryNode p;
  replication::PrimaryOptions po = SyncFirewallOptions(300ms, replication::SyncFailure::kFail);
  std::atomic<int> alerts{0};
  po.events = [&](const replication::ReplicationEvent& e) {
    if (e.kind == replication::ReplicationEvent::Kind::kSyncTimeout) ++alerts;
  };
  p.Start(pdir.path(), 1, po);
  auto sstore = OpenStore(sdir.path());
  auto sub = StartInSync(p, *sstore);
  ASSERT_TRUE(sub.ok());
  // Each write is reported durable only once the subordinate's store holds it.
  for (std::uint64_t i = 0; i < 2000; ++i) {
    auto m = p.table->UpsertFirewall(workload::Ipv4Session(i, p.table->now()));
    ASSERT_TRUE(m.ok());
    p.primary->Flush(*p.table);
    if (i % 2 == 0) {
      auto done = p.primary->WhenDurable(TableId::kFwSessions, m->position);
      ASSERT_EQ(done.get().code(), Status::Code::kOk);
      ASSERT_GE(sstore->applied().seq, m->position.seq) << "reported before it was persisted";
      continue;
    }
    // The callback form, for an event loop: told on the I/O thread, where it may ask again
    // (an async table's answer comes at once, on that thread).
    std::promise<std::pair<Status, Seq>> told;
    p.primary->WhenDurable(TableId::kFwSessions, m->position, [&](const Status& st) {
      const Seq persisted = sstore->applied().seq;
      bool nested = false;
      p.primary->WhenDurable(UserTable(1), Position{}, [&](const Status&) { nested = true; });
      told.set_value({nested ? st : Status::FailedPrecondition("no nested answer"), persisted});
    });
    auto [st, persisted] = told.get_future().get();
    ASSERT_TRUE(st.ok()) << st.ToString();
    ASSERT_GE(persisted, m->position.seq) << "reported before it was persisted";
  }
  EXPECT_EQ(alerts.load(), 0);
  // An async table is done at once: the callback runs before WhenDurable returns.
  auto m = p.table->Upsert(UserTable(1), "k", "v");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(p.primary->WhenDurable(UserTable(1), m->position).wait_for(0s),
            std::future_status::ready);
  bool at_once = false;
  p.primary->WhenDurable(UserTable(1), m->position, [&](const Status& st) { at_once = st.ok(); });
  EXPECT_TRUE(at_once);

  // The subordinate stops: `fail` completes the write with Unavailable after sync_timeout.
  auto table = (*sub)->Stop();
  m = p.table->UpsertFirewall(workload::Ipv4Session(5000, p.table->now()));
  ASSERT_TRUE(m.ok());
  p.primary->Flush(*p.table);
  auto failed = p.primary->WhenDurable(TableId::kFwSessions, m->position);
  std::promise<Status> failed_told;
  p.primary->WhenDurable(TableId::kFwSessions, m->position,
                         [&](const Status& st) { failed_told.set_value(st); });
  ASSERT_EQ(failed.wait_for(30s), std::future_status::ready);
  const Status why = failed.get();
  EXPECT_EQ(why.code(), Status::Code::kUnavailable);
  EXPECT_NE(why.message().find("within 300 ms"), std::string::npos) << why.ToString();
  auto told_fail = failed_told.get_future();
  ASSERT_EQ(told_fail.wait_for(30s), std::future_status::ready);
  EXPECT_EQ(told_fail.get().code(), Status::Code::kUnavailable);
  EXPECT_EQ(alerts.load(), 1) << "one alert for the two waiters of that write";
  EXPECT_EQ(p.primary->stats().sync_timeouts, 2u) << "one per waiter";

  // `block`: the write waits past the timeout (with an alert) and completes when a subordinate
  // comes back and persists it; it never turns async.
  p.primary.reset();
  po.on_sync_timeout = replication::SyncFailure::kBlock;
  p.Start(pdir.path(), 1, po);
  m = p.table->UpsertFirewall(workload::Ipv4Session(5001, p.table->now()));
  ASSERT_TRUE(m.ok());
  p.primary->Flush(*p.table);
  auto blocked = p.primary->WhenDurable(TableId::kFwSessions, m->position);
  EXPECT_EQ(blocked.wait_for(1500ms), std::future_status::timeout);
  EXPECT_EQ(alerts.load(), 2) << "the timeout raised an alert, once";
  sub = Subordinate::Start(SubOptions("s1", p.primary->endpoint()), *sstore, std::move(table));
  ASSERT_TRUE(sub.ok());
  ASSERT_EQ(blocked.wait_for(30s), std::future_status::ready);
  EXPECT_TRUE(blocked.get().ok());
  EXPECT_GE(sstore->applied().seq, m->position.seq);

  // Once the primary has stopped, a wait for a write it never got acknowledged is answered at
  // once, not left waiting forever.
  table = (*sub)->Stop();
  m = p.table->UpsertFirewall(workload::Ipv4Session(5002, p.table->now()));
  ASSERT_TRUE(m.ok());
  p.primary->Stop();
  auto late = p.primary->WhenDurable(TableId::kFwSessions, m->position);
  ASSERT_EQ(late.wait_for(0s), std::future_status::ready);
  EXPECT_EQ(late.get().code(), Status::Code::kUnavailable);
}

// A table's owner that stops calling Pump (busy, or waiting for a core) does not hold back the
// deltas Pump already took: the I/O thread closes their batch at its deadline.
TEST(Replication, ABatchLeftOpenLeavesAtItsDeadlineWithoutAnotherPump) {
  TempDir pdir, sdir;
  PrimaryNode p;
  replication::PrimaryOptions po = SyncFirewallOptions(60s, replication::SyncFailure::kBlock);
  po.batch_deadline = 500ms;
  p.Start(pdir.path(), 1, po);
  auto sstore = OpenStore(sdir.path());
  auto sub = StartInSync(p, *sstore);
  ASSERT_TRUE(sub.ok());
  const auto batches_before = p.primary->stats().batches;
  Position last;
  for (std::uint64_t i = 0; i < 10; ++i) {
    auto m = p.table->UpsertFirewall(workload::Ipv4Session(i, p.table->now()));
    ASSERT_TRUE(m.ok());
    last = m->position;
  }
  const auto pumped = std::chrono::steady_clock::now();
  ASSERT_EQ(p.primary->Pump(*p.table), 10u) << "all ten taken into the open batch";
  const auto batches_after_pump = p.primary->stats().batches;
  if (std::chrono::steady_clock::now() - pumped < po.batch_deadline) {  // not descheduled
    EXPECT_EQ(batches_after_pump, batches_before) << "neither full nor due yet";
  }
  auto done = p.primary->WhenDurable(TableId::kFwSessions, last);
  ASSERT_EQ(done.wait_for(30s), std::future_status::ready) << "the open batch never left";
  EXPECT_GE(std::chrono::steady_clock::now() - pumped, po.batch_deadline) << "closed before due";
  EXPECT_TRUE(done.get().ok());
  EXPECT_EQ(p.primary->stats().batches, batches_before + 1);
  EXPECT_GE(sstore->applied().seq, last.seq);
  // Pump goes on as before: the next write opens a new batch.
  auto m = p.table->UpsertFirewall(workload::Ipv4Session(10, p.table->now()));
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(p.primary->Flush(*p.table), 1u);
  EXPECT_TRUE(p.primary->WhenDurable(TableId::kFwSessions, m->position).get().ok());
  EXPECT_EQ(p.primary->stats().batches, batches_before + 2);
}

TEST(Replication, AStaleEpochIsRefusedAndARejoiningFormerPrimaryQuarantinesItsTail) {
  TempDir adir, bdir, cdir;
  // A is primary in epoch 1; B follows it.
  PrimaryNode a;
  replication::PrimaryOptions ao;
  ao.node_id = "a";
  a.Start(adir.path(), 1, ao);
  auto bstore = OpenStore(bdir.path());
  auto bsub =
      Subordinate::Start(SubOptions("b", a.primary->endpoint()), *bstore, LoadTable(*bstore));
  ASSERT_TRUE(bsub.ok());
  Mix mix(5, 20'000);
  mix.Run(a, 30'000);
  ASSERT_TRUE(WaitFor([&] { return (*bsub)->status().applied.seq == a.head(); }));
  // The link to B goes; A writes on: this tail never reaches B.
  auto btable = (*bsub)->Stop();
  const Position fork = btable->last_position();
  mix.Run(a, 5'000);
  const Position a_last = a.table->last_position();
  ASSERT_GT(a_last.seq, fork.seq);
  ASSERT_TRUE(WaitFor([&] { return a.primary->stats().journaled == a_last; }));

  // B is promoted in epoch 2 and takes writes.
  PrimaryNode b;
  b.store = std::move(bstore);
  b.table = std::move(btable);
  replication::PrimaryOptions bo;
  bo.node_id = "b";
  b.Start(bdir.path(), 2, bo);
  EXPECT_EQ(b.primary->replication_id(), a.primary->replication_id()) << "history id kept";
  Mix mix_b(6, 20'000);
  mix_b.Run(b, 3'000);

  // C follows B, and so has seen epoch 2.
  auto cstore = OpenStore(cdir.path());
  auto csub =
      Subordinate::Start(SubOptions("c", b.primary->endpoint()), *cstore, LoadTable(*cstore));
  ASSERT_TRUE(csub.ok());
  ASSERT_TRUE(WaitFor([&] { return (*csub)->status().applied.seq == b.head(); }));
  EXPECT_EQ((*csub)->status().snapshots, 0u) << "B's journal holds A's batches: CONTINUE";
  const Position c_at = (*csub)->status().applied;
  // Pointed at A (epoch 1), C refuses what A sends.
  auto ctable = (*csub)->Stop();
  csub = Subordinate::Start(SubOptions("c", a.primary->endpoint()), *cstore, std::move(ctable));
  ASSERT_TRUE(csub.ok());
  ASSERT_TRUE(WaitFor([&] { return (*csub)->status().input.stale_epoch >= 2; }));
  EXPECT_EQ((*csub)->status().applied, c_at) << "nothing from the stale primary was applied";
  EXPECT_EQ((*csub)->status().state, SyncState::kConnecting);
  ctable = (*csub)->Stop();

  // A learns it lost: it stops serving and rejoins B as a subordinate.
  a.primary.reset();
  ASSERT_TRUE(a.table->BecomeReadOnly().ok());
  auto asub =
      Subordinate::Start(SubOptions("a", b.primary->endpoint()), *a.store, std::move(a.table));
  ASSERT_TRUE(asub.ok());
  ASSERT_TRUE(WaitFor([&] {
    return (*asub)->status().state == SyncState::kInSync &&
           (*asub)->status().applied.seq == b.head();
  }));
  const auto st = (*asub)->status();
  EXPECT_EQ(st.forks, 1u);
  EXPECT_EQ(st.quarantined, a_last.seq - fork.seq);
  // The quarantine holds exactly A's divergent tail, in order.
  std::vector<QuarantinedDelta> kept;
  ASSERT_TRUE(a.store->ScanQuarantine([&](const QuarantinedDelta& q) { kept.push_back(q); }).ok());
  ASSERT_EQ(kept.size(), a_last.seq - fork.seq);
  EXPECT_EQ(kept.front().position, (Position{1, fork.seq + 1}));
  EXPECT_EQ(kept.back().position, a_last);
  EXPECT_NE(kept.front().reason.find("left the primary's"), std::string::npos);
  (*asub)->Read([&](const SessionTable& t) { ExpectSameData(*b.table, t); });
  EXPECT_EQ(a.store->history(), b.store->history());
}

TEST(Replication, AStoppedSubordinateDoesNotGrowThePrimarysMemory) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "resident memory under AddressSanitizer (shadow memory, quarantine) says "
                  "nothing about the program's; the release build runs this test";
#endif
  TempDir pdir, sdir;
  PrimaryNode p;
  replication::PrimaryOptions po;
  po.outbox_max_bytes = 16 << 20;
  po.recent_max_bytes = 16 << 20;
  // The materializer's working memory (a round's frames and records) appears at its first
  // round; with the default threshold (512 MB) that falls inside the measurement. Rounds every
  // 64 MB start during the warm-up.
  p.store = OpenStore(pdir.path(), 64 << 20);
  p.Start(pdir.path(), 1, po);
  Child child(sdir.path() / "store", p.primary->endpoint(), "s1");
  child.Start();
  // A fixed set of sessions updated again and again: the table does not grow, the stream does.
  Mix mix(7, 100'000);
  // Long enough for RocksDB's memtables and caches to reach their working size, so that what is
  // measured from here on is what the stopped subordinate adds.
  for (int i = 0; i < 15; ++i) mix.Run(p, 100'000);
  ASSERT_TRUE(WaitFor([&] { return child.status().applied == p.head(); }, 120s));
  const std::size_t before = ResidentBytes();
  const std::uint64_t bytes_before = p.primary->stats().bytes;
  child.Signal(SIGSTOP);
  // Memory may rise to its bound while the stream runs; past that it must not follow the amount
  // streamed. So: the peak over each third of the run.
  std::size_t peaks[3] = {before, before, before};
  std::uint64_t streamed_in[3] = {0, 0, 0};
  for (int i = 0; i < 36; ++i) {
    const std::uint64_t b = p.primary->stats().bytes;
    mix.Run(p, 100'000);
    peaks[i / 12] = std::max(peaks[i / 12], ResidentBytes());
    streamed_in[i / 12] += p.primary->stats().bytes - b;
  }
  const std::uint64_t streamed = p.primary->stats().bytes - bytes_before;
  std::printf(
      "stopped subordinate: %.0f MB streamed; primary resident %.0f MB before, then peaks "
      "of %.0f, %.0f and %.0f MB over three thirds of %.0f MB streamed each\n",
      streamed / 1e6, before / 1e6, peaks[0] / 1e6, peaks[1] / 1e6, peaks[2] / 1e6,
      streamed_in[1] / 1e6);
  // The bound: the outbox and the ring of recent batches (16 MB each), the subordinate's credit
  // in ZeroMQ's queue (32 batches of at most 1 MiB), RocksDB's memtables (64 MB for the tables
  // and 4 x 8 MB for the journal in these tests) and allocator slack.
  EXPECT_LT(std::max({peaks[0], peaks[1], peaks[2]}) - before, 200u << 20);
  // Past the bound, memory does not follow the stream: the last third streams as much as the
  // second (over 150 MB) and adds little. 40 MB of slack: on a loaded machine (ctest -j2 beside
  // the integration tests' processes) a late materializer round added 27.8 MB once.
  EXPECT_LT(peaks[2], peaks[1] + (40u << 20));
  EXPECT_GT(streamed_in[2], 150u << 20) << "the stream was not large enough to show it";
  child.Signal(SIGCONT);
  ASSERT_TRUE(WaitFor([&] { return child.status().applied == p.head(); }, 120s));
  child.Terminate();
  ExpectSameData(*p.table, *LoadTable(*OpenStore(sdir.path() / "store")));
}

// ---- bad input ----
std::string WithVersion(std::uint16_t version, std::uint64_t cluster, bool body) {
  flatbuffers::FlatBufferBuilder b;
  auto sender = b.CreateString("intruder");
  flatbuffers::Offset<fb::Heartbeat> hb;
  if (body) {
    auto node = b.CreateString("intruder");
    fb::HeartbeatBuilder h(b);
    h.add_node_id(node);
    hb = h.Finish();
  }
  fb::EnvelopeBuilder e(b);
  e.add_schema_version(version);
  e.add_cluster_id(cluster);
  e.add_sender(sender);
  if (body) {
    e.add_body_type(fb::Body::Heartbeat);
    e.add_body(hb.Union());
  }
  b.Finish(e.Finish(), fb::EnvelopeIdentifier());
  return wire::Frame(b);
}

// One of each kind of malformed frame, with the reason each must be counted under.
std::vector<std::pair<std::string, wire::DecodeError>> BadFrames(std::size_t max_message_bytes) {
  using E = wire::DecodeError;
  std::vector<std::pair<std::string, E>> out;
  const std::string good = WithVersion(wire::kSchemaVersion, kCluster, true);
  out.emplace_back("short", E::kTooShort);
  out.emplace_back(std::string(64, 'x'), E::kBadMagic);
  out.emplace_back(good.substr(0, good.size() - 10), E::kLengthMismatch);
  std::string flipped = good;
  flipped[good.size() - 3] ^= 0x40;
  out.emplace_back(flipped, E::kChecksumMismatch);
  std::string garbage(200, '\0');
  std::mt19937_64 rng(11);
  for (auto& c : garbage) c = static_cast<char>(rng());
  out.emplace_back(wire::Frame(wire::AsBytes(garbage)), E::kMalformed);
  out.emplace_back(WithVersion(wire::kSchemaVersion + 1, kCluster, true), E::kWrongVersion);
  out.emplace_back(WithVersion(wire::kSchemaVersion, kCluster + 1, true), E::kWrongCluster);
  out.emplace_back(WithVersion(wire::kSchemaVersion, kCluster, false), E::kNoBody);
  out.emplace_back(wire::Frame(wire::AsBytes(std::string(max_message_bytes + 1000, 'z'))),
                   E::kTooLarge);
  return out;
}

void ExpectEachCountedOnce(const replication::InputCounters& c,
                           const std::vector<std::pair<std::string, wire::DecodeError>>& bad) {
  for (const auto& [frame, reason] : bad) {
    EXPECT_EQ(c.decode[static_cast<std::size_t>(reason)], 1u) << wire::DecodeErrorName(reason);
  }
}

TEST(Replication, BadInputToThePrimaryIsCountedByReasonAndTheStreamGoesOn) {
  TempDir pdir, sdir;
  PrimaryNode p;
  replication::PrimaryOptions po;
  po.max_message_bytes = 1 << 20;
  p.Start(pdir.path(), 1, po);
  auto sstore = OpenStore(sdir.path());
  auto sub =
      Subordinate::Start(SubOptions("s1", p.primary->endpoint()), *sstore, LoadTable(*sstore));
  ASSERT_TRUE(sub.ok());
  Mix mix(8);
  mix.Run(p, 20'000);

  zmq::context_t ctx;
  zmq::socket_t intruder(ctx, zmq::socket_type::dealer);
  intruder.set(zmq::sockopt::routing_id, "intruder");
  intruder.connect(p.primary->endpoint());
  const auto bad = BadFrames(po.max_message_bytes);
  for (const auto& [frame, reason] : bad) {
    intruder.send(zmq::buffer(frame), zmq::send_flags::none);
    mix.Run(p, 2'000);  // the stream goes on meanwhile
  }
  // A well-formed message a primary does not take.
  replication::DeltaBatchBuilder builder;
  const FirewallSession s = workload::Ipv4Session(1, WallNow());
  const std::string v = EncodeFirewallSession(s);
  builder.Add({{1, 1}, TableId::kFwSessions, DeltaKind::kUpsert, FirewallKey(s.orig, s.zone), v});
  intruder.send(zmq::buffer(builder.Finish({kCluster, "intruder", 1}, "x")), zmq::send_flags::none);
  ASSERT_TRUE(WaitFor([&] {
    const auto c = p.primary->stats().input;
    return c.total() == bad.size() + 1;
  })) << p.primary->stats().input.total();
  const auto c = p.primary->stats().input;
  ExpectEachCountedOnce(c, bad);
  EXPECT_EQ(c.unexpected, 1u);

  mix.Run(p, 20'000);
  const Seq head = p.head();
  ASSERT_TRUE(WaitFor([&] { return (*sub)->status().applied.seq == head; }));
  (*sub)->Read([&](const SessionTable& t) { ExpectSameData(*p.table, t); });
  EXPECT_EQ((*sub)->status().input.total(), 0u);
}

// A scripted primary: a bare ROUTER socket that answers the subordinate's HELLO by hand.
class FakePrimary {
 public:
  FakePrimary() : router_(ctx_, zmq::socket_type::router) {
    router_.bind("tcp://127.0.0.1:*");
    endpoint_ = router_.get(zmq::sockopt::last_endpoint);
    router_.set(zmq::sockopt::rcvtimeo, 10000);
  }
  const std::string& endpoint() const { return endpoint_; }
  // Waits for a HELLO and returns it.
  replication::HelloMsg ReceiveHello() {
    for (;;) {
      zmq::message_t id, body;
      if (!router_.recv(id)) return {};
      if (!router_.recv(body)) return {};
      peer_ = id.to_string();
      auto d = wire::Decode({static_cast<const std::uint8_t*>(body.data()), body.size()}, kCluster);
      if (d.ok() && d.envelope->body_type() == fb::Body::Hello) {
        return replication::From(*d.envelope->body_as_Hello());
      }
    }
  }
  void Send(const std::string& frame) {
    router_.send(zmq::buffer(peer_), zmq::send_flags::sndmore);
    router_.send(zmq::buffer(frame), zmq::send_flags::none);
  }

 private:
  zmq::context_t ctx_;
  zmq::socket_t router_;
  std::string endpoint_;
  std::string peer_;
};

TEST(Replication, BadInputToASubordinateIsCountedByReasonAndNothingAppliedIsLost) {
  TempDir sdir;
  FakePrimary fake;
  auto sstore = OpenStore(sdir.path());
  auto so = SubOptions("s1", fake.endpoint());
  so.max_message_bytes = 1 << 20;
  auto sub = Subordinate::Start(so, *sstore, LoadTable(*sstore));
  ASSERT_TRUE(sub.ok());
  const replication::HelloMsg hello = fake.ReceiveHello();
  ASSERT_EQ(hello.node_id, "s1");
  const replication::EnvelopeHeader e2{kCluster, "fake", 2}, e1{kCluster, "fake", 1};
  fake.Send(replication::Encode(e2, replication::ContinueMsg{"rid", {}, hello.session, 0}));

  // One time for every session built here, so that a session rebuilt later is the same bytes.
  const TimePoint t0 = WallNow();
  SessionTable reference;  // what the subordinate must end up holding
  reference.Tick(WallNow());
  ASSERT_TRUE(reference.BecomeWritable(2).ok());
  // Deltas at seq [from, to] of epoch 2; `damage` spoils one record's value.
  auto batch = [&](Seq from, Seq to, const replication::EnvelopeHeader& h, bool damage, bool keep) {
    replication::DeltaBatchBuilder b;
    for (Seq q = from; q <= to; ++q) {
      const FirewallSession s = workload::Ipv4Session(q, t0);
      std::string v = EncodeFirewallSession(s);
      if (damage && q == to) v = "not a flatbuffer";
      b.Add({{2, q}, TableId::kFwSessions, DeltaKind::kUpsert, FirewallKey(s.orig, s.zone), v});
      if (keep) {
        EXPECT_TRUE(reference.UpsertFirewall(s).ok());
      }
    }
    return b.Finish(h, "rid");
  };
  fake.Send(batch(1, 10, e2, false, true));
  ASSERT_TRUE(WaitFor([&] { return (*sub)->status().applied.seq == 10; }));

  const auto bad = BadFrames(so.max_message_bytes);
  for (const auto& [frame, reason] : bad) fake.Send(frame);
  fake.Send(batch(11, 20, e1, false, false));  // from an older epoch
  fake.Send(batch(11, 20, e2, true, false));   // one record does not verify
  {
    // Two deltas that do not follow each other.
    replication::DeltaBatchBuilder b;
    for (Seq q : {11, 13}) {
      const FirewallSession s = workload::Ipv4Session(q, t0);
      b.Add({{2, q},
             TableId::kFwSessions,
             DeltaKind::kUpsert,
             FirewallKey(s.orig, s.zone),
             EncodeFirewallSession(s)});
    }
    fake.Send(b.Finish(e2, "rid"));
  }
  fake.Send(replication::Encode(e2, hello));  // a message a subordinate does not take
  fake.Send(batch(11, 20, e2, false, true));  // and the stream goes on
  ASSERT_TRUE(WaitFor([&] { return (*sub)->status().applied.seq == 20; }));
  auto c = (*sub)->status().input;
  ExpectEachCountedOnce(c, bad);
  EXPECT_EQ(c.stale_epoch, 1u);
  EXPECT_EQ(c.bad_record, 1u);
  EXPECT_EQ(c.bad_batch, 1u);
  EXPECT_EQ(c.unexpected, 1u);
  EXPECT_EQ(c.gap, 0u);
  // A batch that overlaps what it holds (15..25 while at 20): only 21..25 are taken, and the
  // journal stays contiguous.
  fake.Send(batch(15, 25, e2, false, false));
  for (Seq q = 21; q <= 25; ++q) {
    ASSERT_TRUE(reference.UpsertFirewall(workload::Ipv4Session(q, t0)).ok());
  }
  ASSERT_TRUE(WaitFor([&] { return (*sub)->status().applied.seq == 25; }));
  // A gap: refused, counted, and the subordinate asks again from where it is.
  fake.Send(batch(30, 35, e2, false, false));
  const replication::HelloMsg again = fake.ReceiveHello();
  EXPECT_EQ(again.last_applied, (Position{2, 25}));
  EXPECT_NE(again.session, hello.session);
  c = (*sub)->status().input;
  EXPECT_EQ(c.gap, 1u);

  reference.Drain(SIZE_MAX, [](const DeltaView&) {});
  (*sub)->Read([&](const SessionTable& t) {
    EXPECT_EQ(t.Digest(TableId::kFwSessions), reference.Digest(TableId::kFwSessions));
    EXPECT_EQ(t.size(TableId::kFwSessions), 25u);
  });
  auto table = (*sub)->Stop();
  EXPECT_EQ(sstore->applied(), (Position{2, 25}));
  ExpectContiguousJournal(*sstore, 25);
  ExpectSameData(reference, *LoadTable(*sstore));
}

// A subordinate that holds another history meets a new primary whose tables are still empty:
// its records go to the quarantine, the snapshot has no chunk at all (only its end), and the
// stream follows.
TEST(Replication, ANodeFromAnotherHistoryQuarantinesItAndTakesAnEmptySnapshot) {
  TempDir xdir, ydir, sdir;
  PrimaryNode x;
  x.Start(xdir.path(), 1);
  auto sstore = OpenStore(sdir.path());
  auto sub =
      Subordinate::Start(SubOptions("s1", x.primary->endpoint()), *sstore, LoadTable(*sstore));
  ASSERT_TRUE(sub.ok());
  Mix mix(9, 1'000);
  mix.Run(x, 3'000);
  ASSERT_TRUE(WaitFor([&] { return (*sub)->status().applied.seq == x.head(); }));
  const Seq held = x.head();
  auto table = (*sub)->Stop();
  x.primary.reset();

  PrimaryNode y;  // a new cluster history, nothing written yet
  y.Start(ydir.path(), 1);
  ASSERT_NE(y.primary->replication_id(), sstore->replication_id());
  sub = Subordinate::Start(SubOptions("s1", y.primary->endpoint()), *sstore, std::move(table));
  ASSERT_TRUE(sub.ok());
  ASSERT_TRUE(WaitFor(
      [&] { return (*sub)->status().forks == 1 && (*sub)->status().state == SyncState::kInSync; }));
  EXPECT_EQ((*sub)->status().snapshots, 1u);
  std::uint64_t kept = 0;
  ASSERT_TRUE(sstore->ScanQuarantine([&](const QuarantinedDelta&) { ++kept; }).ok());
  EXPECT_EQ(kept, held) << "the whole other history is in the quarantine";
  Mix mix_y(10, 1'000);
  mix_y.Run(y, 2'000);
  ASSERT_TRUE(WaitFor([&] { return (*sub)->status().applied.seq == y.head(); }));
  (*sub)->Read([&](const SessionTable& t) { ExpectSameData(*y.table, t); });
  EXPECT_EQ(sstore->replication_id(), y.primary->replication_id());
}

}  // namespace
}  // namespace statesync::testing

int main(int argc, char** argv) {
  if (argc == 6 && std::string(argv[1]) == "--subordinate") {
    return statesync::testing::RunSubordinateChild(argv[2], argv[3], argv[4], argv[5]);
  }
  statesync::testing::g_self = argv[0];
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
