// Helpers for the integration tests: a local cluster of real statesyncd processes, driven and
// observed only through statesyncctl, as an operator would (roles from `status --json`, data
// from `digest`, acknowledged records from `load --acked-keys` and `sessions check`).
//
// Every cluster lives in a temporary directory with ports found free on 127.0.0.1; the
// destructor stops every process it started (SIGKILL after a grace) and removes the directory.
#pragma once

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <functional>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "temp_dir.h"

namespace statesync::testing {

namespace json = boost::json;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
};

// Runs a command line through /bin/sh, captures stdout (stderr goes to the test's output).
inline CommandResult RunCommand(const std::string& command) {
  CommandResult r;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return r;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) r.out.append(buf, n);
  const int status = ::pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// The last line of `text` that parses as a JSON object.
inline std::optional<json::object> LastJson(const std::string& text) {
  std::optional<json::object> found;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    try {
      json::value v = json::parse(std::string_view(text).substr(start, end - start));
      if (v.is_object()) found = v.as_object();
    } catch (const std::exception&) {
    }
    start = end + 1;
  }
  return found;
}

inline bool WaitUntil(const std::function<bool()>& done, std::chrono::milliseconds limit = 30s,
                      std::chrono::milliseconds every = 20ms) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(every);
  }
  return done();
}

// A base port with `count` free ports above it on 127.0.0.1 (checked by binding each).
inline int FreePortRange(int count) {
  for (int attempt = 0; attempt < 200; ++attempt) {
    // Below the ephemeral range (32768 and up), where outgoing connections take their ports.
    const int base = 10000 + static_cast<int>((::getpid() * 7919 + attempt * 104729) % 22000);
    bool free = true;
    for (int p = base; p < base + count && free; ++p) {
      const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a.sin_port = htons(static_cast<std::uint16_t>(p));
      free = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
      ::close(fd);
    }
    if (free) return base;
  }
  return 0;
}

inline std::string CtlPath() {
  return STATESYNC_CTL_PATH;
}

// What a test asks a node, through statesyncctl on its control socket (where that socket is
// is the cluster's business: Socket()).
class NodeQueries {
 public:
  virtual ~NodeQueries() = default;
  virtual std::string Socket(const std::string& id) const = 0;
  // `statesyncctl --socket <id's> ARGS`, stopped after 180 s (exit code 124): a command that
  // hangs fails its test with the nodes' logs rather than run into ctest's timeout, which
  // leaves nothing to read.
  CommandResult Ctl(const std::string& id, const std::string& args) const {
    return RunCommand("timeout --kill-after=5 180 " + CtlPath() + " --socket " + Socket(id) + " " +
                      args);
  }
  // The node's `status --json`, or nothing when it does not answer.
  std::optional<json::object> Status(const std::string& id) const {
    const CommandResult r = Ctl(id, "status --json 2>/dev/null");
    if (r.exit_code != 0) return std::nullopt;
    return LastJson(r.out);
  }
  std::string Role(const std::string& id) const {
    auto s = Status(id);
    return s ? std::string(s->at("effective_role").as_string()) : "down";
  }
  bool Ready(const std::string& id) const {
    auto s = Status(id);
    return s && s->at("ready").as_bool();
  }
  // The node's (digest, records, applied seq) as `digest --json` reports them.
  std::optional<json::object> Digest(const std::string& id) const {
    const CommandResult r = Ctl(id, "digest --json");
    if (r.exit_code != 0) return std::nullopt;
    return LastJson(r.out);
  }
  std::string DigestText(const std::string& id) const {
    auto d = Digest(id);
    return d ? std::string(d->at("digest").as_string()) + "/" +
                   std::to_string(d->at("records").to_number<std::uint64_t>())
             : "none";
  }
  // `load` through `id` with the options; the summary.
  std::optional<json::object> Load(const std::string& id, const std::string& options) const {
    const CommandResult r = Ctl(id, "load --quiet " + options);
    auto summary = LastJson(r.out);
    EXPECT_TRUE(summary) << r.out;
    return summary;
  }
  std::string Events(const std::string& id) const {
    return Ctl(id, "events --json --last 200").out;
  }
};

