// LargeBuffer: zeroed memory for the big arrays of the session table (the index and the record
// arena), mapped directly and advised to use transparent huge pages. With millions of records
// every access is random; on 4 KiB pages nearly each one also misses the TLB, which costs more
// than the cache miss itself under virtualization.
//
// Internal to sessiontable. Thread-safety: none.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <utility>

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

class LargeBuffer {
 public:
  static constexpr std::size_t kHugePage = 2u << 20;

  LargeBuffer() = default;
  explicit LargeBuffer(std::size_t bytes) {
    if (bytes == 0) return;
    // Over-map by one huge page so that the usable range can start on a huge-page boundary.
    map_bytes_ = bytes + kHugePage;
    void* p =
        ::mmap(nullptr, map_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    map_ = p;
    auto addr = reinterpret_cast<std::uintptr_t>(p);
    addr = (addr + kHugePage - 1) & ~(std::uintptr_t{kHugePage} - 1);
    data_ = reinterpret_cast<void*>(addr);
    if (bytes >= kHugePage) ::madvise(data_, bytes, MADV_HUGEPAGE);  // advice; failure is harmless
  }
  ~LargeBuffer() {
    if (map_ != nullptr) ::munmap(map_, map_bytes_);
  }
  LargeBuffer(LargeBuffer&& o) noexcept { *this = std::move(o); }
  LargeBuffer& operator=(LargeBuffer&& o) noexcept {
    std::swap(map_, o.map_);
    std::swap(map_bytes_, o.map_bytes_);
    std::swap(data_, o.data_);
    return *this;
  }
  LargeBuffer(const LargeBuffer&) = delete;
  LargeBuffer& operator=(const LargeBuffer&) = delete;

  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }

 private:
  void* map_ = nullptr;
  std::size_t map_bytes_ = 0;
  void* data_ = nullptr;
};

}  // namespace statesync::detail
