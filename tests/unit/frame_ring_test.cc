// The store's ring of recent journal frames on its own: it holds the newest contiguous run of
// frames, byte for byte, as the head comes round, and a frame larger than the ring empties it.
#include "frame_ring.h"

#include <gtest/gtest.h>

#include <deque>
#include <random>
#include <string>

namespace statesync::detail {
namespace {

std::string FrameOf(Seq first, std::size_t size) {
  std::string f(size, '\0');
  for (std::size_t k = 0; k < size; ++k) f[k] = static_cast<char>((first * 131 + k * 7) & 0xff);
  return f;
}

std::span<const std::uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

TEST(FrameRing, HoldsTheNewestFramesByteForByteAsTheHeadComesRound) {
  constexpr std::size_t kCapacity = 1 << 20;
  FrameRing ring(kCapacity);
  std::mt19937_64 rng(3);
  std::deque<std::pair<Seq, std::size_t>> appended;  // every frame, oldest first
  Seq next = 1;
  std::size_t oldest_moved_back = 0, previous_oldest = 0;
  for (int step = 0; step < 3'000; ++step) {
    const std::size_t size = 1 + rng() % (rng() % 8 == 0 ? 200'000 : 20'000);
    const std::string frame = FrameOf(next, size);
    ring.Put(next, Bytes(frame));
    appended.emplace_back(next, size);
    next += 1 + rng() % 300;
    ASSERT_FALSE(ring.empty());
    // What is held is a suffix of what was appended: from oldest() on, every frame, intact.
    const Seq oldest = ring.oldest();
    std::size_t held_bytes = 0, held = 0;
    for (auto it = appended.rbegin(); it != appended.rend() && it->first >= oldest; ++it) {
      const std::string_view got = ring.Find(it->first);
      ASSERT_EQ(got, FrameOf(it->first, it->second)) << "frame at seq " << it->first;
      held_bytes += it->second;
      ++held;
    }
    ASSERT_EQ(held, ring.frames());
    ASSERT_LE(held_bytes, kCapacity);
    // Dropped frames are gone; and the ring keeps at least half its size (a frame never wastes
    // more than its own size at the end), less the newest frame's own size.
    if (held < appended.size()) {
      const auto& dropped = appended[appended.size() - held - 1];
      ASSERT_TRUE(ring.Find(dropped.first).empty());
      ASSERT_GT(held_bytes + dropped.second + size, kCapacity / 2);
    }
    if (oldest < previous_oldest) ++oldest_moved_back;  // never: oldest only moves forward
    previous_oldest = oldest;
    while (appended.size() > held + 1) appended.pop_front();
  }
  EXPECT_EQ(oldest_moved_back, 0u);
  EXPECT_TRUE(ring.Find(next).empty());  // never appended
}

TEST(FrameRing, AFrameLargerThanTheRingEmptiesIt) {
  FrameRing ring(1000);
  ring.Put(1, Bytes(FrameOf(1, 400)));
  ring.Put(2, Bytes(FrameOf(2, 400)));
  EXPECT_EQ(ring.frames(), 2u);
  ring.Put(3, Bytes(FrameOf(3, 1001)));
  EXPECT_TRUE(ring.empty());
  EXPECT_TRUE(ring.Find(1).empty());
  ring.Put(4, Bytes(FrameOf(4, 1000)));  // exactly the ring's size: held
  EXPECT_EQ(ring.Find(4), FrameOf(4, 1000));
  ring.Put(5, Bytes(FrameOf(5, 10)));  // wraps: 4 is overwritten
  EXPECT_EQ(ring.oldest(), 5u);
  EXPECT_EQ(ring.Find(5), FrameOf(5, 10));
}

TEST(FrameRing, ARingOfNoBytesHoldsNothing) {
  FrameRing ring(0);
  ring.Put(1, Bytes(FrameOf(1, 10)));
  EXPECT_TRUE(ring.empty());
}

}  // namespace
}  // namespace statesync::detail
