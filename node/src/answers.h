// The JSON answers the control and ingest sockets share: `{"ok":false,"error":"..."}`.
//
// Thread-safety: a pure function.
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

}  // namespace statesync::node
