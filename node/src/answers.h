// The JSON answers the control and ingest sockets share: `{"ok":false,"error":"..."}`, and the
// ingest's "retry later" (`"busy":true`).
//
// Thread-safety: pure functions.
#pragma once

#include <boost/json.hpp>
#include <string>
#include <string_view>

namespace statesync::node {

inline std::string ErrorAnswer(std::string_view why) {
  boost::json::object o;
  o["ok"] = false;
  o["error"] = why;
  return boost::json::serialize(o);
}

// The node cannot take this now (a queue is full) and will soon: the client sends it again.
inline std::string BusyAnswer(std::string_view why) {
  boost::json::object o;
  o["ok"] = false;
  o["busy"] = true;
  o["error"] = why;
  return boost::json::serialize(o);
}

}  // namespace statesync::node
