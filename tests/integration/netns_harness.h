// Two statesyncd hosts, each in a network namespace of its own, joined by veth pairs (see
// ../shared/NETNS.md): "data" (replication, 10.78.0.0/24), "ha1" (10.79.0.0/24) and "ha2"
// (10.80.0.0/24). A link is cut with `ip link set … down` on one end and restored with `up`.
// A host may also get a port of its own for a monitored link (AddPort: a veth pair inside its
// namespace, whose far end going down takes the carrier away), and configuration of its own
// (more TOML tables, before Start).
// The nodes are driven through statesyncctl on their control sockets (Unix sockets: the file
// system is shared, the network is not).
//
// The destructor kills the processes it started and deletes the namespaces (which takes the
// veth pairs with them). Where namespaces cannot be created, `available()` is false and says
// why: the tests then skip with that message.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <atomic>
#include <fstream>
#include <map>

#include "cluster_harness.h"

extern char** environ;

namespace statesync::testing {

class NetnsPair : public NodeQueries {
 public:
  // `links`: the heartbeat links the nodes use ("ha1", or "ha1" and "ha2").
  explicit NetnsPair(std::vector<std::string> links, const std::string& sync_mode = "async")
      : links_(std::move(links)) {
    static std::atomic<int> counter{0};
    prefix_ = "ss" + std::to_string(::getpid() % 100000) + std::to_string(counter++);
    for (const char* host : {"a", "b"}) {
      const CommandResult r = RunCommand("ip netns add " + Ns(host) + " 2>&1");
      if (r.exit_code != 0) {
        why_unavailable_ = "cannot create network namespaces here (ip netns add: " + r.out + ")";
        return;
      }
      namespaces_.push_back(Ns(host));
      // Created is not usable: in some containers entering one fails ("mount --make-rslave /").
      const CommandResult probe =
          RunCommand("ip netns exec " + Ns(host) + " ip link set lo up 2>&1");
      if (probe.exit_code != 0) {
        why_unavailable_ =
            "network namespaces cannot be entered here (ip netns exec: " + probe.out + ")";
        return;
      }
    }
    int subnet = 78;
    for (const char* link : {"data", "ha1", "ha2"}) {
      const std::string a = If("a", link);
      const std::string b = If("b", link);
      Sh("ip link add " + a + " type veth peer name " + b);
      Sh("ip link set " + a + " netns " + Ns("a"));
      Sh("ip link set " + b + " netns " + Ns("b"));
      Ip("a", "addr add 10." + std::to_string(subnet) + ".0.1/24 dev " + a);
      Ip("b", "addr add 10." + std::to_string(subnet) + ".0.2/24 dev " + b);
      Ip("a", "link set " + a + " up");
      Ip("b", "link set " + b + " up");
      subnets_[link] = subnet++;
    }
    for (const char* host : {"a", "b"}) WriteConfig(host, sync_mode);
  }

  ~NetnsPair() {
    if (::testing::Test::HasFailure()) {
      for (const char* host : {"a", "b"}) {
        const CommandResult log = RunCommand("tail -n 40 " + Log(host));
        std::cerr << "---- " << host << "'s log (last 40 lines)\n" << log.out;
      }
    }
    for (auto& [host, pid] : pids_) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    for (const auto& ns : namespaces_) RunCommand("ip netns del " + ns + " 2>&1");
  }
  NetnsPair(const NetnsPair&) = delete;
  NetnsPair& operator=(const NetnsPair&) = delete;

  bool available() const { return why_unavailable_.empty(); }
  const std::string& why_unavailable() const { return why_unavailable_; }
  const fs::path& dir() const { return dir_.path(); }

