// Touch: a plain load that the session table's batch loops use instead of a prefetch.
//
// Internal to sessiontable. Thread-safety: none.
#pragma once

#include <cstdint>

#include "statesync/large_buffer.h"

namespace statesync::detail {

// Reads one byte at `p`, so that its cache line is loaded. The batch upsert loads the records
// of a group this way, from a short loop whose loads the CPU overlaps by itself: on this
// machine (a virtualized AMD EPYC) that measured 9M random updates/s at 1M sessions where
// __builtin_prefetch of the same lines gave 5M/s, as if most prefetches were dropped. For the
// index entries (the loop before) and in Drain, prefetches measured better; see
// docs/BENCHMARKS.md.
inline void Touch(const void* p) {
  const volatile std::uint8_t* b = static_cast<const std::uint8_t*>(p);
  (void)*b;
}

}  // namespace statesync::detail
