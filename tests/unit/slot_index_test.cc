// The session table's hash index on its own: lookups, inserts and erasures checked against a
// std::unordered_map while the index grows, above all while entries move to the larger table.
#include "slot_index.h"

#include "statesync/common/prefaulted_pages.h"

#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <unordered_map>
#include <vector>

namespace statesync::detail {
namespace {

struct Model {
  explicit Model(PageSupplier* pages = nullptr) : index(pages) {}
  SlotIndex index;
  std::vector<std::uint64_t> key_of_slot;                    // slot -> key (0 = free)
  std::unordered_map<std::uint64_t, std::uint32_t> slot_of;  // key -> slot
  std::vector<std::uint32_t> free_slots;

  // Keys share their low 32 bits (the index's hash bits) in pairs, so that probes meet an
  // entry of another key with the same hash bits.
  static std::uint64_t HashOf(std::uint64_t key) {
    std::uint64_t z = (key >> 1) + 0x9e3779b97f4a7c15ull;  // splitmix64's finalizer
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (key << 32) | ((z ^ (z >> 31)) & 0xffffffffull);
  }

  std::optional<std::uint32_t> Find(std::uint64_t key) const {
    return index.Find(HashOf(key), [&](std::uint32_t s) { return key_of_slot[s] == key; });
  }
  void Insert(std::uint64_t key) {
    std::uint32_t s;
    if (!free_slots.empty()) {
      s = free_slots.back();
      free_slots.pop_back();
    } else {
      s = static_cast<std::uint32_t>(key_of_slot.size());
      key_of_slot.push_back(0);
    }
    key_of_slot[s] = key;
    slot_of[key] = s;
    index.Insert(HashOf(key), s);
  }
  void Erase(std::uint64_t key) {
    const std::uint32_t s = slot_of.at(key);
    index.Erase(HashOf(key), s);
    slot_of.erase(key);
    key_of_slot[s] = 0;
    free_slots.push_back(s);
  }
  void CheckAll() const {
    ASSERT_EQ(index.size(), slot_of.size());
    for (const auto& [key, slot] : slot_of) {
      auto found = Find(key);
      ASSERT_TRUE(found.has_value()) << "key " << key;
      ASSERT_EQ(*found, slot) << "key " << key;
    }
  }
};

TEST(SlotIndex, FindsEveryKeyWhileGrowingUnderInsertsAndErasures) {
  Model m;
  std::mt19937_64 rng(7);
  std::uint64_t next_key = 1;
  std::size_t steps_while_growing = 0, erased_while_growing = 0, misses_checked = 0;
  for (int step = 0; step < 400'000; ++step) {
    const auto r = rng() % 10;
    if (r < 7 || m.slot_of.empty()) {
      m.Insert(next_key++);
    } else if (r < 9) {
      // Erase a key inserted some time ago (likely still in the old table while growing).
      const std::uint64_t key = 1 + rng() % (next_key - 1);
      if (m.slot_of.count(key)) {
        if (m.index.growing()) ++erased_while_growing;
        m.Erase(key);
      }
    } else {
      const std::uint64_t key = 1 + rng() % (next_key + 1000);
      auto found = m.Find(key);
      auto it = m.slot_of.find(key);
      if (it == m.slot_of.end()) {
        ASSERT_FALSE(found.has_value()) << "key " << key << " at step " << step;
        ++misses_checked;
      } else {
        ASSERT_TRUE(found.has_value()) << "key " << key << " at step " << step;
        ASSERT_EQ(*found, it->second);
      }
    }
    if (m.index.growing()) ++steps_while_growing;
    if (step % 50'000 == 0) m.CheckAll();
  }
  m.CheckAll();
  // The test meant something: growth happened over many steps, with erasures in the middle.
  EXPECT_GT(steps_while_growing, 50'000u);
  EXPECT_GT(erased_while_growing, 5'000u);
  EXPECT_GT(misses_checked, 1'000u);
  EXPECT_GE(m.index.capacity() * 7, m.index.size() * 10);
}

TEST(SlotIndex, EachInsertMovesAFewEntriesAndGrowingEnds) {
  Model m;
  for (std::uint64_t k = 1; m.index.capacity() == 1024; ++k) m.Insert(k);
  ASSERT_TRUE(m.index.growing());
  const std::size_t capacity = m.index.capacity();
  // Growing ends after about half the old capacity of inserts, well before the next growth.
  std::uint64_t k = m.slot_of.size() + 1, inserts = 0;
  while (m.index.growing()) {
    m.Insert(k++);
    ++inserts;
  }
  EXPECT_LE(inserts, 1024u / 2 + 1);
  EXPECT_EQ(m.index.capacity(), capacity);
  m.CheckAll();
}

TEST(SlotIndex, TheLargerTableIsWrittenAheadOfGrowing) {
  Model m;
  for (std::uint64_t k = 1; m.index.capacity() < (1u << 16); ++k) m.Insert(k);
  const std::size_t capacity = m.index.capacity();
  std::uint64_t k = m.slot_of.size() + 1;
  while (m.index.size() * 2 < capacity) m.Insert(k++);
  // From half full, a page at a time: all of the next table (8 bytes per entry, twice the
  // entries) before the index reaches 0.7 and grows.
  for (int i = 0; i < 100; ++i) m.Insert(k++);
  EXPECT_GT(m.index.prefaulted_bytes(), 0u);
  EXPECT_LT(m.index.prefaulted_bytes(), capacity * 16);
  while ((m.index.size() + 1) * 10 <= capacity * 7) m.Insert(k++);
  EXPECT_EQ(m.index.prefaulted_bytes(), capacity * 16);
  EXPECT_EQ(m.index.capacity(), capacity);
  m.Insert(k++);
  EXPECT_EQ(m.index.capacity(), capacity * 2);
  EXPECT_EQ(m.index.prefaulted_bytes(), 0u);
  m.CheckAll();
  while (m.index.growing()) m.Insert(k++);
  m.CheckAll();
  // Past half of the new capacity, then back below 0.4: the next table's memory goes back.
  while (m.index.size() * 2 < capacity * 2 + 2048) m.Insert(k++);
  EXPECT_GT(m.index.prefaulted_bytes(), 0u);
  while (m.index.size() * 5 >= capacity * 2 * 2) m.Erase(m.slot_of.begin()->first);
  EXPECT_EQ(m.index.prefaulted_bytes(), 0u);
  m.CheckAll();
}

TEST(SlotIndex, ReserveGrowsAtOnce) {
  Model m;
  for (std::uint64_t k = 1; k <= 1000; ++k) m.Insert(k);
  m.index.Reserve(100'000);
  EXPECT_FALSE(m.index.growing());
  EXPECT_GE(m.index.capacity() * 7, 100'000u * 10);
  m.CheckAll();
  for (std::uint64_t k = 1001; k <= 100'000; ++k) m.Insert(k);
  EXPECT_FALSE(m.index.growing());
  m.CheckAll();
}

// With a supplier, the next table is announced from 0.45 full and taken ready at 0.5; the
// supplier holds nothing for a table that skipped that size (Reserve), shrank back below 0.4 or
// was destroyed.
struct AnnouncedIndex {
  PrefaultedPages pages;
  std::unique_ptr<Model> m = std::make_unique<Model>(&pages);
  std::uint64_t next_key = 1;
  std::size_t capacity = 0;

  // Fills the index to just past the announcement of its next table (a table of 2 MiB or more)
  // and waits until the supplier has written it.
  AnnouncedIndex() {
    while (m->index.capacity() < (1u << 17)) m->Insert(next_key++);
    capacity = m->index.capacity();
    while (m->index.size() * 20 < capacity * 9 + 20) m->Insert(next_key++);
    pages.WaitPrepared();
  }
  std::size_t next_bytes() const { return capacity * 2 * sizeof(std::uint64_t); }
};

TEST(SlotIndex, TakesItsNextTableReadyFromTheSupplier) {
  AnnouncedIndex a;
  EXPECT_EQ(a.pages.stats().ready_bytes, a.next_bytes());
  const auto ready_before = a.pages.stats().ready_takes;
  while (a.m->index.size() * 2 < a.capacity + 2) a.m->Insert(a.next_key++);
  PrefaultedPages::Stats s = a.pages.stats();
  EXPECT_EQ(s.ready_takes, ready_before + 1);
  EXPECT_EQ(s.ready_bytes, 0u);
  EXPECT_EQ(s.withdrawn, 0u);
  while (a.m->index.capacity() == a.capacity) a.m->Insert(a.next_key++);
  while (a.m->index.growing()) a.m->Insert(a.next_key++);
  a.m->CheckAll();
}

TEST(SlotIndex, WithdrawsAnAnnouncementAReserveSkips) {
  AnnouncedIndex a;
  a.m->index.Reserve(a.capacity * 2);  // straight to four times the capacity
  EXPECT_EQ(a.m->index.capacity(), a.capacity * 4);
  const PrefaultedPages::Stats s = a.pages.stats();
  EXPECT_EQ(s.ready_bytes, 0u) << "the table twice as large will not be taken";
  EXPECT_EQ(s.withdrawn, 1u);
  a.m->CheckAll();
}

TEST(SlotIndex, WithdrawsItsAnnouncementWhenItShrinks) {
  AnnouncedIndex a;
  while (a.m->index.size() * 5 >= a.capacity * 2) a.m->Erase(a.m->slot_of.begin()->first);
  EXPECT_EQ(a.pages.stats().ready_bytes, 0u);
  // Filling again announces again.
  while (a.m->index.size() * 20 < a.capacity * 9 + 20) a.m->Insert(a.next_key++);
  a.pages.WaitPrepared();
  EXPECT_EQ(a.pages.stats().ready_bytes, a.next_bytes());
  a.m->CheckAll();
}

TEST(SlotIndex, WithdrawsItsAnnouncementWhenDestroyed) {
  AnnouncedIndex a;
  a.m.reset();
  EXPECT_EQ(a.pages.stats().ready_bytes, 0u);
  EXPECT_EQ(a.pages.stats().withdrawn, 1u);
}

}  // namespace
}  // namespace statesync::detail