  // Starts statesyncd inside the host's namespace.
  bool Start(const std::string& host) {
    const std::string ns = Ns(host);
    const std::string config = Config(host);
    const std::string log = Log(host);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    const std::string statesyncd = StatesyncdPath();
    std::vector<std::string> args = {"ip", "netns", "exec", ns, statesyncd, "--config", config};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    const int rc = posix_spawnp(&pid, "ip", &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) return false;
    pids_[host] = pid;
    return WaitUntil([&] { return Status(host).has_value(); }, 30s);
  }
  void Kill(const std::string& host, int signal = SIGKILL) {
    auto it = pids_.find(host);
    if (it == pids_.end()) return;
    ::kill(it->second, signal);
    ::waitpid(it->second, nullptr, 0);
    pids_.erase(it);
  }
  // Cuts or restores a link ("data", "ha1", "ha2") at host a's end (the veth pair goes down
  // both ways).
  void SetLink(const std::string& link, bool up) {
    Ip("a", "link set " + If("a", link) + (up ? " up" : " down"));
  }
  // Limits what host a sends on a link to `rate` (tc's tbf: "12mbit"), so that a stream lags.
  void LimitLink(const std::string& link, const std::string& rate) {
    Ip("a", "link show " + If("a", link));  // fails loudly if there is no such link
    Sh("tc -n " + Ns("a") + " qdisc replace dev " + If("a", link) + " root tbf rate " + rate +
       " burst 64kbit latency 2s");
  }
  // A port of the host's own, up; its name (for [monitor] links) is returned.
  std::string AddPort(const std::string& host) {
    const std::string port = If(host, "p1");
    Ip(host, "link add " + port + " type veth peer name " + port + "x");
    Ip(host, "link set " + port + " up");
    Ip(host, "link set " + port + "x up");
    return port;
  }
  // The port loses (or regains) its carrier: its far end goes down (or up).
  void SetPort(const std::string& host, bool up) {
    Ip(host, "link set " + If(host, "p1") + "x" + (up ? " up" : " down"));
  }
  // Appends TOML to the host's configuration (before it starts).
  void AddConfig(const std::string& host, const std::string& toml) {
    std::ofstream(Config(host), std::ios::app) << "\n" << toml << "\n";
  }

  std::string Socket(const std::string& host) const override {
    return (dir_.path() / host / "control.sock").string();
  }

 private:
  std::string Ns(const std::string& host) const { return prefix_ + "-" + host; }
  std::string If(const std::string& host, const std::string& link) const {
    return prefix_ + host + link;  // at most 15 characters: "ss12345" + "0" + "a" + "data"
  }
  std::string Config(const std::string& host) const {
    return (dir_.path() / (host + ".toml")).string();
  }
  std::string Log(const std::string& host) const {
    return (dir_.path() / (host + ".log")).string();
  }
  std::string Address(const std::string& host, const std::string& link) const {
    return "10." + std::to_string(subnets_.at(link)) + ".0." + (host == "a" ? "1" : "2");
  }
  static std::string StatesyncdPath() {
    return (fs::path(STATESYNC_CTL_PATH).parent_path() / "statesyncd").string();
  }
  void Sh(const std::string& command) {
    const CommandResult r = RunCommand(command + " 2>&1");
    EXPECT_EQ(r.exit_code, 0) << command << ": " << r.out;
  }
  void Ip(const std::string& host, const std::string& args) {
    Sh("ip -n " + Ns(host) + " " + args);
  }

  void WriteConfig(const std::string& host, const std::string& sync_mode) {
    std::ofstream c(Config(host));
    c << "[node]\nid = \"" << host << "\"\ndata_dir = \"" << (dir_.path() / host).string()
      << "\"\n\n[cluster]\nname = \"" << prefix_ << "\"\nlinks = [";
    for (std::size_t l = 0; l < links_.size(); ++l) {
      c << (l ? ", " : "") << "\"" << links_[l] << "\"";
    }
    // Lost after 500 ms of silence (100 ms x 5) rather than the default 300: a sanitizer build
    // under `ctest -j2`, with more work on the machine, was seen to stall a node's loop for
    // 250-460 ms (its allocator's and the kernel's locks do not lend priority), which is a
    // silent failure and a failover the test did not ask for.
    c << "]\nlost_threshold = 5\n\n";
    for (const char* member : {"a", "b"}) {
      c << "[[member]]\nid = \"" << member << "\"\nrole = \""
        << (std::string(member) == "a" ? "primary" : "secondary") << "\"\nreplication = \"tcp://"
        << Address(member, "data") << ":7400\"\nheartbeat = [";
      for (std::size_t l = 0; l < links_.size(); ++l) {
        c << (l ? ", " : "") << "\"tcp://" << Address(member, links_[l]) << ":740" << (l + 1)
          << "\"";
      }
      c << "]\n\n";
    }
    c << "[replication]\nsync_mode = \"" << sync_mode << "\"\n";
  }

  TempDir dir_;
  std::vector<std::string> links_;
  std::string prefix_;
  std::string why_unavailable_;
  std::vector<std::string> namespaces_;
  std::map<std::string, int> subnets_;
  std::map<std::string, pid_t> pids_;
};

}  // namespace statesync::testing
