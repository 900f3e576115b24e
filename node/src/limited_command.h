// RunLimitedCommand: runs an operator's shell command (the takeover hook, a remote service
// check) with a time limit: SIGTERM to its process group at the limit, SIGKILL 2 s later. It
// returns the exit status, the duration and the last 4 KiB of what it printed.
//
// The command runs as `/bin/sh -c COMMAND NAME ARGS...`: a single word (a program's path) gets
// ARGS as its arguments, a longer command finds them in "$1", "$2"... Its environment is the
// daemon's plus `env`, its signals are a fresh process's, and it has its own process group.
// The run is over when the shell exits: a process the command leaves running (a daemon it
// starts) keeps running, and only what was printed until then is kept.
//
// Thread-safety: a pure function of its arguments; it blocks its caller up to the limit (and the
// 2 s grace after it), so callers run it on a thread of their own.
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace statesync::node {

struct CommandRun {
  int exit_code = -1;      // the command's; -1 when it was killed or could not start
  bool timed_out = false;  // killed at the time limit
  std::string error;       // why it could not start, if so
  std::chrono::milliseconds duration{0};
  std::string output;  // the last 4 KiB of stdout and stderr together
  bool ok() const { return exit_code == 0 && !timed_out && error.empty(); }
};

CommandRun RunLimitedCommand(const std::string& command, const std::string& name,
                             const std::vector<std::string>& args,
                             const std::vector<std::pair<std::string, std::string>>& env,
                             std::chrono::milliseconds timeout);

}  // namespace statesync::node
