// The resident memory of the test's own process, for tests that bound what the program holds.
#pragma once

#include <malloc.h>
#include <unistd.h>

#include <cstddef>
#include <fstream>

namespace statesync::testing {

// Resident memory after the C library returned the free memory it keeps for reuse: freed
// blocks scattered among live ones stay resident until trimmed, and their amount drifts up
// with the allocation pattern (in one 72-step run here, free-but-resident heap went from 23 to
// 93 MB while the heap in use stayed between 210 and 253 MB). That is not memory the program
// holds, and the bounds tests set are about what the program holds.
inline std::size_t ResidentBytes() {
#if defined(__GLIBC__)
  ::malloc_trim(0);
#endif
  std::ifstream statm("/proc/self/statm");
  std::size_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

}  // namespace statesync::testing
