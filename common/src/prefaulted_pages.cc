#include "statesync/common/prefaulted_pages.h"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <new>
#include <optional>
#include <thread>
#include <utility>

#include "statesync/common/idle_class.h"

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
      if (auto ready = TakeReady(bytes)) {
        ++stats_.ready_takes;
        return std::move(*ready);
      }
      ++stats_.cold_takes;
      Withdraw(bytes);
    }
    return detail::LargeBuffer(bytes);
  }

  void Expect(std::size_t bytes) {
    {
      std::lock_guard lock(mu_);
      if (bytes == 0 || bytes > max_ready_bytes_ - held_bytes_) {
        ++stats_.ignored_expects;
        return;
      }
      held_bytes_ += bytes;
      wanted_.push_back(bytes);
    }
    cv_.notify_all();
  }

  void Cancel(std::size_t bytes) {
    std::optional<detail::LargeBuffer> unwanted;
    {
      std::lock_guard lock(mu_);
      if (Withdraw(bytes)) return;
      unwanted = TakeReady(bytes);
      if (unwanted) ++stats_.withdrawn;
    }
    // Unmapped here, not under the lock that a taker may be waiting for.
  }

  Stats stats() const {
    std::lock_guard lock(mu_);
    Stats s = stats_;
    for (const auto& [bytes, block] : ready_) s.ready_bytes += bytes;
    return s;
  }

  void WaitPrepared() const {
    std::unique_lock lock(mu_);
    done_cv_.wait(lock, [&] { return wanted_.empty() && preparing_bytes_ == 0; });
  }

 private:
  // REQUIRES: mu_ held. A ready block of `bytes`, if any, no longer held.
  std::optional<detail::LargeBuffer> TakeReady(std::size_t bytes) {
    auto it = ready_.find(bytes);
    if (it == ready_.end()) return std::nullopt;
    detail::LargeBuffer b = std::move(it->second);
    ready_.erase(it);
    held_bytes_ -= bytes;
    return b;
  }

  // REQUIRES: mu_ held. Withdraws an announcement of `bytes` not yet ready: a queued one, else
  // the one being written (unmapped when done). False: none.
  bool Withdraw(std::size_t bytes) {
    if (auto it = std::find(wanted_.begin(), wanted_.end(), bytes); it != wanted_.end()) {
      wanted_.erase(it);
    } else if (preparing_bytes_ == bytes && !drop_preparing_.load(std::memory_order_relaxed)) {
      drop_preparing_.store(true, std::memory_order_relaxed);
    } else {
      return false;
    }
    held_bytes_ -= bytes;
    ++stats_.withdrawn;
    return true;
  }

  void Run() {
    pthread_setname_np(pthread_self(), "ss-prefault");
    // Below everything else: it runs while the cores have time to spare, and a block it has not
    // finished only means a Take maps fresh memory, as without it.
    EnterIdleClass();
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_.load(std::memory_order_relaxed) || !wanted_.empty(); });
      if (stop_.load(std::memory_order_relaxed)) return;
      const std::size_t bytes = wanted_.front();
      wanted_.pop_front();
      preparing_bytes_ = bytes;
      drop_preparing_.store(false, std::memory_order_relaxed);
      lock.unlock();
      detail::LargeBuffer block;
      bool mapped = true;
      try {
        block = detail::LargeBuffer(bytes);
      } catch (const std::bad_alloc&) {
        mapped = false;
      }
      if (mapped) Write(block, bytes);
      lock.lock();
      preparing_bytes_ = 0;
      const bool dropped = drop_preparing_.load(std::memory_order_relaxed);
      if (!dropped) {
        if (!mapped) {
          held_bytes_ -= bytes;
          ++stats_.failed_prepares;
        } else {
          stats_.prepared_bytes += bytes;
          ready_.emplace(bytes, std::move(block));
        }
      }
      done_cv_.notify_all();
      if (mapped && dropped) {
        lock.unlock();
        block = detail::LargeBuffer();  // withdrawn while written: unmapped off the lock
        lock.lock();
      }
    }
  }

  void Write(const detail::LargeBuffer& block, std::size_t bytes) const {
    auto* p = block.as<volatile std::uint8_t>();
    // A zero where the kernel's fresh page already has one: what matters is the fault.
    for (std::size_t at = 0; at < bytes; at += kPageBytes) {
      p[at] = 0;
      // Stopping, or withdrawn meanwhile: the rest of the block is not worth writing.
      if (at % (std::size_t{2} << 20) == 0 && (stop_.load(std::memory_order_relaxed) ||
                                               drop_preparing_.load(std::memory_order_relaxed))) {
        return;
      }
    }
  }

  const std::size_t max_ready_bytes_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  mutable std::condition_variable done_cv_;
  std::atomic<bool> stop_{false};
  std::deque<std::size_t> wanted_;           // announced, not started
  std::size_t preparing_bytes_ = 0;          // the block being written, if any
  std::atomic<bool> drop_preparing_{false};  // ... was withdrawn meanwhile (set under mu_)
  std::multimap<std::size_t, detail::LargeBuffer> ready_;  // by size
  std::size_t held_bytes_ = 0;  // announced and not taken or withdrawn (≤ max_ready_bytes_)
  Stats stats_;                 // its ready_bytes is ready_'s, counted by stats()
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
void PrefaultedPages::Cancel(std::size_t bytes) {
  impl_->Cancel(bytes);
}
PrefaultedPages::Stats PrefaultedPages::stats() const {
  return impl_->stats();
}
void PrefaultedPages::WaitPrepared() const {
  impl_->WaitPrepared();
}

}  // namespace statesync
