// The commands that ask one node something through its control socket.
#include <boost/json.hpp>
#include <boost/program_options.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "ctl.h"
#include "ctl_util.h"
#include "statesync/node/control.h"

namespace statesync::ctl {

namespace json = boost::json;
namespace po = boost::program_options;

namespace {

// Sends the request; on success returns the parsed answer, else prints why and returns null.
std::optional<json::object> Ask(const Globals& g, const json::object& request) {
  auto answer = node::ControlRequest(g.socket, json::serialize(request));
  if (!answer.ok()) {
    std::cerr << "statesyncctl: " << answer.status().message() << "\n";
    return std::nullopt;
  }
  json::value v;
  try {
    v = json::parse(answer.value());
  } catch (const std::exception& e) {
    std::cerr << "statesyncctl: the node's answer is not JSON: " << e.what() << "\n";
    return std::nullopt;
  }
  if (!v.is_object()) return std::nullopt;
  json::object o = v.as_object();
  if (const auto* ok = o.if_contains("ok"); ok != nullptr && ok->is_bool() && !ok->as_bool()) {
    if (g.json) {
      std::cout << json::serialize(o) << "\n";
    } else {
      const auto* e = o.if_contains("error");
      std::cerr << "statesyncctl: "
                << (e != nullptr && e->is_string() ? std::string(e->as_string()) : "refused")
                << "\n";
    }
    return std::nullopt;
  }
  return o;
}

std::string Str(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr) return "";
  if (v->is_string()) return std::string(v->as_string());
  return json::serialize(*v);
}

double Num(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr) return 0;
  if (v->is_double()) return v->as_double();
  if (v->is_int64()) return static_cast<double>(v->as_int64());
  if (v->is_uint64()) return static_cast<double>(v->as_uint64());
  return 0;
}

std::string Upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

void PrintStatus(const json::object& s, std::ostream& out) {
  out << "node " << Str(s, "node_id") << " (configured " << Str(s, "configured_role") << ")  "
      << Upper(Str(s, "effective_role")) << "  epoch " << Str(s, "epoch")
      << (s.at("ready").as_bool() ? "  ready" : "") << "\n";
  out << "  applied seq " << Str(s, "applied_seq") << "   sessions " << Str(s, "sessions")
      << "   primary " << (Str(s, "primary").empty() ? "(none)" : Str(s, "primary")) << "\n";
  const json::object& sync = s.at("sync").as_object();
  const std::string state = Str(sync, "state");
  out << "  sync " << state;
  if (state == "catching_up" || state == "snapshot") {
    char line[160];
    std::snprintf(line, sizeof line, " %s %3.0f%%  %.0f records/s  eta %.0f s",
                  ProgressBar(Num(sync, "progress"), 30).c_str(), 100 * Num(sync, "progress"),
                  Num(sync, "records_per_second"), Num(sync, "eta_s"));
    out << line;
  }
  if (sync.if_contains("following")) {
    out << "  following " << Str(sync, "following") << ", lag " << Str(sync, "lag_records")
        << " records";
  }
  out << "\n  peers:\n";
  for (const auto& pv : s.at("peers").as_array()) {
    const json::object& p = pv.as_object();
    std::string links;
    for (const auto& l : p.at("links_up").as_array()) links += std::string(l.as_string()) + ":up ";
    for (const auto& l : p.at("links_down").as_array()) {
      links += std::string(l.as_string()) + ":DOWN ";
    }
    char line[256];
    std::snprintf(line, sizeof line, "    %-10s %-9s %-10s epoch %-6s links %s",
                  Str(p, "id").c_str(), Str(p, "configured_role").c_str(),
                  Upper(Str(p, "state")).c_str(),
                  p.if_contains("epoch") ? Str(p, "epoch").c_str() : "-", links.c_str());
    out << line;
    if (p.if_contains("lag_records")) {
      out << " lag " << Str(p, "lag_records") << " records";
      if (p.if_contains("lag_ms")) out << " / " << Str(p, "lag_ms") << " ms";
    }
    if (p.if_contains("monitors_up")) out << " monitors up " << Str(p, "monitors_up");
    out << "\n";
  }
  if (const auto* m = s.if_contains("monitors"); m != nullptr && !m->as_array().empty()) {
    out << "  monitored links:";
    for (const auto& lv : m->as_array()) {
      const json::object& l = lv.as_object();
      out << " " << Str(l, "name") << (l.at("up").as_bool() ? ":up" : ":DOWN");
    }
    out << "\n";
  }
  if (const auto* r = s.if_contains("remote_checks"); r != nullptr) {
    const json::object& remote = r->as_object();
    const std::string target = Str(remote, "target");
    out << "  remote checks" << (target.empty() ? " (idle)" : " of " + target) << ":\n";
    for (const auto& cv : remote.at("checks").as_array()) {
      const json::object& c = cv.as_object();
      out << "    " << Str(c, "name") << " " << Str(c, "state") << "  " << Str(c, "detail") << "\n";
    }
  }
}

