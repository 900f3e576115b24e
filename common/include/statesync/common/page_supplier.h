// PageSupplier: where the session table takes its large blocks of memory from (record chunks,
// index tables). The first write to memory this process has not used costs 4-6 ms per 2 MiB on
// this virtualized machine (bench/first_touch_bench, docs/BENCHMARKS.md). On the table owner's
// thread that stopped the stream every time the record arena grew into a new huge page: every
// 60 ms at 360k sessions/s, the largest regular part of the lag's tail. A supplier can hand out
// blocks whose pages another thread has already written (PrefaultedPages) while the table stays
// pure; a table without one maps its memory itself.
//
// The protocol: a user announces a block it will take (Expect), then takes it (Take) or, when
// its plans change (a table reserved at once, shrank, or is destroyed), withdraws the
// announcement (Cancel). A Take answers the oldest announcement of its size, whether or not a
// block was ready for it, so that an announcement is never left behind. Blocks of one size are
// interchangeable between users.
//
// Thread-safety: an implementation's members may be called from any thread.
#pragma once

#include <cstddef>

#include "statesync/large_buffer.h"

namespace statesync {

class PageSupplier {
 public:
  virtual ~PageSupplier() = default;
  // `bytes` of zeroed memory, the caller's from now on.
  virtual detail::LargeBuffer Take(std::size_t bytes) = 0;
  // A Take of `bytes` is likely soon: the supplier may prepare a block for it.
  virtual void Expect(std::size_t bytes) = 0;
  // An announced Take of `bytes` will not come: what was prepared for it is given back.
  virtual void Cancel(std::size_t bytes) = 0;
};

}  // namespace statesync
