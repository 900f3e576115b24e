// The control socket: a Unix stream socket (mode 0600) where statesyncctl asks a node
// something. One request per connection: a JSON object on one line ({"command":"status", ...});
// the answer is one JSON object on one line, or for a streaming request (`events --follow`) a
// line per event until either side closes.
//
// ControlServer accepts on its own thread and serves each connection on a thread of its own (at
// most kMaxConnections at once; more are answered with an error and closed), so a slow or
// following client never holds up another. ControlRequest is the client side.
//
// Thread-safety: the handler runs on the connection threads, several at once; it must be safe
// for that. ControlRequest and ControlStream are plain functions.
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "statesync/common/status.h"

namespace statesync::node {

// One client connection as the handler sees it.
class ControlConnection {
 public:
  virtual ~ControlConnection() = default;
  // Writes one line (a newline is added). False once the client has gone or the server stops.
  virtual bool Send(const std::string& line) = 0;
  // True once the client has closed its end or the server is stopping.
  virtual bool Closed() = 0;
};

class ControlServer {
 public:
  static constexpr int kMaxConnections = 32;
  static constexpr std::size_t kMaxRequestBytes = 64 << 10;
  // `request` is the line the client sent (not parsed: the handler parses and answers errors).
  using Handler = std::function<void(const std::string& request, ControlConnection& connection)>;

  // Binds `path` (a stale socket file there is replaced: the caller holds the data directory's
  // lock, so no live node uses it) with mode 0600, and starts accepting.
  static Result<std::unique_ptr<ControlServer>> Start(const std::filesystem::path& path,
                                                      Handler handler);
  ~ControlServer();  // stops accepting, closes every connection, removes the socket file
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

 private:
  class Impl;
  explicit ControlServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Sends `request` (one JSON object) to the node at `socket` and returns its one-line answer.
// Unavailable, naming the socket, when no node listens there.
Result<std::string> ControlRequest(const std::filesystem::path& socket, const std::string& request,
                                   std::chrono::milliseconds timeout = std::chrono::seconds(10));
// Sends `request` and hands each answer line to `line` until the node closes or `line` returns
// false.
Status ControlStream(const std::filesystem::path& socket, const std::string& request,
                     const std::function<bool(const std::string&)>& line);

}  // namespace statesync::node
