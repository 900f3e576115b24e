// The blob lane's pacer on its own, with time as an argument: the rate grows while the deltas
// see no queueing and the lane uses what it is given, halves when they do, never goes below the
// floor, and a lone late batch does not slow the lane.
#include "blob_pacer.h"

#include <gtest/gtest.h>

#include <chrono>

namespace statesync::replication::detail {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using Clock = BlobPacer::Clock;

constexpr double kMiB = 1 << 20;

BlobPacer::Options TestOptions() {
  BlobPacer::Options o;
  o.min_bytes_per_second = 1 * kMiB;
  o.max_bytes_per_second = 256 * kMiB;
  o.target = microseconds(2000);
  return o;
}

// Runs the lane for `span` in 1 ms steps, moving all it may, with a delta batch acknowledged
// every millisecond after `delay` (none when delay is zero). Returns the rate at the end.
double RunLane(BlobPacer& pacer, Clock::time_point& now, milliseconds span, microseconds delay) {
  for (auto end = now + span; now < end; now += milliseconds(1)) {
    if (delay.count() > 0) pacer.OnDeltaDelay(now, delay);
    pacer.OnMoved(static_cast<std::size_t>(pacer.BytesPerSecond(now) / 1000));
  }
  return pacer.BytesPerSecond(now);
}

TEST(BlobPacer, WithNoDeltasTheRateDoublesEachWindowUpToTheCeiling) {
  Clock::time_point now{};
  BlobPacer pacer(TestOptions(), now);
  EXPECT_DOUBLE_EQ(pacer.BytesPerSecond(now), 1 * kMiB);  // it starts at the floor
  const double after_half_second = RunLane(pacer, now, milliseconds(500), microseconds(0));
  EXPECT_GE(after_half_second, 8 * kMiB);
  EXPECT_LE(after_half_second, 64 * kMiB);
  EXPECT_DOUBLE_EQ(RunLane(pacer, now, milliseconds(2000), microseconds(0)), 256 * kMiB);
}

TEST(BlobPacer, QueueingAboveTheTargetHalvesTheRateDownToTheFloor) {
  Clock::time_point now{};
  BlobPacer pacer(TestOptions(), now);
  RunLane(pacer, now, milliseconds(2000), microseconds(0));
  // Deltas at their base delay: the rate stays up (it may still grow).
  const double steady = RunLane(pacer, now, milliseconds(1000), microseconds(1000));
  EXPECT_GE(steady, 200 * kMiB);
  // 5 ms above the base: halved once per decrease interval (25 ms), so about 4 times in 100 ms.
  const double cut = RunLane(pacer, now, milliseconds(100), microseconds(6000));
  EXPECT_LE(cut, steady / 8);
  EXPECT_GE(cut, steady / 32);
  EXPECT_DOUBLE_EQ(RunLane(pacer, now, milliseconds(1000), microseconds(6000)), 1 * kMiB);
}

TEST(BlobPacer, TheRateGrowsBackWhileTheDeltasSeeNoQueueing) {
  Clock::time_point now{};
  BlobPacer pacer(TestOptions(), now);
  RunLane(pacer, now, milliseconds(1000), microseconds(1000));
  RunLane(pacer, now, milliseconds(1000), microseconds(6000));
  ASSERT_DOUBLE_EQ(pacer.BytesPerSecond(now), 1 * kMiB);
  // The base delay is the floor of the last seconds: after 5 s at 1 ms again, the queueing is
  // zero and the rate grows by the gain (32 MiB/s per second) at most.
  const double grown = RunLane(pacer, now, milliseconds(5000), microseconds(1000));
  EXPECT_GE(grown, 100 * kMiB);
  EXPECT_LE(grown, 1 * kMiB + 5 * 32 * kMiB);
}

TEST(BlobPacer, ALoneLateBatchDoesNotSlowTheLane) {
  Clock::time_point now{};
  BlobPacer pacer(TestOptions(), now);
  RunLane(pacer, now, milliseconds(3000), microseconds(1000));
  const double before = pacer.BytesPerSecond(now);
  for (int i = 0; i < 20; ++i) {
    now += milliseconds(1);
    // One batch in eight is 30 ms late; the others are at the base.
    pacer.OnDeltaDelay(now, microseconds(i % 8 == 0 ? 30'000 : 1000));
    pacer.OnMoved(static_cast<std::size_t>(pacer.BytesPerSecond(now) / 1000));
  }
  EXPECT_GE(pacer.BytesPerSecond(now), before);
}

TEST(BlobPacer, AnIdleLaneHoldsNoRateBeyondTwiceWhatItMoved) {
  Clock::time_point now{};
  BlobPacer pacer(TestOptions(), now);
  RunLane(pacer, now, milliseconds(2000), microseconds(0));
  ASSERT_DOUBLE_EQ(pacer.BytesPerSecond(now), 256 * kMiB);
  // Blobs stop: nothing moves for a window, and the rate falls back to the floor.
  now += milliseconds(150);
  pacer.BytesPerSecond(now);
  now += milliseconds(150);
  EXPECT_DOUBLE_EQ(pacer.BytesPerSecond(now), 1 * kMiB);
}

TEST(BlobPacer, AZeroFloorOrTargetStillGivesAPositiveRate) {
  BlobPacer::Options o = TestOptions();
  o.min_bytes_per_second = 0;
  o.target = microseconds(0);
  Clock::time_point now{};
  BlobPacer pacer(o, now);
  for (int i = 0; i < 1000; ++i) {
    now += milliseconds(1);
    pacer.OnDeltaDelay(now, microseconds(i % 2 == 0 ? 1000 : 9000));
    const double rate = pacer.BytesPerSecond(now);
    ASSERT_GE(rate, 1.0) << "at " << i;  // never 0 (read as "not limited") nor NaN
  }
}

TEST(TokenBucket, WaitsForTheMissingBytesAndHoldsATenthOfASecond) {
  TokenBucket bucket;
  Clock::time_point now{};
  bucket.Refill(now + std::chrono::seconds(10), 1000);
  EXPECT_DOUBLE_EQ(bucket.tokens, 100);  // a tenth of a second's worth, however long it waited
  EXPECT_EQ(bucket.Wait(100, 1000).count(), 0);
  bucket.tokens -= 100;
  // 50 bytes at 1000 B/s: 50 ms.
  EXPECT_NEAR(static_cast<double>(bucket.Wait(50, 1000).count()), 50'000, 2);
  // A chunk larger than the burst waits only for the burst.
  EXPECT_NEAR(static_cast<double>(bucket.Wait(1'000'000, 1000).count()), 100'000, 2);
}

}  // namespace
}  // namespace statesync::replication::detail