int ShowStatus(const Globals& g, const Args& args) {
  po::options_description options("statesyncctl status: the node's roles, epoch, peers and lag");
  options.add_options()("help,h", "this text");
  po::variables_map vm;
  if (int r = ParseOptions("status", options, args, vm); r >= 0) return r;
  auto s = Ask(g, {{"command", "status"}});
  if (!s) return 1;
  if (g.json) {
    std::cout << json::serialize(*s) << "\n";
  } else {
    PrintStatus(*s, std::cout);
  }
  return 0;
}

int Digest(const Globals& g, const Args& args) {
  po::options_description options(
      "statesyncctl digest: a digest of every record; equal on nodes holding the same data");
  options.add_options()("help,h", "this text");
  po::variables_map vm;
  if (int r = ParseOptions("digest", options, args, vm); r >= 0) return r;
  auto d = Ask(g, {{"command", "digest"}});
  if (!d) return 1;
  if (g.json) {
    std::cout << json::serialize(*d) << "\n";
  } else {
    std::cout << "digest " << Str(*d, "digest") << "  records " << Str(*d, "records")
              << "  applied seq " << Str(*d, "applied_seq") << "\n";
  }
  return 0;
}

int Sessions(const Globals& g, const Args& args) {
  po::options_description options(
      "statesyncctl sessions count|list|get KEY|check --keys FILE [--table T] [--limit N]\n"
      "  count: records per table; list: keys (text, or 0x-hex when binary); get: one record;\n"
      "  check: every record FILE lists (as load --acked-keys writes it) is here");
  std::string action;
  std::string key;
  std::string table = "fw_sessions";
  int limit = 100;
  std::string keys_file;
  options.add_options()("help,h", "this text")("keys", po::value(&keys_file)->value_name("FILE"),
                                               "for check: the keys (TABLE HEXKEY a line)")(
      "action", po::value(&action)->value_name("ACTION"), "count, list or get")(
      "key", po::value(&key)->value_name("KEY"), "the key for get")(
      "table", po::value(&table)->value_name("T"),
      "fw_sessions (default), calls, cdrs, blobs, user_N")(
      "limit", po::value(&limit)->value_name("N"), "most keys list shows (default 100)");
  po::positional_options_description positional;
  positional.add("action", 1).add("key", 1);
  po::variables_map vm;
  if (int r = ParseOptions("sessions", options, args, vm, &positional); r >= 0) return r;
  if (action.empty()) action = "count";
  if (action != "count" && action != "list" && action != "get" && action != "check") {
    std::cerr << "statesyncctl sessions: unknown action '" << action
              << "' (count, list, get, check)\n";
    return 2;
  }
  if (action == "check" && keys_file.empty()) {
    std::cerr << "statesyncctl sessions check: give --keys FILE\n";
    return 2;
  }
  if (action == "get" && key.empty()) {
    std::cerr << "statesyncctl sessions get: give a KEY\n";
    return 2;
  }
  json::object request{{"command", "sessions"}, {"action", action}, {"table", table}};
  if (action == "list") request["limit"] = limit;
  if (action == "get") request["key"] = key;
  // The node reads the file itself: make the path mean the same to it.
  if (action == "check") request["file"] = std::filesystem::absolute(keys_file).string();
  auto a = Ask(g, request);
  if (!a) return 1;
  if (g.json) {
    std::cout << json::serialize(*a) << "\n";
  } else if (action == "count") {
    std::cout << Str(*a, "table") << ": " << Str(*a, "count")
              << " (all tables: " << Str(*a, "total") << ")\n";
  } else if (action == "check") {
    std::cout << "checked " << Str(*a, "checked") << " records: " << Str(*a, "missing")
              << " missing\n";
    for (const auto& k : a->at("first_missing").as_array()) {
      std::cout << "  missing: " << std::string(k.as_string()) << "\n";
    }
    return a->at("missing").as_int64() == 0 ? 0 : 1;
  } else if (action == "list") {
    for (const auto& r : a->at("records").as_array()) {
      std::cout << Str(r.as_object(), "key") << "  " << Str(r.as_object(), "value_bytes")
                << " bytes\n";
    }
  } else {
    std::cout << Str(*a, "key") << " (" << Str(*a, "value_bytes") << " bytes): " << Str(*a, "value")
              << "\n";
  }
  return 0;
}

