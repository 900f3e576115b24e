// Store benchmarks: batches of 500 IPv4 firewall sessions (16-byte keys, their FlatBuffer
// values) applied with the tuned options and with RocksDB's default options in the same run,
// and the start-up load of a store into an empty SessionTable, from its tables and from its
// journal (the replay of what the materializer had not done).
#include <benchmark/benchmark.h>

#include <vector>

#include "bench_util.h"
#include "statesync/replication/messages.h"
#include "statesync/replication/store.h"
#include "statesync/workload/workload.h"

namespace statesync {
namespace {

constexpr int kBatch = 500;
const TimePoint kNow{std::chrono::milliseconds(1'780'000'000'000)};

struct Pool {
  std::vector<std::string> keys;
  std::vector<std::string> values;
};

const Pool& RecordPool(std::size_t n) {
  static Pool pool;
  while (pool.keys.size() < n) {
    const std::uint64_t i = pool.keys.size();
    const FirewallSession s = workload::Ipv4Session(i, kNow);
    pool.keys.push_back(FirewallKey(s.orig, s.zone));
    pool.values.push_back(EncodeFirewallSession(s));
  }
  return pool;
}

// 20,000 batches = 10M distinct keys, about 1.75 GB: more than three times the tuned memtable
// budget (512 MiB), so flushes and compactions run during the measurement and the figure is the
// steady state, not the speed of filling memory. The pool holds 1M
// encoded records; later rounds make their keys distinct by rewriting the zone bytes.
constexpr std::size_t kPoolRecords = 1'000'000;

void BM_StoreApplyBatch500(benchmark::State& state) {
  const bool tuned = state.range(0) != 0;
  const Pool& pool = RecordPool(kPoolRecords);
  bench::ScratchDir dir(tuned ? "apply-tuned" : "apply-default");
  StoreOptions options;
  options.dir = dir.path();
  options.tuned = tuned;
  auto store = Store::Open(options);
  if (!store.ok()) {
    state.SkipWithError(store.status().ToString().c_str());
    return;
  }
  std::vector<StoredDelta> deltas(kBatch);
  std::vector<std::string> keys(kBatch);
  std::size_t next = 0;
  Seq seq = 0;
  std::uint64_t bytes = 0;
  for (auto _ : state) {
    for (int j = 0; j < kBatch; ++j, ++next) {
      const std::size_t i = next % kPoolRecords;
      const auto round = static_cast<std::uint16_t>(next / kPoolRecords);
      keys[j] = pool.keys[i];
      keys[j][2] = static_cast<char>(round >> 8);  // the zone field of the key
      keys[j][3] = static_cast<char>(round & 0xff);
      deltas[j] = {TableId::kFwSessions, DeltaKind::kUpsert, keys[j], pool.values[i]};
      bytes += keys[j].size() + pool.values[i].size();
    }
    seq += kBatch;
    Status st = (*store)->ApplyBatch({1, seq}, deltas);
    if (!st.ok()) {
      state.SkipWithError(st.ToString().c_str());
      return;
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(next));
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes));
  state.SetLabel(tuned ? "tuned options" : "RocksDB default options");
}
BENCHMARK(BM_StoreApplyBatch500)
    ->ArgName("tuned")
    ->Arg(0)
    ->Arg(1)
    ->Iterations(20000)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_StoreStartupLoad(benchmark::State& state) {
  const std::size_t records = static_cast<std::size_t>(state.range(0));
  const Pool& pool = RecordPool(records);
  bench::ScratchDir dir("load");
  StoreOptions options;
  options.dir = dir.path();
  {
    auto store = Store::Open(options);
    if (!store.ok()) {
      state.SkipWithError(store.status().ToString().c_str());
      return;
    }
    std::vector<StoredDelta> deltas;
    Seq seq = 0;
    for (std::size_t i = 0; i < records; i += kBatch) {
      deltas.clear();
      for (std::size_t j = i; j < std::min(records, i + kBatch); ++j) {
        deltas.push_back({TableId::kFwSessions, DeltaKind::kUpsert, pool.keys[j], pool.values[j]});
      }
      seq += deltas.size();
      if (!(*store)->ApplyBatch({1, seq}, deltas).ok()) std::abort();
    }
    if (!(*store)->Flush().ok()) std::abort();
  }
  auto store = Store::Open(options);  // a restart: the load reads from the files
  if (!store.ok()) {
    state.SkipWithError(store.status().ToString().c_str());
    return;
  }
  for (auto _ : state) {
    SessionTableOptions to;
    to.writable = false;
    SessionTable table(to);
    LoadStats stats;
    Status st = (*store)->LoadInto(table, &stats);
    if (!st.ok() || table.size(TableId::kFwSessions) != records) {
      state.SkipWithError(("load failed: " + st.ToString()).c_str());
      return;
    }
    benchmark::DoNotOptimize(table.total_size());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * records));
}
BENCHMARK(BM_StoreStartupLoad)
    ->Arg(1'000'000)
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Start-up replay: N sessions journaled (as a subordinate appends received batches of 1000) and
// never materialized, the store reopened, and LoadInto replays the journal into a table. What
// a restart costs per byte that StoreOptions::max_unmaterialized_bytes lets wait.
void BM_StoreStartupReplay(benchmark::State& state) {
  const auto records = static_cast<std::size_t>(state.range(0));
  bench::ScratchDir dir("replay");
  StoreOptions options;
  options.dir = dir.path();
  options.materialize = false;
  std::uint64_t journal_bytes = 0;
  {
    auto store = Store::Open(options);
    if (!store.ok()) {
      state.SkipWithError(store.status().ToString().c_str());
      return;
    }
    SessionTable source;
    source.Tick(kNow);
    replication::DeltaBatchBuilder builder;
    const replication::EnvelopeHeader header{1, "primary", 1};
    for (std::size_t i = 0; i < records; i += 1000) {
      for (std::size_t j = i; j < std::min(records, i + 1000); ++j) {
        FirewallSession s = workload::Ipv4Session(j, kNow);
        s.expiry = kNow + std::chrono::hours(2);
        if (!source.UpsertFirewall(s).ok()) std::abort();
      }
      source.Drain(SIZE_MAX, [&](const DeltaView& d) { builder.Add(d); });
      const Position first = builder.first(), last = builder.last();
      const std::string frame = builder.Finish(header, "replay");
      if (!(*store)->Append(first, last, wire::AsBytes(frame), kNow).ok()) std::abort();
    }
    journal_bytes = (*store)->journal().bytes;
  }
  auto store = Store::Open(options);
  if (!store.ok()) {
    state.SkipWithError(store.status().ToString().c_str());
    return;
  }
  for (auto _ : state) {
    SessionTable table(SessionTableOptions{.writable = false});
    LoadStats stats;
    Status st = (*store)->LoadInto(table, &stats);
    if (!st.ok() || table.size(TableId::kFwSessions) != records ||
        stats.journal_deltas != records) {
      state.SkipWithError(("replay failed: " + st.ToString()).c_str());
      return;
    }
    benchmark::DoNotOptimize(table.total_size());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * records));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * journal_bytes));
}
BENCHMARK(BM_StoreStartupReplay)
    ->Arg(1'000'000)
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace statesync

BENCHMARK_MAIN();
