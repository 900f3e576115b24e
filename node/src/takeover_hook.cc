#include "statesync/node/takeover_hook.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

extern char** environ;

namespace statesync::node {
namespace {

constexpr std::size_t kKeptOutputBytes = 4096;
constexpr std::chrono::seconds kKillGrace{2};

}  // namespace

TakeoverHook::TakeoverHook(std::string command, std::chrono::milliseconds timeout, Report report)
    : command_(std::move(command)), timeout_(timeout), report_(std::move(report)) {
  if (!command_.empty()) thread_ = std::thread([this] { Loop(); });
}

TakeoverHook::~TakeoverHook() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    queue_.clear();
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void TakeoverHook::Run(const std::string& event, std::uint64_t epoch) {
  if (command_.empty()) return;
  {
    std::lock_guard lock(mu_);
    queue_.emplace_back(event, epoch);
  }
  cv_.notify_all();
}

void TakeoverHook::Loop() {
  pthread_setname_np(pthread_self(), "ss-hook");
  for (;;) {
    std::pair<std::string, std::uint64_t> next;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      next = std::move(queue_.front());
      queue_.pop_front();
    }
    const HookResult r = Execute(next.first, next.second);
    if (report_) report_(r);
  }
}

HookResult TakeoverHook::Execute(const std::string& event, std::uint64_t epoch) {
  HookResult r;
  r.event = event;
  r.epoch = epoch;
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
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  const std::string script = command_ + " \"$@\"";
  const std::string epoch_text = std::to_string(epoch);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
  env_strings.push_back("STATESYNC_EVENT=" + event);
  env_strings.push_back("STATESYNC_EPOCH=" + epoch_text);
  std::vector<char*> env;
  env.reserve(env_strings.size() + 1);
  for (std::string& s : env_strings) env.push_back(s.data());
  env.push_back(nullptr);
  std::vector<char*> argv = {const_cast<char*>("/bin/sh"),
                             const_cast<char*>("-c"),
                             const_cast<char*>(script.c_str()),
                             const_cast<char*>("statesync-hook"),
                             const_cast<char*>(event.c_str()),
                             const_cast<char*>(epoch_text.c_str()),
                             nullptr};
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
  // Read its output until it closes, up to the limit; then stop it.
  bool term_sent = false;
  std::chrono::steady_clock::time_point kill_at{};
  char buffer[4096];
  for (bool open = true; open;) {
    const auto now = std::chrono::steady_clock::now();
    if (!term_sent && now - start >= timeout_) {
      ::kill(-pid, SIGTERM);
      term_sent = true;
      r.timed_out = true;
      kill_at = now + kKillGrace;
    } else if (term_sent && now >= kill_at) {
      ::kill(-pid, SIGKILL);
      break;
    }
    const auto until = term_sent ? kill_at : start + timeout_;
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(until - now).count();
    pollfd p{out[0], POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(std::max<long>(1, wait))) <= 0) continue;
    const ssize_t n = ::read(out[0], buffer, sizeof(buffer));
    if (n <= 0) {
      open = false;
    } else {
      r.output.append(buffer, static_cast<std::size_t>(n));
      if (r.output.size() > kKeptOutputBytes) {
        r.output.erase(0, r.output.size() - kKeptOutputBytes);
      }
    }
  }
  ::close(out[0]);
  int status = 0;
  // Its output closed (or it was killed): wait for the shell itself, within the limit too.
  for (;;) {
    const pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    const auto now = std::chrono::steady_clock::now();
    if (!term_sent && now - start >= timeout_) {
      ::kill(-pid, SIGTERM);
      term_sent = true;
      r.timed_out = true;
      kill_at = now + kKillGrace;
    } else if (term_sent && now >= kill_at) {
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  r.exit_code = WIFEXITED(status) && !r.timed_out ? WEXITSTATUS(status) : -1;
  r.duration = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  return r;
}

}  // namespace statesync::node
