// SessionTable benchmarks on one core: upserts (new keys and updates of existing ones, with
// the change log drained as replication would), a subordinate's applies of replicated deltas,
// gets, expiries, at 1M and 10M IPv4 firewall sessions, and the resident bytes per IPv4 session.
#include <benchmark/benchmark.h>

#include <array>
#include <boost/container_hash/hash.hpp>
#include <boost/unordered/unordered_flat_map.hpp>
#include <cstring>
#include <random>
#include <vector>

#include "bench_util.h"
#include "statesync/sessiontable/session_table.h"
#include "statesync/workload/workload.h"

namespace statesync {
namespace {

const TimePoint kNow{std::chrono::milliseconds(1'780'000'000'000)};
constexpr std::size_t kDrainEvery = 65536;

// The sizes most cases run at: 1M and 10M sessions, three iterations each.
void AtOneAndTenMillion(benchmark::internal::Benchmark* b) {
  b->Arg(1'000'000)->Arg(10'000'000)->Unit(benchmark::kMillisecond)->Iterations(3);
}

std::vector<FirewallSession> Sessions(std::size_t n) {
  std::vector<FirewallSession> out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) out.push_back(workload::Ipv4Session(i, kNow));
  return out;
}

std::vector<FirewallSession> RandomSample(const std::vector<FirewallSession>& from, std::size_t n,
                                          std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<FirewallSession> out;
  out.reserve(n);
  for (std::size_t k = 0; k < n; ++k) out.push_back(from[rng() % from.size()]);
  return out;
}

// Drains the change log the way replication does, but without encoding the values (which
// the drain benchmark measures on its own).
std::size_t DrainKinds(SessionTable& t) {
  std::size_t n = 0;
  t.Drain(SIZE_MAX, [&n](const DeltaView& d) { n += static_cast<std::size_t>(d.kind) + 1; });
  return n;
}

// Drains outside the timed region: the upsert benchmarks time the upserts alone, and
// BM_DrainEncoded times the drain.
void DrainUntimed(benchmark::State& state, SessionTable& t) {
  state.PauseTiming();
  DrainKinds(t);
  state.ResumeTiming();
}

// Upserts `sessions` into `t`, one call each or through UpsertFirewallBatch (256 a call),
// draining outside the timed region whenever 64Ki deltas are pending.
void UpsertAll(benchmark::State& state, SessionTable& t, std::span<const FirewallSession> sessions,
               bool batched) {
  constexpr std::size_t kBatch = 256;
  if (!batched) {
    for (std::size_t i = 0; i < sessions.size(); ++i) {
      benchmark::DoNotOptimize(t.UpsertFirewall(sessions[i]));
      if ((i + 1) % kDrainEvery == 0) DrainUntimed(state, t);
    }
  } else {
    for (std::size_t k = 0; k < sessions.size(); k += kBatch) {
      const std::size_t len = std::min(kBatch, sessions.size() - k);
      const BatchResult r = t.UpsertFirewallBatch(sessions.subspan(k, len));
      if (r.applied != len) state.SkipWithError(r.status.ToString().c_str());
      if (t.pending() + kBatch > kDrainEvery) DrainUntimed(state, t);
    }
  }
  DrainUntimed(state, t);
}

void Fill(SessionTable& t, const std::vector<FirewallSession>& sessions) {
  constexpr std::size_t kBatch = 4096;
  for (std::size_t k = 0; k < sessions.size(); k += kBatch) {
    const std::size_t len = std::min(kBatch, sessions.size() - k);
    if (t.UpsertFirewallBatch(std::span(sessions).subspan(k, len)).applied != len) std::abort();
    if (t.pending() + kBatch > t.change_log_capacity()) DrainKinds(t);
  }
  DrainKinds(t);
}

// Inserts N new sessions into an empty table.
void UpsertNew(benchmark::State& state, bool batched) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto sessions = Sessions(n);
  for (auto _ : state) {
    state.PauseTiming();
    auto t = std::make_unique<SessionTable>();
    t->Tick(kNow);
    state.ResumeTiming();
    UpsertAll(state, *t, sessions, batched);
    state.PauseTiming();
    t.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}
void BM_UpsertNew(benchmark::State& state) {
  UpsertNew(state, false);
}
void BM_UpsertNewBatch(benchmark::State& state) {
  UpsertNew(state, true);
}
BENCHMARK(BM_UpsertNew)->Apply(AtOneAndTenMillion);
BENCHMARK(BM_UpsertNewBatch)->Apply(AtOneAndTenMillion);

// Updates 1M random existing sessions (new counters and a later deadline) of a table of N.
void UpsertExisting(benchmark::State& state, bool batched) {
  const auto n = static_cast<std::size_t>(state.range(0));
  auto sessions = Sessions(n);
  SessionTable t;
  t.Tick(kNow);
  Fill(t, sessions);
  // The updates, in random key order, laid out in the order they are applied so that reading
  // them is sequential: only the table's own accesses are random.
  std::vector<FirewallSession> updates = RandomSample(sessions, 1'000'000, 42);
  for (auto& s : updates) {
    s.orig_packets += 1;
    s.expiry += std::chrono::milliseconds(1);
  }
  for (auto _ : state) UpsertAll(state, t, updates, batched);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * updates.size()));
}
void BM_UpsertExisting(benchmark::State& state) {
  UpsertExisting(state, false);
}
void BM_UpsertExistingBatch(benchmark::State& state) {
  UpsertExisting(state, true);
}
BENCHMARK(BM_UpsertExisting)->Arg(1'000'000)->Arg(10'000'000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_UpsertExistingBatch)->Arg(1'000'000)->Arg(10'000'000)->Unit(benchmark::kMillisecond);

