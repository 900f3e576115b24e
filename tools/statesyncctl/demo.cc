// statesyncctl demo: the README's main job. A local cluster of three real statesyncd processes
// (sync replication), firewall and PBX traffic, the primary killed with SIGKILL while traffic
// flows, the takeover in figures, the old primary back and catching up, then everything stopped.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <optional>
#include <thread>

#include "cluster.h"
#include "ctl.h"
#include "ctl_util.h"
#include "statesync/node/control.h"

namespace statesync::ctl {

namespace fs = std::filesystem;
namespace json = boost::json;
namespace po = boost::program_options;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

std::optional<json::object> Ask(const fs::path& socket, const std::string& request) {
  auto answer = node::ControlRequest(socket, request, 10s);
  if (!answer.ok()) return std::nullopt;
  try {
    json::value v = json::parse(answer.value());
    // An error answer ({"ok":false,...}) is no answer to read fields from.
    if (v.is_object() && v.as_object().contains("ok") && v.as_object().at("ok").as_bool()) {
      return v.as_object();
    }
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

std::optional<json::object> AskStatus(const ClusterNode& n) {
  return Ask(n.socket, R"({"command":"status"})");
}

// Runs this executable with `args`; stdout is returned, stderr (progress) goes to the terminal.
std::string RunSelf(const std::string& args) {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  FILE* pipe = ::popen((self.string() + " " + args).c_str(), "r");
  if (pipe == nullptr) return "";
  std::string out;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  ::pclose(pipe);
  return out;
}

std::uint64_t U(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  return v == nullptr ? 0 : v->to_number<std::uint64_t>();
}

std::string Thousands(std::uint64_t n) {
  const std::string digits = std::to_string(n);
  std::string out;
  out.reserve(digits.size() + digits.size() / 3);
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

// "2026-12-04T17:17:38.341Z" -> milliseconds since the epoch.
std::optional<std::int64_t> ParseUtc(const std::string& text) {
  std::tm tm{};
  int ms = 0;
  if (std::sscanf(text.c_str(), "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) != 7) {
    return std::nullopt;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return static_cast<std::int64_t>(timegm(&tm)) * 1000 + ms;
}

std::int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The wall time of the first event of `node` after `since_ms` whose type is `type` and whose
// text contains `needle`.
std::optional<std::int64_t> EventTime(const ClusterNode& node, std::int64_t since_ms,
                                      const std::string& type, const std::string& needle) {
  std::optional<std::int64_t> found;
  node::ControlStream(
      node.socket, R"({"command":"events","last":200})", [&](const std::string& line) {
        try {
          const json::object e = json::parse(line).as_object();
          const auto t = ParseUtc(std::string(e.at("time").as_string()));
          if (!found && t && *t >= since_ms && e.at("type").as_string() == type &&
              std::string(e.at("text").as_string()).find(needle) != std::string::npos) {
            found = t;
          }
        } catch (const std::exception&) {
        }
        return true;
      });
  return found;
}

void Step(int n, const std::string& text) {
  std::cout << "\n[" << n << "/6] " << text << std::endl;
}

}  // namespace

void PrintStatus(const json::object& s, std::ostream& out);

int Demo(const Globals&, const Args& args) {
  po::options_description options(
      "statesyncctl demo [--dir DIR] [--base-port P] [--sessions N] [--keep]: a local cluster "
      "of three statesyncd processes (sync replication), firewall and PBX traffic, the primary "
      "killed with SIGKILL while traffic flows, the takeover in figures, the old primary back "
      "and catching up. Stops everything it started; removes DIR unless --keep.");
  std::string dir_option;
  int base_port = 7400;
  std::uint64_t sessions = 200000;
  bool keep = false;
  options.add_options()("help,h", "this text")("dir", po::value(&dir_option)->value_name("DIR"),
                                               "where the nodes keep their data (default: a new "
                                               "directory under /tmp)")(
      "base-port", po::value(&base_port)->value_name("P"), "first port (default 7400)")(
      "sessions", po::value(&sessions)->value_name("N"),
      "firewall sessions in the first load (default 200000)")("keep", po::bool_switch(&keep),
                                                              "keep DIR afterwards");
  po::variables_map vm;
  if (int r = ParseOptions("demo", options, args, vm); r >= 0) return r;
  fs::path dir = dir_option;
  if (dir.empty()) {
    std::string tmpl = "/tmp/statesync-demo-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::cerr << "statesyncctl demo: cannot create a directory under /tmp\n";
      return 1;
    }
    dir = tmpl;
  }
  const auto demo_started = Clock::now();
  std::cout << "statesync demo: three nodes on 127.0.0.1 (n1 primary, n2 and n3 secondary), "
               "sync replication\n  (data in "
            << dir.string() << ", ports " << base_port << "-" << base_port + 22 << ")\n";

  ClusterSpec spec;
  spec.nodes = 3;
  spec.dir = dir;
  spec.base_port = base_port;
  spec.sync_mode = "sync";
  auto written = WriteCluster(spec);
  if (!written.ok()) {
    std::cerr << "statesyncctl demo: " << written.status().message() << "\n";
    return 1;
  }
  const std::vector<ClusterNode> nodes = written.value();
  int result = 1;
  // Ctrl-C stops the cluster too: the nodes run in sessions of their own, out of reach of the
  // terminal's signals.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::thread([signals, nodes, dir, keep, dir_option]() mutable {
    int sig = 0;
    sigwait(&signals, &sig);
    std::cerr << "\nstatesyncctl demo: interrupted; stopping the cluster\n";
    StopCluster(nodes, 5s);
    if (!keep && dir_option.empty()) {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
    ::_exit(130);
  }).detach();
  // Everything below stops the cluster on the way out, whatever happens.
  const auto finish = [&](int code) {
    StopCluster(nodes, 15s);
    if (!keep && dir_option.empty()) {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
    return code;
  };

  Step(1, "starting the cluster: three statesyncd processes");
  const auto up_started = Clock::now();
  // All three start together, as after a power cut: the configured primary's start-up
  // election needs the others' votes.
  std::vector<pid_t> pids;
  for (const auto& n : nodes) {
    auto pid = StartNode(n);
    if (!pid.ok()) {
      std::cerr << "statesyncctl demo: " << pid.status().message() << "\n";
      return finish(1);
    }
    pids.push_back(pid.value());
  }
  for (std::size_t k = 0; k < nodes.size(); ++k) {
    if (Status st = WaitAnswering(nodes[k], pids[k], 60s); !st.ok()) {
      std::cerr << "statesyncctl demo: " << st.message() << "\n";
      return finish(1);
    }
    std::cout << "  " << nodes[k].id << " (configured " << nodes[k].configured_role << ") pid "
              << pids[k] << std::endl;
  }
  const auto wait_ready = [&](const ClusterNode& n, std::chrono::milliseconds limit) {
    const auto end = Clock::now() + limit;
    while (Clock::now() < end) {
      auto s = AskStatus(n);
      if (s && s->at("ready").as_bool()) return true;
      std::this_thread::sleep_for(5ms);
    }
    return false;
  };
  // The start-up election needs a majority; a node that came up first may have won it.
  const auto first_ready = [&]() -> std::optional<std::size_t> {
    const auto end = Clock::now() + 30s;
    while (Clock::now() < end) {
      for (std::size_t k = 0; k < nodes.size(); ++k) {
        auto s = AskStatus(nodes[k]);
        if (s && s->at("ready").as_bool()) return k;
      }
      std::this_thread::sleep_for(5ms);
    }
    return std::nullopt;
  };
  const auto elected = first_ready();
  if (!elected) {
    std::cerr << "statesyncctl demo: no node became a ready primary; see the logs in "
              << dir.string() << "\n";
    return finish(1);
  }
  if (*elected != 0) {
    std::cout << "  " << nodes[*elected].id
              << " won the start-up election; n1 takes the role over (statesyncctl takeover)"
              << std::endl;
    Ask(nodes[0].socket, R"({"command":"takeover"})");
    if (!wait_ready(nodes[0], 30s)) {
      std::cerr << "statesyncctl demo: n1 did not take the primary role over; see " << nodes[0].log
                << "\n";
      return finish(1);
    }
  }
  std::cout
      << "  n1 is primary and ready after "
      << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - up_started).count()
      << " ms" << std::endl;

  const std::uint64_t blobs = std::max<std::uint64_t>(1, sessions / 1000);
  Step(2, "firewall and PBX traffic into n1: " + Thousands(sessions) + " sessions, " +
              Thousands(sessions / 8) + " calls, " + Thousands(sessions / 8) + " CDRs, " +
              Thousands(blobs) + " voicemails, recordings, prompts and faxes of 64 KiB");
  const std::string n1 = "--socket " + nodes[0].socket.string();
  auto first = LastJsonLine(RunSelf(n1 + " load --sessions " + std::to_string(sessions) +
                                    " --calls " + std::to_string(sessions / 8) + " --cdrs " +
                                    std::to_string(sessions / 8) + " --blobs " +
                                    std::to_string(blobs) + " --wait-acked"));
  if (!first || U(*first, "records_acked") == 0) {
    std::cerr << "statesyncctl demo: the load failed\n";
    return finish(1);
  }
  std::cout << "  " << Thousands(U(*first, "records_acked")) << " records and "
            << Thousands(U(*first, "blobs_acked"))
            << " blobs acknowledged (each persisted by a secondary first), "
            << Thousands(
                   static_cast<std::uint64_t>(first->at("records_per_second").to_number<double>()))
            << " records/s\n";
  std::this_thread::sleep_for(100ms);  // the status is published every 20 ms
  if (auto s = AskStatus(nodes[0])) PrintStatus(*s, std::cout);

  Step(3, "more traffic, and the primary n1 killed with SIGKILL while it flows");
  const fs::path acked = dir / "acked-keys.txt";
  std::optional<json::object> during;
  std::thread loader([&] {
    during = LastJsonLine(RunSelf(n1 +
                                  " load --quiet --sessions 150000 --start 1000000 --rate "
                                  "60000 --blobs 150 --wait-acked --give-up-after 2 --acked-keys " +
                                  acked.string()));
  });
  std::this_thread::sleep_for(1500ms);
  const auto pid = RunningPid(nodes[0]);
  if (!pid) {
    loader.join();
    std::cerr << "statesyncctl demo: n1 is not running\n";
    return finish(1);
  }
  const std::int64_t killed_wall = WallMs();
  const auto killed_at = Clock::now();
  ::kill(*pid, SIGKILL);
  std::cout << "  kill -KILL " << *pid << " (n1)" << std::endl;

  // Poll the secondaries until one is a ready primary.
  std::optional<std::size_t> winner;
  std::optional<std::chrono::milliseconds> ready_polled;
  while (!winner && Clock::now() - killed_at < 20s) {
    for (std::size_t k = 1; k < nodes.size(); ++k) {
      auto s = AskStatus(nodes[k]);
      if (s && s->at("ready").as_bool()) {
        winner = k;
        ready_polled =
            std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - killed_at);
        break;
      }
    }
    std::this_thread::sleep_for(2ms);
  }
  loader.join();
  ::waitpid(*pid, nullptr, 0);  // our child: reap it
  if (!winner) {
    std::cerr << "statesyncctl demo: no secondary took over within 20 s\n";
    return finish(1);
  }
  const ClusterNode& primary = nodes[*winner];
  const ClusterNode& other = nodes[*winner == 1 ? 2 : 1];

  Step(4, "the takeover: " + primary.id + " is the primary");
  const auto lost = EventTime(primary, killed_wall - 1, "alert", "heartbeat disappeared");
  const auto ready = EventTime(primary, killed_wall - 1, "ready", "ready to serve");
  auto check = Ask(
      primary.socket,
      json::serialize(json::object{
          {"command", "sessions"}, {"action", "check"}, {"file", fs::absolute(acked).string()}}));
  auto counts = Ask(primary.socket, R"({"command":"sessions","action":"count"})");
  auto held = Ask(primary.socket, R"({"command":"digest"})");
  const std::uint64_t acked_during = during ? U(*during, "records_acked") : 0;
  const std::uint64_t blobs_during = during ? U(*during, "blobs_acked") : 0;
  if (lost)
    std::cout << "  detection:        " << *lost - killed_wall
              << " ms (n1 silent on both heartbeat links)\n";
  if (ready) {
    std::cout << "  time to ready:    " << *ready - killed_wall
              << " ms (from the kill to the new primary's state applied and serving)\n";
  } else if (ready_polled) {
    std::cout << "  time to ready:    " << ready_polled->count() << " ms\n";
  }
  if (counts) {
    const auto& t = counts->at("tables").as_object();
    const auto get = [&](const char* name) { return t.contains(name) ? U(t, name) : 0; };
    std::cout << "  sessions resumed: " << Thousands(get("fw_sessions")) << " firewall sessions, "
              << Thousands(get("calls")) << " calls, " << Thousands(get("cdrs")) << " CDRs";
    if (held) {
      std::cout << ", " << Thousands(U(*held, "blobs")) << " voice-data blobs ("
                << U(*held, "blob_bytes") / 1'000'000 << " MB)";
    }
    std::cout << "\n";
  }
  const std::uint64_t missing = check ? U(*check, "missing") : 1;
  std::cout << "  acknowledged records and blobs lost: " << missing << " (of "
            << Thousands(U(*first, "records_acked") + acked_during) << " records and "
            << Thousands(U(*first, "blobs_acked") + blobs_during) << " blobs; the "
            << Thousands(acked_during) << " records and " << Thousands(blobs_during)
            << " blobs acknowledged during the kill checked one by one)\n";
  if (auto s = AskStatus(primary)) PrintStatus(*s, std::cout);

  Step(5, "traffic goes on at " + primary.id + " (acknowledged by " + other.id +
              "), then n1 restarts, rejoins as secondary and catches up");
  const std::string np = "--socket " + primary.socket.string();
  auto after = LastJsonLine(RunSelf(np + " load --sessions 300000 --start 2000000 --wait-acked"));
  if (!after || U(*after, "records_acked") == 0) {
    std::cerr << "statesyncctl demo: the load into " << primary.id << " failed\n";
    return finish(1);
  }
  std::cout << "  " << Thousands(U(*after, "records_acked")) << " more records acknowledged\n";
  auto restarted = StartNode(nodes[0]);
  if (!restarted.ok() || !WaitAnswering(nodes[0], restarted.value(), 60s).ok()) {
    std::cerr << "statesyncctl demo: n1 did not restart; see " << nodes[0].log << "\n";
    return finish(1);
  }
  const auto rejoin_started = Clock::now();
  bool caught_up = false;
  const bool tty = ::isatty(1) != 0;
  while (Clock::now() - rejoin_started < 60s) {
    auto s = AskStatus(nodes[0]);
    if (s) {
      const auto& sync = s->at("sync").as_object();
      const std::string state(sync.at("state").as_string());
      const double progress = sync.at("progress").to_number<double>();
      const std::string role(s->at("effective_role").as_string());
      char line[200];
      std::snprintf(line, sizeof line, "  n1 %-9s %-12s %s %3.0f%%  applied seq %s", role.c_str(),
                    state.c_str(), ProgressBar(progress, 30).c_str(), 100 * progress,
                    Thousands(U(*s, "applied_seq")).c_str());
      if (tty) {
        std::cout << "\r" << line << std::flush;
      }
      if (role == "secondary" && state == "in_sync" && U(sync, "lag_records") == 0) {
        if (!tty) std::cout << line;
        std::cout << "\n";
        caught_up = true;
        break;
      }
    }
    std::this_thread::sleep_for(100ms);
  }
  if (!caught_up) {
    std::cerr << "\nstatesyncctl demo: n1 did not catch up within 60 s\n";
    return finish(1);
  }
  std::cout << "  n1 caught up in "
            << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - rejoin_started)
                   .count()
            << " ms after it answered\n";

  Step(6, "digests of the three nodes");
  // The digest reads each node's table; a subordinate's applier may still be a batch behind
  // what it acknowledged, so the digests are compared again for a few seconds before failing.
  bool equal = false;
  std::vector<std::string> lines;
  const auto digests_started = Clock::now();
  while (!equal && Clock::now() - digests_started < 10s) {
    std::string reference;
    equal = true;
    lines.clear();
    for (const auto& n : nodes) {
      auto d = Ask(n.socket, R"({"command":"digest"})");
      const std::string digest = d ? std::string(d->at("digest").as_string()) : "?";
      if (reference.empty()) reference = digest;
      equal = equal && digest == reference && d;
      lines.push_back("  " + n.id + "  digest " + digest + "  records " +
                      (d ? Thousands(U(*d, "records")) : "?") + "  blobs " +
                      (d ? Thousands(U(*d, "blobs")) : "?") + "  applied seq " +
                      (d ? Thousands(U(*d, "applied_seq")) : "?"));
    }
    if (!equal) std::this_thread::sleep_for(200ms);
  }
  for (const auto& l : lines) std::cout << l << "\n";
  result = equal && missing == 0 ? 0 : 1;
  std::cout << "\n"
            << (result == 0 ? "done" : "FAILED") << ": digests (records and blobs) "
            << (equal ? "equal" : "DIFFER") << ", acknowledged records and blobs lost " << missing
            << ", in "
            << std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - demo_started).count()
            << " s. Stopping the cluster." << std::endl;
  return finish(result);
}

}  // namespace statesync::ctl
