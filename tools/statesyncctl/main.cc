// statesyncctl: the admin CLI of statesync (see `statesyncctl --help`). Thin: global options and
// dispatch; each command is in ctl.h.
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "ctl.h"

namespace {

constexpr const char* kUsage =
    R"(statesyncctl: talk to statesync nodes, load them, run a local cluster

Usage: statesyncctl [--socket PATH] [--json] COMMAND [OPTIONS]   (COMMAND --help for its options)

A node (through its control socket: --socket, else $STATESYNC_SOCKET, else ./control.sock):
  status                      roles, epoch, peers and links, lag, catch-up progress
  digest                      a digest of all records: equal on nodes holding the same data
  sessions count|list|get KEY records per table, their keys, one record
  events [--follow]           the HA event log
  load [--sessions N] ...     synthetic firewall and PBX traffic through the primary's ingest
  set-role primary|secondary|off, takeover, restore-role
  holdoff [--seconds S]       a planned restart: the peers hold off, then the node stops

A local cluster (real statesyncd processes on 127.0.0.1):
  cluster up --nodes N [--witness] --dir DIR [--base-port P] [--sync-mode async|sync]
  cluster status --dir DIR
  cluster down --dir DIR
  demo                        three nodes, traffic, the primary killed, the takeover in figures

Global options:
  --socket PATH   the node's control socket
  --json          machine-readable output (one JSON object)
  -h, --help      this text
)";

}  // namespace

int main(int argc, char** argv) {
  using namespace statesync::ctl;
  Globals g;
  if (const char* env = std::getenv("STATESYNC_SOCKET"); env != nullptr && *env != '\0') {
    g.socket = env;
  } else {
    g.socket = "control.sock";
  }
  int i = 1;
  for (; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json") {
      g.json = true;
    } else if (a == "--socket" && i + 1 < argc) {
      g.socket = argv[++i];
    } else if (a.rfind("--socket=", 0) == 0) {
      g.socket = a.substr(9);
    } else if (a == "-h" || a == "--help") {
      std::cout << kUsage;
      return 0;
    } else if (!a.empty() && a[0] == '-') {
      std::cerr << "statesyncctl: unknown option '" << a << "' (try --help)\n";
      return 2;
    } else {
      break;
    }
  }
  if (i >= argc) {
    std::cerr << kUsage;
    return 2;
  }
  const std::string command = argv[i];
  Args args;
  for (++i; i < argc; ++i) {
    // --json is accepted after the command too ("statesyncctl status --json").
    if (std::strcmp(argv[i], "--json") == 0) {
      g.json = true;
    } else if (std::strcmp(argv[i], "--socket") == 0 && i + 1 < argc && command != "cluster") {
      g.socket = argv[++i];
    } else {
      args.emplace_back(argv[i]);
    }
  }
  if (command == "status") return ShowStatus(g, args);
  if (command == "digest") return Digest(g, args);
  if (command == "sessions") return Sessions(g, args);
  if (command == "events") return Events(g, args);
  if (command == "set-role" || command == "takeover" || command == "restore-role") {
    return RoleCommand(g, command, args);
  }
  if (command == "holdoff") return Holdoff(g, args);
  if (command == "load") return Load(g, args);
  if (command == "cluster") return Cluster(g, args);
  if (command == "demo") return Demo(g, args);
  std::cerr << "statesyncctl: unknown command '" << command << "' (try --help)\n";
  return 2;
}