int Events(const Globals& g, const Args& args) {
  po::options_description options(
      "statesyncctl events [--follow] [--last N]: the HA event log (role changes, alerts, hooks)");
  bool follow = false;
  int last = 50;
  options.add_options()("help,h", "this text")("follow,f", po::bool_switch(&follow),
                                               "keep printing new events")(
      "last", po::value(&last)->value_name("N"), "the newest N events first (default 50)");
  po::variables_map vm;
  if (int r = ParseOptions("events", options, args, vm); r >= 0) return r;
  json::object request{{"command", "events"}, {"follow", follow}, {"last", last}};
  const Status st =
      node::ControlStream(g.socket, json::serialize(request), [&](const std::string& line) {
        if (g.json) {
          std::cout << line << std::endl;
          return true;
        }
        try {
          const json::object e = json::parse(line).as_object();
          if (e.if_contains("ok") && !e.at("ok").as_bool()) {
            std::cerr << "statesyncctl: " << Str(e, "error") << "\n";
            return false;
          }
          std::cout << Str(e, "time") << "  " << Str(e, "node") << "  " << Str(e, "type") << "  "
                    << Str(e, "text") << std::endl;
        } catch (const std::exception&) {
          std::cout << line << std::endl;
        }
        return true;
      });
  if (!st.ok()) {
    std::cerr << "statesyncctl: " << st.message() << "\n";
    return 1;
  }
  return 0;
}

int RoleCommand(const Globals& g, const std::string& command, const Args& args) {
  std::string help;
  if (command == "set-role") {
    help =
        "statesyncctl set-role primary|secondary|off: change this node's role (a primary hands "
        "over to the best secondary; off stops taking part until the next command)";
  } else if (command == "takeover") {
    help = "statesyncctl takeover: this secondary asks the primary to hand the role over";
  } else {
    help =
        "statesyncctl restore-role: return to the configured role, coordinated with the "
        "current primary";
  }
  po::options_description options(help);
  std::string role;
  options.add_options()("help,h", "this text");
  if (command == "set-role") {
    options.add_options()("role", po::value(&role)->value_name("ROLE"),
                          "primary, secondary or off");
  }
  po::positional_options_description positional;
  if (command == "set-role") positional.add("role", 1);
  po::variables_map vm;
  if (int r = ParseOptions(command, options, args, vm, &positional); r >= 0) return r;
  if (command == "set-role" && role != "primary" && role != "secondary" && role != "off") {
    std::cerr << "statesyncctl set-role: the role is primary, secondary or off\n";
    return 2;
  }
  json::object request{{"command", command}};
  if (!role.empty()) request["role"] = role;
  auto a = Ask(g, request);
  if (!a) return 1;
  if (g.json) {
    std::cout << json::serialize(*a) << "\n";
  } else {
    std::cout << command << ": " << Upper(Str(*a, "effective_role_before")) << " -> "
              << Upper(Str(*a, "effective_role")) << "\n";
    for (const auto& alert : a->at("alerts").as_array()) {
      std::cout << "  " << std::string(alert.as_string()) << "\n";
    }
  }
  return 0;
}

int Holdoff(const Globals& g, const Args& args) {
  po::options_description options(
      "statesyncctl holdoff [--seconds S]: a planned restart of this node: the peers are told to "
      "hold off for S seconds (0: the cluster's holdoff_max), then the node stops (as SIGTERM)");
  int seconds = 0;
  options.add_options()("help,h", "this text")("seconds", po::value(&seconds)->value_name("S"),
                                               "how long the peers hold off");
  po::variables_map vm;
  if (int r = ParseOptions("holdoff", options, args, vm); r >= 0) return r;
  auto a = Ask(g, {{"command", "holdoff"}, {"seconds", seconds}});
  if (!a) return 1;
  std::cout << (g.json ? json::serialize(*a) : Str(*a, "text")) << "\n";
  return 0;
}

}  // namespace statesync::ctl
