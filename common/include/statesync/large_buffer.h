// LargeBuffer: zeroed memory mapped directly and advised to use transparent huge pages, for big
// arrays: the session table's index and record arena, the store's ring of recent journal frames.
// With millions of records every access is random; on 4 KiB pages nearly each one also misses
// the TLB, which costs more than the cache miss itself under virtualization. And memory first
// touched a huge page at a time costs one page fault per 2 MiB instead of 512.
//
// Internal to the statesync libraries (not part of any public API). Thread-safety: none.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <utility>

namespace statesync::detail {

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
