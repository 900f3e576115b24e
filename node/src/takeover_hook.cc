#include "statesync/node/takeover_hook.h"

#include "limited_command.h"

namespace statesync::node {

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
    ++outstanding_;
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
    {
      std::lock_guard lock(mu_);
      --outstanding_;
    }
    cv_.notify_all();
  }
}

void TakeoverHook::Drain() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return outstanding_ == 0 || !thread_.joinable(); });
}

HookResult TakeoverHook::Execute(const std::string& event, std::uint64_t epoch) {
  const std::string epoch_text = std::to_string(epoch);
  CommandRun run =
      RunLimitedCommand(command_, "statesync-hook", {event, epoch_text},
                        {{"STATESYNC_EVENT", event}, {"STATESYNC_EPOCH", epoch_text}}, timeout_);
  HookResult r;
  r.event = event;
  r.epoch = epoch;
  r.exit_code = run.exit_code;
  r.timed_out = run.timed_out;
  r.error = std::move(run.error);
  r.duration = run.duration;
  r.output = std::move(run.output);
  return r;
}

}  // namespace statesync::node
