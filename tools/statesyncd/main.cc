// statesyncd: runs one statesync node (see `statesyncd --help`). Thin: arguments, logging and
// signals here; the node is statesync::node::Node.
#include <signal.h>
#include <spdlog/sinks/ansicolor_sink-inl.h>  // the sink for a mutex type of ours
#include <spdlog/sinks/ansicolor_sink.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <boost/program_options.hpp>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "statesync/common/pi_mutex.h"
#include "statesync/node/config.h"
#include "statesync/node/node.h"
#include "statesync/replication/store.h"

namespace po = boost::program_options;
using namespace statesync;

namespace {

constexpr const char* kUsage =
    R"(statesyncd: a statesync node (session-state replication and failover)

Usage:
  statesyncd --config FILE          run the node FILE describes
  statesyncd --check-config FILE    check FILE: every problem is named with its line; exit 2 if any
  statesyncd --print-config         print the configuration's keys with their defaults, commented

Signals: SIGTERM is a planned restart (the peers are told to hold off, then the node stops);
SIGINT stops the node without a hold-off (the peers take over if it was primary). The node's
HA state, store and event log are in [node] data_dir; `statesyncctl --socket <control_socket>`
talks to it.

Options)";

// spdlog's console sinks take their lock from a type like this one.
struct LogMutex {
  using mutex_t = PriorityInheritanceMutex;
  static mutex_t& mutex() {
    static mutex_t m;
    return m;
  }
};

}  // namespace

int main(int argc, char** argv) {
  po::options_description options(kUsage);
  std::string config_file;
  std::string check_file;
  std::string log_level = "info";
  options.add_options()("help,h", "this text")("version", "the version")(
      "config", po::value(&config_file)->value_name("FILE"), "run the node FILE describes")(
      "check-config", po::value(&check_file)->value_name("FILE"), "check FILE and exit")(
      "print-config", "print the commented defaults and exit")(
      "log-level", po::value(&log_level)->value_name("LEVEL"),
      "trace, debug, info (default), warn, error (default: $STATESYNC_LOG_LEVEL, else info)");
  if (const char* env = std::getenv("STATESYNC_LOG_LEVEL"); env != nullptr && *env != '\0') {
    log_level = env;
  }
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, options), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "statesyncd: " << e.what() << " (try --help)\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << options;
    return 0;
  }
  if (vm.count("version")) {
    std::cout << "statesyncd 0.1.0\n";
    return 0;
  }
  if (vm.count("print-config")) {
    std::cout << node::DefaultConfigText();
    return 0;
  }
  if (!check_file.empty()) {
    auto config = node::LoadConfig(check_file);
    if (!config.ok()) {
      std::cerr << config.status().message() << "\n";
      return 2;
    }
    std::cout << check_file << ": OK (node " << config.value().id << ", "
              << config.value().members.size() << " members)\n";
    return 0;
  }
  if (config_file.empty()) {
    std::cerr << "statesyncd: give --config FILE (or --check-config FILE, --print-config; "
                 "--help)\n";
    return 2;
  }
  auto config = node::LoadConfig(config_file);
  if (!config.ok()) {
    std::cerr << config.status().message() << "\n";
    return 2;
  }
  const auto level = spdlog::level::from_str(log_level);
  if (level == spdlog::level::off && log_level != "off") {
    std::cerr << "statesyncd: unknown --log-level '" << log_level << "'\n";
    return 2;
  }
  // The log's lock lends priority: the event loop runs in SCHED_FIFO above the stream, and
  // logs; with a plain lock, a normal-class thread preempted inside a log call (by the stream's
  // realtime threads) kept the loop waiting for the kernel's realtime throttling, about 1 s.
  spdlog::set_default_logger(std::make_shared<spdlog::logger>(
      "statesyncd", std::make_shared<spdlog::sinks::ansicolor_stdout_sink<LogMutex>>()));
  spdlog::set_level(level);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [" + config.value().id + "] %v");

  // First thing, before any thread: the allocator keeps freed memory (see store.h).
  TuneProcessAllocator();
  // Signals are taken by one thread with sigwait; every thread the node starts inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto node = node::Node::Open(std::move(config).value());
  if (!node.ok()) {
    spdlog::critical("cannot start: {}", node.status().ToString());
    return 1;
  }
  std::atomic<bool> done{false};
  std::thread signal_thread([&] {
    const timespec poll_interval{0, 200'000'000};
    while (!done) {
      const int sig = sigtimedwait(&signals, nullptr, &poll_interval);
      if (sig == SIGTERM) {
        spdlog::info("SIGTERM: planned restart");
        node.value()->RequestStop(true);
      } else if (sig == SIGINT) {
        spdlog::info("SIGINT: stopping");
        node.value()->RequestStop(false);
      }
    }
  });
  const Status st = node.value()->Run();
  done = true;
  signal_thread.join();
  node.value().reset();
  if (!st.ok()) {
    spdlog::critical("stopped: {}", st.ToString());
    return 1;
  }
  return 0;
}
