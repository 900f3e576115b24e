#include "statesync/node/config.h"

#include <xxhash.h>

#include <toml++/toml.h>
#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "statesync/replication/io_scheduling.h"

namespace statesync::node {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// Every problem found, as "source:LINE: [section] key: reason", so that one run of
// --check-config shows them all.
class Problems {
 public:
  explicit Problems(std::string_view source) : source_(source) {}
  void Add(const toml::source_region& where, std::string_view section, std::string_view key,
           const std::string& why) {
    std::string line = source_;
    if (where.begin.line > 0) line += ":" + std::to_string(where.begin.line);
    line += ": ";
    if (!section.empty()) line += "[" + std::string(section) + "] ";
    if (!key.empty()) line += std::string(key) + ": ";
    lines_.push_back(line + why);
  }
  void Add(std::string_view section, std::string_view key, const std::string& why) {
    Add(toml::source_region{}, section, key, why);
  }
  bool empty() const { return lines_.empty(); }
  std::string Text() const {
    std::string out;
    for (const std::string& l : lines_) out += (out.empty() ? "" : "\n") + l;
    return out;
  }

 private:
  std::string source_;
  std::vector<std::string> lines_;
};

// The keys of one table: each read once, checked for type and range; Finish() reports the keys
// nobody read (a typo must not silently leave a default in place).
class Section {
 public:
  Section(const toml::table* table, std::string name, Problems* problems)
      : table_(table), name_(std::move(name)), problems_(problems) {}

  void String(std::string_view key, std::string* out) {
    if (const toml::node* n = Find(key)) {
      if (auto v = n->value<std::string>()) {
        *out = *v;
      } else {
        Wrong(*n, key, "a string");
      }
    }
  }
  void Bool(std::string_view key, bool* out) {
    if (const toml::node* n = Find(key)) {
      // is_boolean first: value<bool>() also converts an integer.
      if (n->is_boolean()) {
        *out = *n->value<bool>();
      } else {
        Wrong(*n, key, "true or false");
      }
    }
  }
  template <typename Int>
  void Integer(std::string_view key, std::int64_t lowest, std::int64_t highest, Int* out) {
    if (const toml::node* n = Find(key)) {
      const auto v = n->is_integer() ? n->value<std::int64_t>() : std::nullopt;
      if (!v) {
        Wrong(*n, key, "an integer");
      } else if (*v < lowest || *v > highest) {
        problems_->Add(n->source(), name_, key,
                       std::to_string(*v) + " is out of range: it must lie between " +
                           std::to_string(lowest) + " and " + std::to_string(highest));
      } else {
        *out = static_cast<Int>(*v);
      }
    }
  }
  template <typename Duration>
  void Time(std::string_view key, std::int64_t lowest, std::int64_t highest, Duration* out) {
    std::int64_t count = out->count();
    Integer(key, lowest, highest, &count);
    *out = Duration(count);
  }
  void Strings(std::string_view key, std::vector<std::string>* out) {
    const toml::node* n = Find(key);
    if (n == nullptr) return;
    const toml::array* a = n->as_array();
    std::vector<std::string> values;
    if (a != nullptr) {
      for (const toml::node& e : *a) {
        auto v = e.value<std::string>();
        if (!v) {
          a = nullptr;
          break;
        }
        values.push_back(*v);
      }
    }
    if (a == nullptr) {
      Wrong(*n, key, "an array of strings");
      return;
    }
    *out = std::move(values);
  }
  // A word from a fixed set, turned into a value by `parse`. Says whether the key was there and
  // whether its value was taken (a wrong one is reported).
  enum class Read : std::uint8_t { kAbsent, kWrong, kTaken };
  template <typename T, typename Parse>
  Read Word(std::string_view key, Parse parse, T* out) {
    const toml::node* n = Find(key);
    if (n == nullptr) return Read::kAbsent;
    auto v = n->value<std::string>();
    if (!v) {
      Wrong(*n, key, "a string");
      return Read::kWrong;
    }
    Result<T> parsed = parse(*v);
    if (!parsed.ok()) {
      problems_->Add(n->source(), name_, key, parsed.status().message());
      return Read::kWrong;
    }
    *out = *parsed;
    return Read::kTaken;
  }
  void Finish() {
    if (table_ == nullptr) return;
    for (const auto& [key, value] : *table_) {
      if (read_.count(std::string(key.str())) != 0) continue;
      problems_->Add(value.source(), name_, key.str(),
                     "unknown key (the keys of [" + name_ + "] are " + Known() + ")");
    }
  }
  // The keys this section knows, for the message about an unknown one; they are the ones read.
  std::string Known() const {
    std::string out;
    for (const std::string& k : order_) out += (out.empty() ? "" : ", ") + k;
    return out;
  }

