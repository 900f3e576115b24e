#include "limited_command.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>
#include <thread>

extern char** environ;

namespace statesync::node {
namespace {

constexpr std::size_t kKeptOutputBytes = 4096;
constexpr std::chrono::seconds kKillGrace{2};

}  // namespace

CommandRun RunLimitedCommand(const std::string& command, const std::string& name,
                             const std::vector<std::string>& args,
                             const std::vector<std::pair<std::string, std::string>>& env_added,
                             std::chrono::milliseconds timeout) {
  CommandRun r;
  const auto start = std::chrono::steady_clock::now();
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) {
    r.error = std::string("cannot create a pipe: ") + std::strerror(errno);
    return r;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDERR_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // Its own process group, so that the limit reaches whatever the command started.
  // And the signals as a fresh process has them: the daemon blocks or ignores some of its own
  // (SIGTERM is its planned restart), and a hook that inherited that would not stop at its limit.
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGQUIT}) sigaddset(&defaults, sig);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  // A single word (a program's path) gets the arguments as its own; a longer command finds them
  // in $1, $2...
  const bool single_word =
      command.find_first_of(" \t\n;&|<>()$`\\\"'*?[]#~=%{}") == std::string::npos;
  const std::string script = single_word ? command + " \"$@\"" : command;
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view v(*e);
    const bool replaced = std::any_of(env_added.begin(), env_added.end(), [&](const auto& kv) {
      return v.size() > kv.first.size() && v.rfind(kv.first, 0) == 0 && v[kv.first.size()] == '=';
    });
    if (!replaced) env_strings.emplace_back(v);
  }
  for (const auto& [key, value] : env_added) {
    std::string entry = key;
    entry += '=';
    entry += value;
    env_strings.push_back(std::move(entry));
  }
  std::vector<char*> env;
  env.reserve(env_strings.size() + 1);
  for (std::string& s : env_strings) env.push_back(s.data());
  env.push_back(nullptr);
  std::vector<std::string> words = {"/bin/sh", "-c", script, name};
  words.insert(words.end(), args.begin(), args.end());
  std::vector<char*> argv;
  argv.reserve(words.size() + 1);
  for (std::string& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, "/bin/sh", &actions, &attr, argv.data(), env.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(out[1]);
  if (rc != 0) {
    ::close(out[0]);
    r.error = std::string("cannot start /bin/sh: ") + std::strerror(rc);
    return r;
  }
  // Until the shell exits (or the limit stops it), keep what it prints. A command may leave a
  // process of its own running (a daemon it starts) that still holds the output: the hook is
  // over when the shell is, not when the output closes.
  bool term_sent = false;
  bool pipe_open = true;
  std::chrono::steady_clock::time_point kill_at{};
  int status = 0;
  char buffer[4096];
  auto keep = [&](ssize_t n) {
    r.output.append(buffer, static_cast<std::size_t>(n));
    if (r.output.size() > kKeptOutputBytes) {
      r.output.erase(0, r.output.size() - kKeptOutputBytes);
    }
  };
  for (;;) {
    if (::waitpid(pid, &status, WNOHANG) == pid) break;
    const auto now = std::chrono::steady_clock::now();
    // Signals go to the group only while the shell is not reaped: its pid (the group's id)
    // cannot have been reused before that.
    if (!term_sent && now - start >= timeout) {
      ::kill(-pid, SIGTERM);
      term_sent = true;
      r.timed_out = true;
      kill_at = now + kKillGrace;
    } else if (term_sent && now >= kill_at) {
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    if (!pipe_open) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    pollfd p{out[0], POLLIN, 0};
    if (::poll(&p, 1, 10) <= 0) continue;
    const ssize_t n = ::read(out[0], buffer, sizeof(buffer));
    if (n <= 0) {
      pipe_open = false;
    } else {
      keep(n);
    }
  }
  // What it printed before it exited, without waiting for what it left running.
  ::fcntl(out[0], F_SETFL, O_NONBLOCK);
  for (ssize_t n; pipe_open && (n = ::read(out[0], buffer, sizeof(buffer))) > 0;) keep(n);
  ::close(out[0]);
  r.exit_code = WIFEXITED(status) && !r.timed_out ? WEXITSTATUS(status) : -1;
  r.duration = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  return r;
}

}  // namespace statesync::node
