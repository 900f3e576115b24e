// PrefaultedPages: a PageSupplier with a thread of its own (ss-prefault, in the idle scheduling
// class) that maps and writes the blocks announced by Expect ahead of the Take that claims them,
// so that the taking thread finds every page present. A Take of a size with no block ready maps
// fresh memory, as the table would itself, and withdraws the announcement it answers (a queued
// one is dropped, one being written is unmapped when done): a supplier that falls behind costs
// no more than having none, and holds nothing nobody will take.
//
// Written by touching each page, not with madvise(MADV_POPULATE_WRITE): populating holds the
// process's mmap lock for the whole range, and every mmap/munmap of the other threads (malloc's
// included) waited behind it, up to 27.5 ms (first_touch_bench). A write fault takes only the
// lock of its own mapping.
//
// Thread-safety: every member from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "statesync/common/page_supplier.h"

namespace statesync {

class PrefaultedPages final : public PageSupplier {
 public:
  // Blocks announced and not yet taken or cancelled (queued, being written or ready) hold at most
  // `max_ready_bytes`: an Expect that would pass it is ignored (counted). A Cancel or Take of a
  // size whose Expect was ignored may withdraw another user's announcement of that size: the
  // cost is a Take served cold, never memory held.
  explicit PrefaultedPages(std::size_t max_ready_bytes = std::size_t{256} << 20);
  ~PrefaultedPages() override;  // stops the thread; blocks nobody took are unmapped
  PrefaultedPages(const PrefaultedPages&) = delete;
  PrefaultedPages& operator=(const PrefaultedPages&) = delete;

  detail::LargeBuffer Take(std::size_t bytes) override;
  void Expect(std::size_t bytes) override;
  void Cancel(std::size_t bytes) override;

  struct Stats {
    std::uint64_t ready_takes = 0;      // served with a prepared block
    std::uint64_t cold_takes = 0;       // mapped fresh: nothing of that size was ready
    std::uint64_t prepared_bytes = 0;   // written ahead so far
    std::uint64_t ignored_expects = 0;  // over max_ready_bytes
    std::uint64_t withdrawn = 0;        // announcements cancelled or answered by a cold Take
    std::uint64_t failed_prepares = 0;  // no memory to map: that Take will map it, or fail there
    std::uint64_t ready_bytes = 0;      // prepared and waiting for a Take now
  };
  Stats stats() const;
  // Waits until every block announced so far is prepared (benchmarks settle with it).
  void WaitPrepared() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace statesync