 private:
  const toml::node* Find(std::string_view key) {
    if (read_.insert(std::string(key)).second) order_.emplace_back(key);
    return table_ != nullptr ? table_->get(key) : nullptr;
  }
  void Wrong(const toml::node& n, std::string_view key, std::string_view want) {
    problems_->Add(n.source(), name_, key,
                   "must be " + std::string(want) + ", not " + std::string(TypeName(n)));
  }
  static std::string_view TypeName(const toml::node& n) {
    switch (n.type()) {
      case toml::node_type::string:
        return "a string";
      case toml::node_type::integer:
        return "an integer";
      case toml::node_type::floating_point:
        return "a floating-point number";
      case toml::node_type::boolean:
        return "a boolean";
      case toml::node_type::array:
        return "an array";
      case toml::node_type::table:
        return "a table";
      default:
        return "a date or time";
    }
  }

  const toml::table* table_;
  std::string name_;
  Problems* problems_;
  std::set<std::string> read_;
  std::vector<std::string> order_;
};

Result<SyncMode> ParseSyncMode(std::string_view text) {
  if (text == "async") return SyncMode::kAsync;
  if (text == "sync") return SyncMode::kSync;
  return Status::InvalidArgument("'" + std::string(text) + "' is not a mode: async or sync");
}
Result<OnSyncTimeout> ParseOnSyncTimeout(std::string_view text) {
  if (text == "block") return OnSyncTimeout::kBlock;
  if (text == "fail") return OnSyncTimeout::kFail;
  return Status::InvalidArgument("'" + std::string(text) + "' is not a behaviour: block or fail");
}

Result<CheckKind> ParseCheckKind(std::string_view text) {
  if (text == "tcp") return CheckKind::kTcp;
  if (text == "http") return CheckKind::kHttp;
  if (text == "sip") return CheckKind::kSip;
  if (text == "command") return CheckKind::kCommand;
  return Status::InvalidArgument("'" + std::string(text) +
                                 "' is not a kind of check: tcp, http, sip or command");
}

// "tcp://HOST:PORT" (a port from 1 to 65535) or "ipc://PATH"; empty when it is one. Peers
// connect to a member's endpoints, so those need a host they can reach: not "*" nor empty.
std::string CheckEndpoint(const std::string& endpoint, bool peers_connect = false) {
  if (endpoint.rfind("ipc://", 0) == 0) {
    return endpoint.size() > 6 ? "" : "an ipc:// endpoint needs a path";
  }
  if (endpoint.rfind("tcp://", 0) != 0) {
    return "'" + endpoint + "' is not an endpoint: tcp://HOST:PORT or ipc://PATH";
  }
  const std::size_t colon = endpoint.rfind(':');
  if (colon <= 6 || colon + 1 >= endpoint.size()) {
    return "'" + endpoint + "' needs a host and a port: tcp://HOST:PORT";
  }
  const std::string host = endpoint.substr(6, colon - 6);
  if (peers_connect && (host == "*" || host == "0.0.0.0" || host == "[::]")) {
    return "'" + endpoint +
           "': the other nodes connect to it, so it needs this node's address, "
           "not " +
           host;
  }
  const std::string port = endpoint.substr(colon + 1);
  if (port.find_first_not_of("0123456789") != std::string::npos || port.size() > 5 ||
      std::stoi(port) < 1 || std::stoi(port) > 65535) {
    return "'" + endpoint + "': the port must be a number from 1 to 65535";
  }
  return "";
}

}  // namespace

std::string_view SyncModeName(SyncMode mode) {
  return mode == SyncMode::kSync ? "sync" : "async";
}
std::string_view OnSyncTimeoutName(OnSyncTimeout what) {
  return what == OnSyncTimeout::kFail ? "fail" : "block";
}

