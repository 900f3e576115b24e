#include "statesync/common/prefaulted_pages.h"

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

namespace statesync {
namespace {

constexpr std::size_t kPageBytes = 4096;

}  // namespace

class PrefaultedPages::Impl {
 public:
  explicit Impl(std::size_t max_ready_bytes) : max_ready_bytes_(max_ready_bytes) {
    thread_ = std::thread([this] { Run(); });
  }
  ~Impl() {
    {
      std::lock_guard lock(mu_);
      stop_.store(true, std::memory_order_relaxed);
    }
    cv_.notify_all();
    thread_.join();
  }

  detail::LargeBuffer Take(std::size_t bytes) {
    {
      std::lock_guard lock(mu_);
      auto it = ready_.find(bytes);
      if (it != ready_.end()) {
        detail::LargeBuffer b = std::move(it->second);
        ready_.erase(it);
        held_bytes_ -= bytes;
        ++stats_.ready_takes;
        stats_.ready_bytes -= bytes;
        return b;
      }
      ++stats_.cold_takes;
    }
    return detail::LargeBuffer(bytes);
  }

  void Expect(std::size_t bytes) {
    {
      std::lock_guard lock(mu_);
      if (bytes == 0 || held_bytes_ + bytes > max_ready_bytes_) {
        ++stats_.ignored_expects;
        return;
      }
      held_bytes_ += bytes;
      wanted_.push_back(bytes);
    }
    cv_.notify_all();
  }

  Stats stats() const {
    std::lock_guard lock(mu_);
    return stats_;
  }

  void WaitPrepared() const {
    std::unique_lock lock(mu_);
    done_cv_.wait(lock, [&] { return wanted_.empty() && !preparing_; });
  }

 private:
  void Run() {
    pthread_setname_np(pthread_self(), "ss-prefault");
    // Below everything else: it runs while the cores have time to spare, and a block it has not
    // finished only means a Take maps fresh memory, as without it.
    sched_param idle{};
    if (::sched_setscheduler(0, SCHED_IDLE, &idle) != 0) {
      ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 19);
    }
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_.load(std::memory_order_relaxed) || !wanted_.empty(); });
      if (stop_.load(std::memory_order_relaxed)) return;
      const std::size_t bytes = wanted_.front();
      wanted_.pop_front();
      preparing_ = true;
      lock.unlock();
      detail::LargeBuffer block(bytes);
      auto* p = block.as<volatile std::uint8_t>();
      // A zero where the kernel's fresh page already has one: what matters is the fault.
      for (std::size_t at = 0; at < bytes; at += kPageBytes) {
        p[at] = 0;
        if (at % (std::size_t{2} << 20) == 0 && stop_.load(std::memory_order_relaxed)) break;
      }
      lock.lock();
      preparing_ = false;
      stats_.prepared_bytes += bytes;
      stats_.ready_bytes += bytes;
      ready_.emplace(bytes, std::move(block));
      done_cv_.notify_all();
    }
  }

  const std::size_t max_ready_bytes_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  mutable std::condition_variable done_cv_;
  std::atomic<bool> stop_{false};
  std::deque<std::size_t> wanted_;                         // announced, not started
  bool preparing_ = false;                                 // a block is being written
  std::multimap<std::size_t, detail::LargeBuffer> ready_;  // by size
  std::size_t held_bytes_ = 0;                             // wanted, being written or ready
  Stats stats_;
  std::thread thread_;
};

PrefaultedPages::PrefaultedPages(std::size_t max_ready_bytes)
    : impl_(std::make_unique<Impl>(max_ready_bytes)) {}
PrefaultedPages::~PrefaultedPages() = default;
detail::LargeBuffer PrefaultedPages::Take(std::size_t bytes) {
  return impl_->Take(bytes);
}
void PrefaultedPages::Expect(std::size_t bytes) {
  impl_->Expect(bytes);
}
PrefaultedPages::Stats PrefaultedPages::stats() const {
  return impl_->stats();
}
void PrefaultedPages::WaitPrepared() const {
  impl_->WaitPrepared();
}

}  // namespace statesync
