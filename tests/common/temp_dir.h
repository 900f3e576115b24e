// A temporary directory for a test, removed with everything in it when it goes out of scope,
// unless STATESYNC_KEEP_TEST_DIRS is set (to read the daemons' logs after a failure).
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <string>

namespace statesync::testing {

class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "statesync-test") {
    std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    if (::getenv("STATESYNC_KEEP_TEST_DIRS") != nullptr) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace statesync::testing
