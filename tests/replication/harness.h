// Helpers for the replication tests: nodes with a real RocksDB store in a temporary directory,
// a primary or a subordinate on real ZeroMQ sockets on 127.0.0.1, a workload writer, and polling
// with a deadline (a test waits for a condition; it never asserts on a duration).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <thread>

#include "statesync/replication/primary.h"
#include "statesync/replication/store.h"
#include "statesync/replication/subordinate.h"
#include "statesync/workload/workload.h"
#include "temp_dir.h"

namespace statesync::testing {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

inline constexpr std::uint64_t kCluster = 0x5eed;

inline TimePoint WallNow() {
  return std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
}

// Polls `done` until it holds or `limit` passes. Returns whether it held.
inline bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds limit = 60s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return done();
}

inline std::unique_ptr<Store> OpenStore(const fs::path& dir,
                                        std::uint64_t materialize_after_bytes = 512ull << 20) {
  StoreOptions o;
  o.dir = dir;
  o.memtable_budget_bytes = 64 << 20;
  o.materialize_after_bytes = materialize_after_bytes;
  auto s = Store::Open(o);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(s).value() : nullptr;
}

inline std::unique_ptr<SessionTable> LoadTable(const Store& store) {
  auto table = std::make_unique<SessionTable>(SessionTableOptions{.writable = false});
  Status st = store.LoadInto(*table);
  EXPECT_TRUE(st.ok()) << st.ToString();
  return table;
}

// A primary node: store, writable table, Primary.
struct PrimaryNode {
  fs::path dir;
  std::unique_ptr<Store> store;
  std::unique_ptr<SessionTable> table;
  std::unique_ptr<replication::Primary> primary;

  // Opens (or reopens) the node's store, loads it and starts serving in `epoch`.
  void Start(const fs::path& d, Epoch epoch, replication::PrimaryOptions o = {}) {
    dir = d;
    if (!store) store = OpenStore(dir);
    ASSERT_TRUE(store);
    if (!table) table = LoadTable(*store);
    if (!table->writable()) {
      ASSERT_TRUE(table->BecomeWritable(epoch).ok());
    }
    table->Tick(WallNow());
    if (o.node_id == "primary") o.node_id = "p1";
    o.cluster_id = kCluster;
    if (o.endpoint == "tcp://127.0.0.1:7100") o.endpoint = "tcp://127.0.0.1:*";
    auto p = replication::Primary::Start(o, *store, epoch);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    primary = std::move(p).value();
  }

  // Writes through Pump until `done` (the table's log full means: pump and retry).
  void Upsert(const FirewallSession& s) {
    for (;;) {
      auto m = table->UpsertFirewall(s);
      if (m.ok()) break;
      ASSERT_EQ(m.status().code(), Status::Code::kResourceExhausted) << m.status().ToString();
      primary->Pump(*table);
      std::this_thread::sleep_for(100us);
    }
  }
  void Delete(TableId t, const std::string& key) {
    for (;;) {
      auto m = table->Delete(t, key);
      if (m.ok()) break;
      ASSERT_EQ(m.status().code(), Status::Code::kResourceExhausted) << m.status().ToString();
      primary->Pump(*table);
      std::this_thread::sleep_for(100us);
    }
  }
  void UpsertRaw(TableId t, const std::string& key, const std::string& value) {
    for (;;) {
      auto m = table->Upsert(t, key, value);
      if (m.ok()) break;
      ASSERT_EQ(m.status().code(), Status::Code::kResourceExhausted) << m.status().ToString();
      primary->Pump(*table);
      std::this_thread::sleep_for(100us);
    }
  }
  Seq head() const { return table->last_position().seq; }
};

// A mixed workload: firewall sessions (new, updated, deleted), calls, CDRs and a user table.
struct Mix {
  std::mt19937_64 rng;
  std::uint64_t key_space;
  explicit Mix(std::uint64_t seed, std::uint64_t keys = 200'000) : rng(seed), key_space(keys) {}

  void Step(PrimaryNode& n) {
    const std::uint64_t k = rng() % key_space;
    const int op = static_cast<int>(rng() % 100);
    const TimePoint now = n.table->now();
    if (op < 55) {
      FirewallSession s = k % 4 ? workload::Ipv4Session(k, now) : workload::Ipv6Session(k, now);
      s.expiry = now + std::chrono::hours(1);
      s.orig_packets = rng();
      n.Upsert(s);
    } else if (op < 65) {
      const FirewallSession s = workload::Ipv4Session(k, now);
      n.Delete(TableId::kFwSessions, FirewallKey(s.orig, s.zone));
    } else if (op < 80) {
      n.UpsertRaw(TableId::kCalls, workload::Call(k, now).call_id,
                  EncodeCallSession(workload::Call(k, now)));
    } else if (op < 90) {
      const Cdr c = workload::CallRecord(k, now);
      n.UpsertRaw(TableId::kCdrs, c.id, EncodeCdr(c));
    } else {
      n.UpsertRaw(UserTable(1), "u" + std::to_string(k), std::string(1 + rng() % 200, 'v'));
    }
  }
  // `count` steps, pumping as it goes.
  void Run(PrimaryNode& n, std::uint64_t count) {
    for (std::uint64_t i = 0; i < count; ++i) {
      Step(n);
      if (i % 256 == 255) n.primary->Pump(*n.table);
    }
    n.primary->Flush(*n.table);
  }
};

inline const std::vector<TableId> kAllTables = {TableId::kFwSessions, TableId::kCalls,
                                                TableId::kCdrs, UserTable(1)};

inline replication::SubordinateOptions SubOptions(const std::string& id,
                                                  const std::string& endpoint) {
  replication::SubordinateOptions o;
  o.node_id = id;
  o.cluster_id = kCluster;
  o.primary_endpoint = endpoint;
  return o;
}

}  // namespace statesync::testing