void BM_Get(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto sessions = Sessions(n);
  SessionTable t;
  t.Tick(kNow);
  Fill(t, sessions);
  struct Probe {
    Tuple orig;
    std::uint16_t zone;
  };
  std::vector<Probe> probes;
  for (const auto& s : RandomSample(sessions, 1'000'000, 7)) probes.push_back({s.orig, s.zone});
  for (auto _ : state) {
    for (const auto& p : probes) benchmark::DoNotOptimize(t.GetFirewall(p.orig, p.zone));
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * probes.size()));
}
BENCHMARK(BM_Get)->Arg(1'000'000)->Arg(10'000'000)->Unit(benchmark::kMillisecond);

// N sessions with deadlines spread over 100 s; Tick walks through them in 100 ms steps and
// the expire deltas are drained.
void BM_Expire(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  std::vector<FirewallSession> sessions;
  sessions.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    sessions.push_back(workload::Ipv4Session(
        i, kNow, std::chrono::milliseconds(1000 + static_cast<std::int64_t>(i % 100'000))));
  }
  std::size_t expired = 0;
  for (auto _ : state) {
    state.PauseTiming();
    auto t = std::make_unique<SessionTable>();
    t->Tick(kNow);
    Fill(*t, sessions);
    const auto before = t->stats().expired;
    state.ResumeTiming();
    for (TimePoint now = kNow; now <= kNow + std::chrono::seconds(102);
         now += std::chrono::milliseconds(100)) {
      t->Tick(now);
      DrainKinds(*t);
    }
    expired += t->stats().expired - before;
    state.PauseTiming();
    if (t->size(TableId::kFwSessions) != 0) state.SkipWithError("not everything expired");
    t.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(expired));
}
BENCHMARK(BM_Expire)->Arg(1'000'000)->Arg(10'000'000)->Unit(benchmark::kMillisecond)->Iterations(2);

// A subordinate's side: the deltas of N new sessions (as the primary drained them, values
// encoded) applied to an empty read-only table, one Apply a delta or one a replication batch
// of 500 (the applier's way: firewall keys hashed and their index entries requested ahead).
struct OwnedDelta {
  Position position;
  std::string key, value;
};
std::vector<OwnedDelta> DrainedNew(std::size_t n) {
  SessionTable t(SessionTableOptions{.change_log_capacity = 1 << 20});
  t.Tick(kNow);
  std::vector<OwnedDelta> out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (!t.UpsertFirewall(workload::Ipv4Session(i, kNow)).ok()) std::abort();
    if (t.pending() == t.change_log_capacity() || i + 1 == n) {
      t.Drain(SIZE_MAX, [&out](const DeltaView& d) {
        out.push_back({d.position, std::string(d.key), std::string(d.value)});
      });
    }
  }
  return out;
}
void ApplyNew(benchmark::State& state, bool batched) {
  constexpr std::size_t kBatch = 500;
  const auto deltas = DrainedNew(static_cast<std::size_t>(state.range(0)));
  std::vector<DeltaView> views;
  views.reserve(deltas.size());
  for (const OwnedDelta& d : deltas) {
    views.push_back({d.position, TableId::kFwSessions, DeltaKind::kUpsert, d.key, d.value});
  }
  for (auto _ : state) {
    state.PauseTiming();
    auto t = std::make_unique<SessionTable>(SessionTableOptions{.writable = false});
    state.ResumeTiming();
    for (std::size_t k = 0; k < views.size(); k += kBatch) {
      const auto batch = std::span(views).subspan(k, std::min(kBatch, views.size() - k));
      if (batched) {
        if (!t->Apply(batch).ok()) state.SkipWithError("a delta did not apply");
      } else {
        for (const DeltaView& v : batch) {
          if (!t->Apply(v).ok()) state.SkipWithError("a delta did not apply");
        }
      }
    }
    state.PauseTiming();
    t.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * views.size()));
}
void BM_ApplyNew(benchmark::State& state) {
  ApplyNew(state, false);
}
void BM_ApplyNewBatch(benchmark::State& state) {
  ApplyNew(state, true);
}
BENCHMARK(BM_ApplyNew)->Apply(AtOneAndTenMillion);
BENCHMARK(BM_ApplyNewBatch)->Apply(AtOneAndTenMillion);

// Drain with the value encoding that replication needs (FlatBuffers), of 1M new sessions
// (log order = record order).
void BM_DrainEncoded(benchmark::State& state) {
  const auto sessions = Sessions(1'000'000);
  for (auto _ : state) {
    state.PauseTiming();
    SessionTableOptions o;
    o.change_log_capacity = sessions.size();
    auto t = std::make_unique<SessionTable>(o);
    t->Tick(kNow);
    for (const auto& s : sessions) benchmark::DoNotOptimize(t->UpsertFirewall(s));
    state.ResumeTiming();
    std::size_t bytes = 0;
    t->Drain(SIZE_MAX, [&bytes](const DeltaView& d) { bytes += d.key.size() + d.value.size(); });
    benchmark::DoNotOptimize(bytes);
    state.PauseTiming();
    t.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * sessions.size()));
}
BENCHMARK(BM_DrainEncoded)->Unit(benchmark::kMillisecond)->Iterations(3);