class LocalCluster : public NodeQueries {
 public:
  // Starts `nodes` data nodes (n1 configured primary) and, with `witness`, a witness "w".
  //
  // A silent peer is lost after 1 s (100 ms x 10) unless `extra` sets --lost-threshold: these
  // tests kill processes, which the nodes see at once as connections closed on every link, so
  // the heartbeat timer does not decide them. With the default 300 ms a sanitizer build under
  // `ctest -j2` was seen to stall a loaded primary for 340 ms, which is a silent failure and a
  // failover of its own (tests/integration/netns_scenarios_test.cc covers those).
  LocalCluster(int nodes, bool witness, const std::string& sync_mode = "async",
               const std::string& extra = "")
      : base_port_(FreePortRange(10 * (nodes + 1) + 3)) {
    const std::string threshold =
        extra.find("--lost-threshold") == std::string::npos ? " --lost-threshold 10" : "";
    const std::string cmd = CtlPath() + " cluster up --nodes " + std::to_string(nodes) +
                            (witness ? " --witness" : "") + " --dir " + dir_.path().string() +
                            " --base-port " + std::to_string(base_port_) + " --sync-mode " +
                            sync_mode + threshold + " " + extra;
    const CommandResult r = RunCommand(cmd);
    up_ = r.exit_code == 0;
    EXPECT_TRUE(up_) << cmd << "\n" << r.out;
    for (int k = 1; k <= nodes; ++k) ids_.push_back("n" + std::to_string(k));
    if (witness) ids_.push_back("w");
  }
  ~LocalCluster() {
    if (::testing::Test::HasFailure()) {
      // What each node said, for the failure's story (the directory goes with the test).
      for (const auto& id : ids_) {
        const CommandResult log =
            RunCommand("tail -n 40 " + (dir_.path() / id / "statesyncd.log").string());
        std::cerr << "---- " << id << "'s log (last 40 lines)\n" << log.out;
      }
    }
    const CommandResult r = RunCommand(CtlPath() + " cluster down --dir " + dir_.path().string());
    EXPECT_EQ(r.exit_code, 0) << r.out;
  }
  LocalCluster(const LocalCluster&) = delete;
  LocalCluster& operator=(const LocalCluster&) = delete;

  bool up() const { return up_; }
  const std::filesystem::path& dir() const { return dir_.path(); }
  std::string Socket(const std::string& id) const override {
    return (dir_.path() / id / "control.sock").string();
  }
  // Waits for a primary that is ready and answers; returns its id.
  std::string WaitForReadyPrimary(std::chrono::milliseconds limit = 30s) const {
    std::string primary;
    testing::WaitUntil(
        [&] {
          for (const auto& id : ids_) {
            if (Ready(id)) {
              primary = id;
              return true;
            }
          }
          return false;
        },
        limit);
    return primary;
  }
  // Waits for a ready primary; when the start-up election went to another node than `id` (it
  // needs a majority, and a node that came up first may have won it), `id` takes the role
  // over with `statesyncctl takeover`. True once `id` is the ready primary.
  bool MakePrimary(const std::string& id) const {
    const std::string first = WaitForReadyPrimary();
    if (first == id) return true;
    if (first.empty()) return false;
    const CommandResult r = Ctl(id, "takeover");
    EXPECT_EQ(r.exit_code, 0) << r.out;
    return testing::WaitUntil([&] { return Ready(id); }, 30s);
  }
  // Waits until every node in `ids` reports the same digest as `reference`.
  bool WaitSameDigest(const std::string& reference, const std::vector<std::string>& ids,
                      std::chrono::milliseconds limit = 60s) const {
    return testing::WaitUntil(
        [&] {
          const std::string want = DigestText(reference);
          for (const auto& id : ids) {
            if (DigestText(id) != want) return false;
          }
          return want != "none";
        },
        limit, 100ms);
  }
  CommandResult Kill(const std::string& id, const std::string& signal = "KILL") const {
    return RunCommand(CtlPath() + " cluster kill --dir " + dir_.path().string() + " --node " + id +
                      " --signal " + signal);
  }
  bool Start(const std::string& id) const {
    const CommandResult r =
        RunCommand(CtlPath() + " cluster start --dir " + dir_.path().string() + " --node " + id);
    EXPECT_EQ(r.exit_code, 0) << r.out;
    return r.exit_code == 0;
  }
  static bool WaitUntil(const std::function<bool()>& done, std::chrono::milliseconds limit = 30s) {
    return testing::WaitUntil(done, limit);
  }
  bool WaitRole(const std::string& id, const std::string& role,
                std::chrono::milliseconds limit = 30s) const {
    return WaitUntil([&] { return Role(id) == role; }, limit);
  }
  // The peer `peer` as `id` sees it in its status.
  std::optional<json::object> PeerSeen(const std::string& id, const std::string& peer) const {
    auto s = Status(id);
    if (!s) return std::nullopt;
    for (const auto& p : s->at("peers").as_array()) {
      if (p.as_object().at("id").as_string() == peer) return p.as_object();
    }
    return std::nullopt;
  }

 private:
  TempDir dir_;
  int base_port_;
  bool up_ = false;
  std::vector<std::string> ids_;
};

}  // namespace statesync::testing