std::string_view CheckKindName(CheckKind kind) {
  switch (kind) {
    case CheckKind::kTcp:
      return "tcp";
    case CheckKind::kHttp:
      return "http";
    case CheckKind::kSip:
      return "sip";
    case CheckKind::kCommand:
      return "command";
  }
  return "?";
}

std::string MemberConfig::ServiceAddress() const {
  if (!service_address.empty()) return service_address;
  if (replication.rfind("tcp://", 0) != 0) return "";
  const std::size_t colon = replication.rfind(':');
  std::string host = replication.substr(6, colon - 6);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return host;
}

const MemberConfig* NodeConfig::FindMember(std::string_view member_id) const {
  for (const MemberConfig& m : members) {
    if (m.id == member_id) return &m;
  }
  return nullptr;
}

const MemberConfig& NodeConfig::self() const {
  const MemberConfig* me = FindMember(id);
  STATESYNC_CHECK(me != nullptr,
                  "NodeConfig::self() on a config without this node among its members");
  return me != nullptr ? *me : members.front();
}

std::chrono::milliseconds NodeConfig::HandOverWait() const {
  return std::max<milliseconds>(heartbeat_interval * lost_threshold * 3, milliseconds(1000));
}

std::chrono::milliseconds NodeConfig::HandOverLimit() const {
  return std::max<milliseconds>(HandOverWait(), milliseconds(30'000));
}

std::filesystem::path NodeConfig::ControlSocket() const {
  return control_socket.empty() ? data_dir / "control.sock" : control_socket;
}

std::string NodeConfig::IngestEndpoint() const {
  return ingest_endpoint.empty() ? "ipc://" + (data_dir / "ingest.sock").string() : ingest_endpoint;
}

std::uint64_t NodeConfig::ClusterId() const {
  return XXH3_64bits(cluster.data(), cluster.size());
}

failover::ClusterConfig NodeConfig::ToClusterConfig() const {
  failover::ClusterConfig c;
  c.self = id;
  for (const MemberConfig& m : members) {
    c.members.push_back({m.id, m.role, m.priority, m.serial.empty() ? m.id : m.serial});
  }
  c.links = links;
  c.heartbeat_interval = heartbeat_interval;
  c.lost_threshold = lost_threshold;
  c.override_enabled = override_enabled;
  c.on_failure = on_failure;
  c.holdoff_max = holdoff_max;
  c.uptime_margin = uptime_margin;
  c.preempt_delay = preempt_delay;
  // Twice the interval: a tick late by one interval is not a jump; below LostAfter() as the core
  // requires (lost_threshold 3 or more; with 1 or 2 there is no room and Validate says so).
  c.max_tick_gap = heartbeat_interval * 2;
  return c;
}

Result<NodeConfig> ParseConfig(std::string_view text, std::string_view source) {
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    return Status::InvalidArgument(std::string(source) + ":" +
                                   std::to_string(e.source().begin.line) +
                                   ": not valid TOML: " + std::string(e.description()));
  }
  Problems problems(source);
  NodeConfig c;
  auto table = [&](std::string_view name) -> const toml::table* {
    const toml::node* n = root.get(name);
    if (n == nullptr) return nullptr;
    if (!n->is_table()) {
      problems.Add(n->source(), "", name, "must be a table ([" + std::string(name) + "])");
      return nullptr;
    }
    return n->as_table();
  };
  for (const auto& [key, value] : root) {
    static const std::set<std::string_view> kTables = {
        "node", "cluster", "member", "replication", "monitor", "remote_check", "ingest", "hooks"};
    if (kTables.count(key.str()) == 0) {
      problems.Add(value.source(), "", key.str(),
                   "unknown table or key (the file has [node], [cluster], [[member]], "
                   "[replication], [monitor], [[remote_check]], [ingest] and [hooks])");
    }
  }

  Section node(table("node"), "node", &problems);
  node.String("id", &c.id);
  std::string path = c.data_dir.string();
  node.String("data_dir", &path);
  c.data_dir = path;
  path.clear();
  node.String("control_socket", &path);
  c.control_socket = path;
  node.Bool("sync_writes", &c.sync_writes);
  node.Finish();

  Section cluster(table("cluster"), "cluster", &problems);
  cluster.String("name", &c.cluster);
  cluster.Strings("links", &c.links);
  cluster.Time("heartbeat_interval_ms", 10, 60'000, &c.heartbeat_interval);
  cluster.Integer("lost_threshold", 3, 100, &c.lost_threshold);
  cluster.Word("on_failure", failover::ParseOnFailure, &c.on_failure);
  cluster.Bool("override", &c.override_enabled);
  cluster.Time("holdoff_max_s", 1, 86'400, &c.holdoff_max);
  cluster.Time("preempt_delay_s", 0, 86'400, &c.preempt_delay);
  cluster.Time("uptime_margin_s", 0, 86'400, &c.uptime_margin);
  cluster.Integer("heartbeat_realtime_priority", -1, 99, &c.heartbeat_realtime_priority);
  cluster.Finish();

  const toml::node* members = root.get("member");
  if (members != nullptr && !members->is_array_of_tables()) {
    problems.Add(members->source(), "", "member", "must be an array of tables ([[member]])");
  } else if (members != nullptr) {
    for (const toml::node& m : *members->as_array()) {
      MemberConfig mc;
      Section s(m.as_table(), "member", &problems);
      s.String("id", &mc.id);
      s.Word("role", failover::ParseConfiguredRole, &mc.role);
      s.Integer("priority", 0, 65535, &mc.priority);
      s.String("serial", &mc.serial);
      s.String("replication", &mc.replication);
      s.Strings("heartbeat", &mc.heartbeat);
      s.String("service_address", &mc.service_address);
      s.Finish();
      const std::string who = mc.id.empty() ? "a member" : "member '" + mc.id + "'";
      // Where a key of this member is, for its messages (the [[member]] line when absent).
      auto at = [&](std::string_view key) {
        const toml::node* n = m.as_table() ? m.as_table()->get(key) : nullptr;
        return n != nullptr ? n->source() : m.source();
      };
      if (mc.id.empty()) problems.Add(m.source(), "member", "id", "required");
      if (mc.id.size() > 255 || (!mc.id.empty() && mc.id[0] == '\0')) {
        problems.Add(at("id"), "member", "id",
                     "at most 255 bytes, not starting with a NUL byte (it names the node's "
                     "connections)");
      }
      for (const MemberConfig& earlier : c.members) {
        if (!mc.id.empty() && earlier.id == mc.id) {
          problems.Add(at("id"), "member", "id", "'" + mc.id + "' appears twice");
        }
      }
      if (mc.role != failover::ConfiguredRole::kWitness) {
        if (mc.replication.empty()) {
          problems.Add(m.source(), "member", "replication",
                       who + " is a data node and needs the endpoint its primary side listens on");
        } else if (std::string why = CheckEndpoint(mc.replication, true); !why.empty()) {
          problems.Add(at("replication"), "member", "replication", why);
        }
      }
      if (mc.heartbeat.size() != c.links.size()) {
        problems.Add(at("heartbeat"), "member", "heartbeat",
                     who + " has " + std::to_string(mc.heartbeat.size()) +
                         " heartbeat endpoints for " + std::to_string(c.links.size()) +
                         " links ([cluster] links): one per link, in the same order");
      }
      for (const std::string& e : mc.heartbeat) {
        if (std::string why = CheckEndpoint(e, true); !why.empty()) {
          problems.Add(at("heartbeat"), "member", "heartbeat", why);
        }
      }
      c.members.push_back(std::move(mc));
    }
  }

  Section replication(table("replication"), "replication", &problems);
  replication.Word("sync_mode", ParseSyncMode, &c.sync_mode);
  replication.Integer("min_acks", 1, 63, &c.min_acks);
  replication.Time("sync_timeout_ms", 1, 3'600'000, &c.sync_timeout);
  replication.Word("on_sync_timeout", ParseOnSyncTimeout, &c.on_sync_timeout);
  replication.Integer("io_realtime_priority", -1, 99, &c.io_realtime_priority);
  replication.Integer("backlog_max_bytes", 1 << 20, std::int64_t{1} << 50, &c.backlog_max_bytes);
  replication.Time("backlog_max_age_s", 1, std::int64_t{30} * 86'400, &c.backlog_max_age);
  replication.Finish();

  Section monitor(table("monitor"), "monitor", &problems);
  monitor.Strings("links", &c.monitored_links);
  monitor.Time("check_interval_ms", 10, 3'600'000, &c.check_interval);
  monitor.Time("check_timeout_ms", 1, 600'000, &c.check_timeout);
  monitor.Integer("check_fail_after", 1, 1000, &c.check_fail_after);
  monitor.Finish();
  for (const std::string& link : c.monitored_links) {
    if (link.empty() || link.size() > 15 || link.find('/') != std::string::npos) {
      problems.Add("monitor", "links",
                   "'" + link + "' is not an interface name (1 to 15 characters, no '/')");
    }
  }
  if (c.check_timeout > c.check_interval) {
    problems.Add(
        "monitor", "check_timeout_ms",
        std::to_string(c.check_timeout.count()) + " ms is longer than check_interval_ms (" +
            std::to_string(c.check_interval.count()) + " ms): one round would overlap the next");
  }

  const toml::node* checks = root.get("remote_check");
  if (checks != nullptr && !checks->is_array_of_tables()) {
    problems.Add(checks->source(), "", "remote_check",
                 "must be an array of tables ([[remote_check]])");
  } else if (checks != nullptr) {
    for (const toml::node& t : *checks->as_array()) {
      RemoteCheckConfig rc;
      Section s(t.as_table(), "remote_check", &problems);
      s.String("name", &rc.name);
      const Section::Read kind = s.Word("kind", ParseCheckKind, &rc.kind);
      s.Integer("port", 1, 65535, &rc.port);
      s.String("path", &rc.path);
      s.String("command", &rc.command);
      s.Bool("enabled", &rc.enabled);
      s.Finish();
      if (rc.name.empty()) problems.Add(t.source(), "remote_check", "name", "required");
      for (const RemoteCheckConfig& earlier : c.remote_checks) {
        if (!rc.name.empty() && earlier.name == rc.name) {
          problems.Add(t.source(), "remote_check", "name", "'" + rc.name + "' appears twice");
        }
      }
      if (rc.name.find_first_of(";=") != std::string::npos) {
        problems.Add(
            t.source(), "remote_check", "name",
            "'" + rc.name + "' must not contain ';' or '=' (the alerts list NAME=STATE;...)");
      }
      // The kind decides which keys the check needs: without a valid one, nothing more is said.
      if (kind == Section::Read::kAbsent) {
        problems.Add(t.source(), "remote_check", "kind", "required: tcp, http, sip or command");
      }
      if (kind != Section::Read::kTaken) {
        c.remote_checks.push_back(std::move(rc));
        continue;
      }
      const bool needs_port = rc.kind != CheckKind::kCommand;
      if (needs_port && rc.port == 0) {
        problems.Add(t.source(), "remote_check", "port",
                     "required for a " + std::string(CheckKindName(rc.kind)) + " check");
      }
      if (rc.kind == CheckKind::kCommand && rc.command.empty()) {
        problems.Add(t.source(), "remote_check", "command", "required for a command check");
      }
      if (rc.kind == CheckKind::kHttp && (rc.path.empty() || rc.path[0] != '/')) {
        problems.Add(t.source(), "remote_check", "path", "must start with '/'");
      }
      c.remote_checks.push_back(std::move(rc));
    }
  }

  Section ingest(table("ingest"), "ingest", &problems);
  ingest.String("endpoint", &c.ingest_endpoint);
  ingest.Finish();
  if (!c.ingest_endpoint.empty()) {
    if (std::string why = CheckEndpoint(c.ingest_endpoint); !why.empty()) {
      problems.Add("ingest", "endpoint", why);
    }
  }

  Section hooks(table("hooks"), "hooks", &problems);
  hooks.String("takeover", &c.takeover_hook);
  hooks.Time("timeout_s", 1, 3600, &c.hook_timeout);
  hooks.Finish();

  // The whole: what no single key can say.
  const int heartbeat_priority = replication::ResolveRealtimePriority(
      c.heartbeat_realtime_priority, replication::kDefaultHeartbeatRealtimePriority);
  const int io_priority = replication::ResolveRealtimePriority(
      c.io_realtime_priority, replication::kDefaultIoRealtimePriority);
  if (heartbeat_priority != 0 && io_priority != 0 && heartbeat_priority <= io_priority) {
    problems.Add("cluster", "heartbeat_realtime_priority",
                 "SCHED_FIFO " + std::to_string(heartbeat_priority) +
                     " is not above [replication] io_realtime_priority (SCHED_FIFO " +
                     std::to_string(io_priority) +
                     "): a busy stream would delay the heartbeats and cause false failovers");
  }
  if (c.id.empty()) problems.Add("node", "id", "required: this node's id, one of the members'");
  if (c.data_dir.empty()) problems.Add("node", "data_dir", "must not be empty");
  if (members == nullptr) {
    problems.Add("member", "", "no [[member]]: list every node of the cluster, this one included");
  } else if (!c.id.empty() && std::none_of(c.members.begin(), c.members.end(),
                                           [&](const MemberConfig& m) { return m.id == c.id; })) {
    std::string ids;
    for (const MemberConfig& m : c.members) ids += (ids.empty() ? "" : ", ") + m.id;
    problems.Add("node", "id", "'" + c.id + "' is not among the [[member]] ids (" + ids + ")");
  } else if (problems.empty()) {
    if (Status st = c.ToClusterConfig().Validate(); !st.ok()) {
      problems.Add("cluster", "", st.message());
    }
  }
  if (!c.remote_checks.empty()) {
    for (const MemberConfig& m : c.members) {
      if (m.role != failover::ConfiguredRole::kWitness && m.ServiceAddress().empty()) {
        problems.Add("member", "service_address",
                     "member '" + m.id +
                         "' needs one: the remote checks aim at it, and its replication "
                         "endpoint has no host to take");
      }
    }
  }
  if (c.sync_mode == SyncMode::kSync) {
    int others = 0;
    for (const MemberConfig& m : c.members) {
      others += m.role != failover::ConfiguredRole::kWitness && m.id != c.id ? 1 : 0;
    }
    if (c.min_acks > others) {
      problems.Add("replication", "min_acks",
                   std::to_string(c.min_acks) + " acknowledgements asked in sync mode, but only " +
                       std::to_string(others) + " other data node(s) could give them");
    }
  }
  if (!problems.empty()) return Status::InvalidArgument(problems.Text());
  return c;
}

Result<NodeConfig> LoadConfig(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) return Status::NotFound("cannot read the config file " + file.string());
  std::stringstream text;
  text << in.rdbuf();
  return ParseConfig(text.str(), file.string());
}

std::string DefaultConfigText() {
  return R"(# statesyncd's configuration (TOML). Every key is shown with its default; a key left out
# keeps it. A key statesyncd does not know is an error: `statesyncd --check-config FILE` lists
# every problem with its line.

[node]
# This node's id: one of the [[member]] ids below. Required.
id = "a"
# The store, the HA state and the event log. A lock file keeps a second daemon out.
data_dir = "/var/lib/statesync"
# The control socket statesyncctl talks to (mode 0600). Empty: <data_dir>/control.sock.
control_socket = ""
# Sync every write of the store to the disk before it counts: the data then survives a power
# loss of this host, not only the crash of its process (without it, a SIGKILL or a crash still
# loses nothing: the writes are in the kernel's page cache). It costs the disk's flush on every
# write, about 25 % of replication throughput. The HA state (epoch and vote) is always synced.
sync_writes = false

[cluster]
# Every message carries a hash of this name; messages of another cluster are refused.
name = "statesync"
# The heartbeat links, by name. Each member lists one heartbeat endpoint per link, in this
# order; a peer is lost only when it is silent on every link.
links = ["ha1"]
# A heartbeat on every link every interval; a peer missing lost_threshold of them in a row on
# every link is lost (100 ms x 3: lost after 300 ms of silence).
heartbeat_interval_ms = 100
lost_threshold = 3
# What a primary that failed does when it comes back: switch_off (waits for an operator),
# restore_role (catches up as secondary, then takes the primary role back) or
# become_secondary.
on_failure = "become_secondary"
# Priority outranks replication freshness and uptime in elections, and a higher-priority
# former primary takes the role back after preempt_delay_s.
override = false
# A planned restart (SIGTERM on the primary) asks the peers to hold off for at most this long.
holdoff_max_s = 300
preempt_delay_s = 30
# Uptimes closer than this count as equal in elections.
uptime_margin_s = 300
# The heartbeat path (the event loop and the heartbeat sockets' thread): -1 runs it in
# SCHED_FIFO at 20 where the process may (root or CAP_SYS_NICE), 0 in the normal class, 1-99 in
# SCHED_FIFO at that priority. It must stay above [replication] io_realtime_priority: a busy
# stream in SCHED_FIFO can otherwise hold every core for up to 950 ms in each second, and a
# primary that sends no heartbeat for 300 ms is replaced.
heartbeat_realtime_priority = -1

# Every node of the cluster, this one included, in the same order on every node (a node's index
# is its slot). role: primary, secondary or witness (a witness holds no data and only votes;
# with three or more members a promotion needs a majority).
[[member]]
id = "a"
role = "primary"
priority = 100
# The last tie-breaker of elections (the higher wins). Empty: the id.
serial = ""
# Where this member's primary side listens for its subordinates (not for a witness).
replication = "tcp://127.0.0.1:7400"
# One endpoint per heartbeat link, in the order of [cluster] links.
heartbeat = ["tcp://127.0.0.1:7401"]
# The address the other nodes' remote service checks aim at. Empty: the host of replication.
service_address = ""

[[member]]
id = "b"
role = "secondary"
priority = 100
serial = ""
replication = "tcp://127.0.0.1:7410"
heartbeat = ["tcp://127.0.0.1:7411"]
service_address = ""

[replication]
# async: a write is done when it is in the primary's table; sync: when min_acks subordinates
# have persisted it.
sync_mode = "async"
min_acks = 1
# In sync mode, when min_acks cannot be met in time: block (keep waiting) or fail (the write
# completes with an error). Either way an alert is raised; sync never turns into async.
sync_timeout_ms = 1000
on_sync_timeout = "block"
# The stream's I/O threads: -1 runs them in SCHED_FIFO at 10 where the process may (root or
# CAP_SYS_NICE), 0 in the normal class, 1-99 in SCHED_FIFO at that priority.
io_realtime_priority = -1
# The journal kept for subordinates that catch up incrementally (CONTINUE), by size and age.
backlog_max_bytes = 4294967296
backlog_max_age_s = 3600

[monitor]
# This node's monitored links: interfaces that count as up while they are up and have a carrier,
# read every heartbeat interval. In elections the node with more monitored links up wins first,
# and a primary with fewer up than a secondary hands the primary role over to it.
links = []
# Remote service monitoring (the [[remote_check]] tables below): a round of checks every
# check_interval_ms, each check given check_timeout_ms; a check failing check_fail_after rounds
# in a row is FAILED. A secondary checks the primary's services, and asks a primary whose
# services fail from here to go to FAILED, then takes over; a FAILED node checks the others'
# services and returns as secondary when one passes and none fails.
check_interval_ms = 1000
check_timeout_ms = 500
check_fail_after = 3

# None by default. One table per service, for example:
#   [[remote_check]]
#   name = "SIP_UDP"
#   kind = "sip"        # tcp: connects; http: a GET answered 2xx or 3xx; sip: OPTIONS over
#                       # UDP answered at all; command: exits 0 within the timeout
#   port = 5060         # tcp, http and sip
#   path = "/"          # http
#   command = ""        # command: run by /bin/sh with the peer's address in "$1" and in
#                       # STATESYNC_PEER_HOST
#   enabled = true      # false: reported DISABLED and not probed

[ingest]
# Where applications send FlatBuffers batches of records. Empty: ipc://<data_dir>/ingest.sock.
endpoint = ""

[hooks]
# A command run on promotion (after the state is ready) and on demotion, one at a time: where a
# virtual address is moved or state committed into a kernel. A program's path alone gets the
# arguments `promote EPOCH` or `demote EPOCH`; a longer command finds them in "$1" and "$2"
# (and in STATESYNC_EVENT, STATESYNC_EPOCH). Stopped at timeout_s. Empty: none.
takeover = ""
timeout_s = 10
)";
}

}  // namespace statesync::node
