// What the first touch of memory costs on this machine, and what mmap waits for meanwhile.
// Prints one JSON document.
//
//   fresh      maps N MiB (advised to use huge pages), writes one byte per 4 KiB page and times
//              each 2 MiB: the page faults, the kernel's zeroing and, in a virtual machine that
//              backs its guest's memory lazily, the host's own fault for each page it has not
//              given the guest yet (or took back: free page reporting);
//   reused     the same after unmapping and mapping again, from pages the guest just freed;
//   mmap_wait  the worst time a 64 KiB mmap+munmap, every 100 us on another thread, took while a
//              thread faulted fresh memory in by writing to it, and while one populated it with
//              madvise(MADV_POPULATE_WRITE), which holds the process's mmap lock throughout.
//
//   first_touch_bench [MiB]   (default 1024)
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "statesync/large_buffer.h"

namespace {

using Clock = std::chrono::steady_clock;
using statesync::detail::LargeBuffer;
constexpr std::size_t kHuge = LargeBuffer::kHugePage;
constexpr std::size_t kPage = 4096;
#ifndef MADV_POPULATE_WRITE
constexpr int MADV_POPULATE_WRITE = 23;  // Linux 5.14
#endif

double Ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

// A write fault on each 4 KiB page of the 2 MiB at `at`.
void TouchHugePage(char* at) {
  for (std::size_t o = 0; o < kHuge; o += kPage) static_cast<volatile char*>(at)[o] = 1;
}

struct Touch {
  double mb_per_s = 0, p50_ms = 0, p99_ms = 0, max_ms = 0;
};

Touch TouchAll(char* p, std::size_t bytes) {
  std::vector<double> each;
  const auto t0 = Clock::now();
  for (std::size_t at = 0; at < bytes; at += kHuge) {
    const auto a = Clock::now();
    TouchHugePage(p + at);
    each.push_back(Ms(Clock::now() - a));
  }
  const double total_s = Ms(Clock::now() - t0) / 1e3;
  std::sort(each.begin(), each.end());
  return {static_cast<double>(bytes) / 1e6 / total_s, each[each.size() / 2],
          each[each.size() * 99 / 100], each.back()};
}

// The worst mmap+munmap time on another thread while `fault` runs over fresh memory, which
// stays in `held` until the process ends, so that the phases after this one touch other pages.
template <typename Fault>
double WorstMmapWhile(std::size_t bytes, std::vector<LargeBuffer>& held, Fault fault) {
  std::atomic<bool> done{false};
  double worst = 0;
  std::thread other([&] {
    while (!done) {
      const auto a = Clock::now();
      void* q =
          ::mmap(nullptr, 64 << 10, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (q != MAP_FAILED) ::munmap(q, 64 << 10);
      worst = std::max(worst, Ms(Clock::now() - a));
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  });
  char* p = held.emplace_back(bytes).as<char>();
  for (std::size_t at = 0; at < bytes; at += kHuge) fault(p + at);
  done = true;
  other.join();
  return worst;
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t mib = argc > 1 ? std::stoul(argv[1]) : 1024;
  const std::size_t bytes = mib << 20;
  // Each phase holds what the ones before mapped, so that the next one cannot reuse those pages.
  auto first = LargeBuffer(bytes);
  const Touch fresh = TouchAll(first.as<char>(), bytes);
  const std::size_t probe = std::min<std::size_t>(bytes, 256u << 20);
  std::vector<LargeBuffer> held;
  const double by_writes = WorstMmapWhile(probe, held, TouchHugePage);
  const double by_populate =
      WorstMmapWhile(probe, held, [](char* at) { ::madvise(at, kHuge, MADV_POPULATE_WRITE); });
  first = LargeBuffer();  // given back: the next mapping reuses its pages
  const LargeBuffer again(bytes);
  const Touch reused = TouchAll(again.as<char>(), bytes);
  auto obj = [](const Touch& t) {
    char b[200];
    std::snprintf(b, sizeof b,
                  R"({"mb_per_s": %.0f, "per_2mib_p50_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f})",
                  t.mb_per_s, t.p50_ms, t.p99_ms, t.max_ms);
    return std::string(b);
  };
  std::printf(
      "{\n  \"mib\": %zu,\n  \"fresh\": %s,\n  \"reused\": %s,\n"
      "  \"mmap_wait_worst_ms\": {\"while_writing\": %.3f, \"while_populating\": %.3f}\n}\n",
      mib, obj(fresh).c_str(), obj(reused).c_str(), by_writes, by_populate);
}