// Resident bytes per IPv4 session at N sessions: the RSS growth of building the table,
// index, expiry wheel and all, divided by N. Records are generated on the fly so that only
// the table's memory is counted.
// Runs `build(n)` (which returns the structure it filled) and reports its resident bytes per
// session; the structure is freed outside the timed region.
template <typename Build>
void MeasureBytesPerSession(benchmark::State& state, Build&& build) {
  const auto n = static_cast<std::size_t>(state.range(0));
  double per_session = 0;
  for (auto _ : state) {
    const std::uint64_t before = bench::ResidentBytes();
    auto built = build(n);
    per_session = static_cast<double>(bench::ResidentBytes() - before) / static_cast<double>(n);
    state.PauseTiming();
    built.reset();
    state.ResumeTiming();
  }
  state.counters["bytes_per_session"] = per_session;
}

void BM_MemoryPerSession(benchmark::State& state) {
  MeasureBytesPerSession(state, [](std::size_t n) {
    auto t = std::make_unique<SessionTable>();
    t->Tick(kNow);
    for (std::size_t i = 0; i < n; ++i) {
      if (!t->UpsertFirewall(workload::Ipv4Session(i, kNow)).ok()) std::abort();
      if (t->pending() == t->change_log_capacity()) DrainKinds(*t);
    }
    DrainKinds(*t);
    return t;
  });
}
BENCHMARK(BM_MemoryPerSession)->Arg(10'000'000)->Unit(benchmark::kMillisecond)->Iterations(1);

// ---- baseline: what one writes first, a flat hash map from the 16-byte key to the session ----
// No change log, no expiry, no policies: only the map. Same inputs as the cases above.
using BaselineKey = std::array<char, kFwKeyV4Bytes>;
struct BaselineHash {
  std::size_t operator()(const BaselineKey& k) const {
    return boost::hash_range(k.begin(), k.end());
  }
};
using BaselineMap = boost::unordered_flat_map<BaselineKey, FirewallSession, BaselineHash>;

BaselineKey KeyArray(const FirewallSession& s) {
  BaselineKey k;
  const std::string bytes = FirewallKey(s.orig, s.zone);
  std::memcpy(k.data(), bytes.data(), k.size());
  return k;
}

void BM_BaselineMapUpsertNew(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto sessions = Sessions(n);
  std::vector<BaselineKey> keys;
  keys.reserve(n);
  for (const auto& s : sessions) keys.push_back(KeyArray(s));
  for (auto _ : state) {
    BaselineMap map;
    for (std::size_t i = 0; i < n; ++i) map.insert_or_assign(keys[i], sessions[i]);
    benchmark::DoNotOptimize(map.size());
    state.PauseTiming();
    map = BaselineMap();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}
BENCHMARK(BM_BaselineMapUpsertNew)->Apply(AtOneAndTenMillion);

void BM_BaselineMapUpsertExisting(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto sessions = Sessions(n);
  BaselineMap map;
  for (const auto& s : sessions) map.insert_or_assign(KeyArray(s), s);
  std::vector<FirewallSession> updates = RandomSample(sessions, 1'000'000, 42);
  std::vector<BaselineKey> keys;
  for (auto& s : updates) {
    s.orig_packets += 1;
    keys.push_back(KeyArray(s));
  }
  for (auto _ : state) {
    for (std::size_t k = 0; k < updates.size(); ++k) map.insert_or_assign(keys[k], updates[k]);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * updates.size()));
}
BENCHMARK(BM_BaselineMapUpsertExisting)
    ->Arg(1'000'000)
    ->Arg(10'000'000)
    ->Unit(benchmark::kMillisecond);

void BM_BaselineMapMemoryPerSession(benchmark::State& state) {
  MeasureBytesPerSession(state, [](std::size_t n) {
    auto map = std::make_unique<BaselineMap>();
    for (std::size_t i = 0; i < n; ++i) {
      const FirewallSession s = workload::Ipv4Session(i, kNow);
      map->insert_or_assign(KeyArray(s), s);
    }
    return map;
  });
}
BENCHMARK(BM_BaselineMapMemoryPerSession)
    ->Arg(10'000'000)
    ->Unit(benchmark::kMillisecond)
    ->Iterations(1);

}  // namespace
}  // namespace statesync

BENCHMARK_MAIN();
