// BlobPacer: how fast the blob lane may store and send voice data, adapted to the delay that the
// session deltas see, so that blobs take only what the deltas leave (after LEDBAT, RFC 6817).
//
// The signal is a delta batch's delay from its closing on the primary to a subordinate's
// acknowledgement that it persisted it. The lowest delay of the last few seconds (the base) is
// what the path costs unloaded; what lies above it is queueing. On a machine of few cores that
// queueing is mostly CPU taken by the blob lane: storing a megabyte of voice data costs a WAL
// write, memtable inserts, flushes and the kernel's write-back, on the primary and again on each
// subordinate (docs/BENCHMARKS.md, case (d)). A fixed rate cannot serve both a quiet hour and a
// busy one, so the rate follows the signal:
//   - queueing above the target: the rate is halved, at most once per decrease interval (a cut
//     needs that long to show in the delay), never below the floor: voice data always moves;
//   - queueing below the target: the rate grows linearly, in proportion to the room left;
//   - no delta acknowledged for `idle_after`: nothing to protect, the rate doubles each window.
// The rate never exceeds twice what the lane moved in the last full window (stored plus sent,
// all subordinates together, while each of them and the storing may use the rate), or the
// floor: a lane idle for a while holds no rate that would let a burst through when blobs come
// back.
//
// Pure: time is an argument. Thread-safety: none (the primary guards it with a mutex).
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace statesync::replication::detail {

class BlobPacer {
 public:
  using Clock = std::chrono::steady_clock;

  struct Options {
    double min_bytes_per_second = 1 << 20;
    double max_bytes_per_second = 0;  // 0: no ceiling but the lane's own use
    std::chrono::microseconds target{2000};
    // Additive growth per second at zero queueing.
    double gain_bytes_per_second2 = 32 << 20;
    std::chrono::milliseconds decrease_interval{25};
    std::chrono::milliseconds idle_after{250};
    std::chrono::milliseconds window{100};  // what the lane moved is measured over this
  };

  // A floor below 1 byte/s is taken as 1 and a target below 1 us as 1 us: the lane always moves,
  // and the rate is never zero or undefined.
  BlobPacer(Options o, Clock::time_point now)
      : o_(Sane(o)), rate_(o_.min_bytes_per_second), last_update_(now), window_start_(now) {
    base_.fill(kNoDelay);
    recent_.fill(kNoDelay);
  }

  // A delta batch's delay from closing to acknowledgement.
  void OnDeltaDelay(Clock::time_point now, std::chrono::microseconds delay) {
    Advance(now);
    last_delay_at_ = now;
    seen_delay_ = true;
    const auto bucket = static_cast<std::size_t>(now.time_since_epoch() / kBaseBucket);
    if (bucket != base_bucket_) {
      // Buckets skipped while no delay came are stale: the base is only the recent past.
      for (std::size_t b = base_bucket_ + 1; b <= bucket && b <= base_bucket_ + kBaseBuckets; ++b) {
        base_[b % kBaseBuckets] = kNoDelay;
      }
      base_bucket_ = bucket;
    }
    auto& slot = base_[bucket % kBaseBuckets];
    slot = std::min(slot, delay);
    const auto base = *std::min_element(base_.begin(), base_.end());
    recent_[recent_next_++ % kRecent] = delay;
    const auto current = *std::min_element(recent_.begin(), recent_.end());
    const double queueing = std::chrono::duration<double>(current - base).count();
    const double target = std::chrono::duration<double>(o_.target).count();
    if (queueing > target) {
      if (now - last_decrease_ >= o_.decrease_interval) {
        rate_ = std::max(o_.min_bytes_per_second, rate_ / 2);
        last_decrease_ = now;
      }
      off_target_ = 0;
    } else {
      // At most 1: a delay below the base (a stale base after a quiet spell) adds no gain.
      off_target_ = std::min(1.0, (target - queueing) / target);
    }
  }

  // Bytes the lane stored or sent.
  void OnMoved(std::size_t bytes) { moved_in_window_ += static_cast<double>(bytes); }

  // The rate the lane may use now, in bytes per second.
  double BytesPerSecond(Clock::time_point now) {
    Advance(now);
    return rate_;
  }

 private:
  static constexpr std::chrono::milliseconds kBaseBucket{500};
  static constexpr std::size_t kBaseBuckets = 8;
  static constexpr std::chrono::microseconds kNoDelay = std::chrono::microseconds::max();
  // The queueing is judged on the lowest of the last few delays: a lone late batch (a page
  // fault, a preempted thread) happens with or without blobs, and is no reason to slow them.
  static constexpr std::size_t kRecent = 8;

  static Options Sane(Options o) {
    o.min_bytes_per_second = std::max(1.0, o.min_bytes_per_second);
    o.target = std::max(o.target, std::chrono::microseconds{1});
    return o;
  }

  void Advance(Clock::time_point now) {
    const double dt = std::chrono::duration<double>(now - last_update_).count();
    if (dt <= 0) return;
    last_update_ = now;
    const bool idle = !seen_delay_ || now - last_delay_at_ >= o_.idle_after;
    if (!idle) rate_ += o_.gain_bytes_per_second2 * off_target_ * dt;
    if (now - window_start_ >= o_.window) {
      const double window_s = std::chrono::duration<double>(now - window_start_).count();
      moved_rate_ = moved_in_window_ / window_s;
      moved_in_window_ = 0;
      window_start_ = now;
      if (idle) rate_ *= 2;
    }
    const double ceiling = o_.max_bytes_per_second > 0 ? o_.max_bytes_per_second
                                                       : std::numeric_limits<double>::infinity();
    rate_ = std::clamp(std::min(rate_, 2 * moved_rate_), o_.min_bytes_per_second,
                       std::max(o_.min_bytes_per_second, ceiling));
  }

  Options o_;
  double rate_;
  double off_target_ = 0;
  double moved_in_window_ = 0;
  double moved_rate_ = 0;
  Clock::time_point last_update_;
  Clock::time_point window_start_;
  Clock::time_point last_delay_at_;
  Clock::time_point last_decrease_;
  bool seen_delay_ = false;
  std::array<std::chrono::microseconds, kBaseBuckets> base_{};
  std::size_t base_bucket_ = 0;
  std::array<std::chrono::microseconds, kRecent> recent_{};
  std::size_t recent_next_ = 0;
};

// A token bucket at a rate given at each refill; a tenth of a second's worth may go at once.
struct TokenBucket {
  double tokens = 0;  // may go below zero: a chunk larger than what is left is a debt
  BlobPacer::Clock::time_point at{};

  void Refill(BlobPacer::Clock::time_point now, double bytes_per_second) {
    const double elapsed = std::chrono::duration<double>(now - at).count();
    tokens = std::min(bytes_per_second / 10, tokens + elapsed * bytes_per_second);
    at = now;
  }
  // How long until `bytes` may go at `bytes_per_second` (zero when they may go now).
  std::chrono::microseconds Wait(std::size_t bytes, double bytes_per_second) const {
    const double missing = std::min(static_cast<double>(bytes), bytes_per_second / 10) - tokens;
    if (missing <= 0) return std::chrono::microseconds{0};
    return std::chrono::microseconds{static_cast<std::int64_t>(1e6 * missing / bytes_per_second) +
                                     1};
  }
};

}  // namespace statesync::replication::detail
