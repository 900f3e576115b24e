#include "statesync/node/takeover_hook.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "temp_dir.h"

namespace statesync::node {
namespace {

using namespace std::chrono_literals;
using testing::TempDir;

// Collects the hook's reports.
struct Reports {
  std::mutex mu;
  std::vector<HookResult> results;
  TakeoverHook::Report sink() {
    return [this](const HookResult& r) {
      std::lock_guard lock(mu);
      results.push_back(r);
    };
  }
  // Waits (up to 60 s) for `n` reports.
  std::vector<HookResult> Wait(std::size_t n) {
    for (int i = 0; i < 6000; ++i) {
      {
        std::lock_guard lock(mu);
        if (results.size() >= n) return results;
      }
      std::this_thread::sleep_for(10ms);
    }
    std::lock_guard lock(mu);
    return results;
  }
};

std::string Read(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Whether `pid` still runs: a zombie waiting for whoever inherited it to reap it does not.
bool Alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  const std::size_t close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] != 'Z';
}

TEST(TakeoverHook, RunsOneAtATimeInOrderWithItsArgumentsAndEnvironment) {
  TempDir tmp;
  const auto log = tmp.path() / "calls";
  Reports reports;
  {
    // The hook's own argument ("--verbose") comes before the ones statesync adds.
    TakeoverHook hook(
        "f() { echo \"start $*\" >> " + log.string() + "; sleep 0.2; echo \"end $*\" >> " +
            log.string() +
            "; echo \"event=$STATESYNC_EVENT epoch=$STATESYNC_EPOCH\"; }; f --verbose \"$@\"",
        10s, reports.sink());
    hook.Run("promote", 5);
    hook.Run("demote", 6);
    const auto got = reports.Wait(2);
    ASSERT_EQ(got.size(), 2u);
    EXPECT_TRUE(got[0].ok()) << got[0].error << got[0].output;
    EXPECT_EQ(got[0].event, "promote");
    EXPECT_EQ(got[0].epoch, 5u);
    EXPECT_EQ(got[0].output, "event=promote epoch=5\n");
    EXPECT_EQ(got[1].output, "event=demote epoch=6\n");
  }
  EXPECT_EQ(Read(log),
            "start --verbose promote 5\nend --verbose promote 5\n"
            "start --verbose demote 6\nend --verbose demote 6\n");
}

// A program's path alone gets the event and the epoch as its arguments.
TEST(TakeoverHook, AProgramGetsTheEventAndEpochAsArguments) {
  TempDir tmp;
  const auto program = tmp.path() / "move-vip";
  std::ofstream(program) << "#!/bin/sh\necho \"args: $*\"\n";
  std::filesystem::permissions(program, std::filesystem::perms::owner_all);
  Reports reports;
  TakeoverHook hook(program.string(), 10s, reports.sink());
  hook.Run("demote", 12);
  const auto got = reports.Wait(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].ok()) << got[0].output;
  EXPECT_EQ(got[0].output, "args: demote 12\n");
}

TEST(TakeoverHook, AFailingHookReportsItsExitCodeAndOutput) {
  Reports reports;
  TakeoverHook hook("echo 'cannot move 10.0.0.1/24' >&2; exit 3", 10s, reports.sink());
  hook.Run("promote", 9);
  const auto got = reports.Wait(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_FALSE(got[0].ok());
  EXPECT_EQ(got[0].exit_code, 3);
  EXPECT_FALSE(got[0].timed_out);
  EXPECT_EQ(got[0].output, "cannot move 10.0.0.1/24\n");
}

// At the limit the hook's whole process group is stopped: what it started in the background too,
// and with SIGKILL when it ignores SIGTERM.
TEST(TakeoverHook, AHookPastItsLimitIsStoppedWithWhatItStarted) {
  TempDir tmp;
  for (const std::string trap : {"", "trap '' TERM; "}) {
    const auto pidfile = tmp.path() / "child.pid";
    Reports reports;
    TakeoverHook hook(trap + "sleep 30 & echo $! > " + pidfile.string() + "; wait", 300ms,
                      reports.sink());
    hook.Run("promote", 1);
    const auto got = reports.Wait(1);
    ASSERT_EQ(got.size(), 1u) << trap;
    EXPECT_TRUE(got[0].timed_out) << trap;
    EXPECT_EQ(got[0].exit_code, -1) << trap;
    EXPECT_FALSE(got[0].ok());
    const pid_t child = std::stoi(Read(pidfile));
    // Reaped by nobody here (its parent, the shell, is gone): it must at least not run on.
    for (int i = 0; i < 300 && Alive(child); ++i) std::this_thread::sleep_for(10ms);
    EXPECT_FALSE(Alive(child)) << trap << "pid " << child;
  }
}

// A command that starts a process of its own and exits is done when it exits: not timed out,
// and what it started keeps running.
TEST(TakeoverHook, AHookThatLeavesADaemonRunningIsDoneWhenItExits) {
  TempDir tmp;
  const auto pidfile = tmp.path() / "daemon.pid";
  Reports reports;
  TakeoverHook hook("sleep 30 & echo $! > " + pidfile.string() + "; echo started", 20s,
                    reports.sink());
  hook.Run("promote", 2);
  const auto got = reports.Wait(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].ok()) << got[0].exit_code << " timed out " << got[0].timed_out;
  EXPECT_EQ(got[0].output, "started\n");
  const pid_t daemon = std::stoi(Read(pidfile));
  EXPECT_TRUE(Alive(daemon));
  ::kill(daemon, SIGKILL);
}

// The daemon blocks SIGTERM in its threads (it is its planned restart): a hook still gets it at
// its limit and may clean up.
TEST(TakeoverHook, AHookGetsSigtermAtItsLimitEvenWhenTheDaemonBlocksIt) {
  sigset_t term, old;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  ASSERT_EQ(::pthread_sigmask(SIG_BLOCK, &term, &old), 0);  // inherited by the hook's thread
  Reports reports;
  {
    TakeoverHook hook("trap 'echo cleaned up; exit 0' TERM; sleep 30 & wait", 300ms,
                      reports.sink());
    hook.Run("demote", 3);
    const auto got = reports.Wait(1);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_TRUE(got[0].timed_out);
    EXPECT_EQ(got[0].output, "cleaned up\n");
  }
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

// Drain waits for every queued run, not only the running one: a stopping node's "demote"
// (queued behind a slow "promote") still runs. Without Drain the destructor drops it.
TEST(TakeoverHook, DrainRunsWhatIsQueuedBeforeTheHookGoes) {
  TempDir tmp;
  const auto log = tmp.path() / "calls";
  Reports reports;
  {
    TakeoverHook hook("sleep 0.3; echo \"$1 $2\" >> " + log.string(), 10s, reports.sink());
    hook.Run("promote", 7);
    hook.Run("demote", 7);
    hook.Drain();
    EXPECT_EQ(Read(log), "promote 7\ndemote 7\n");
    std::lock_guard lock(reports.mu);
    EXPECT_EQ(reports.results.size(), 2u);
  }
  // With nothing queued, Drain returns at once; with no command, too.
  TakeoverHook idle("true", 10s, reports.sink());
  idle.Drain();
  TakeoverHook none("", 10s, reports.sink());
  none.Run("promote", 1);
  none.Drain();
}

TEST(TakeoverHook, NoCommandRunsNothing) {
  Reports reports;
  {
    TakeoverHook hook("", 1s, reports.sink());
    hook.Run("promote", 1);
  }
  std::lock_guard lock(reports.mu);
  EXPECT_TRUE(reports.results.empty());
}

}  // namespace
}  // namespace statesync::node
