#include "statesync/node/config.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>

namespace statesync::node {
namespace {

using failover::ConfiguredRole;
using failover::OnFailure;

// Two data nodes on 127.0.0.1, one heartbeat link: the least a config must say.
constexpr char kMinimal[] = R"(
[node]
id = "b"

[[member]]
id = "a"
role = "primary"
replication = "tcp://127.0.0.1:7400"
heartbeat = ["tcp://127.0.0.1:7401"]

[[member]]
id = "b"
role = "secondary"
replication = "tcp://127.0.0.1:7410"
heartbeat = ["tcp://127.0.0.1:7411"]
)";

// The message of a refused config, or a failure if it was accepted.
std::string Refusal(const std::string& text) {
  auto c = ParseConfig(text, "node.toml");
  EXPECT_FALSE(c.ok()) << "accepted:\n" << text;
  return c.ok() ? "" : c.status().message();
}

std::size_t Lines(const std::string& s) {
  return std::count(s.begin(), s.end(), '\n') + 1;
}

TEST(NodeConfig, TheMinimalConfigTakesTheDocumentedDefaults) {
  auto c = ParseConfig(kMinimal, "node.toml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const NodeConfig defaults;
  EXPECT_EQ(c->id, "b");
  EXPECT_EQ(c->data_dir, defaults.data_dir);
  EXPECT_EQ(c->ControlSocket(), defaults.data_dir / "control.sock");
  EXPECT_EQ(c->IngestEndpoint(), "ipc://" + (defaults.data_dir / "ingest.sock").string());
  EXPECT_EQ(c->heartbeat_interval, std::chrono::milliseconds(100));
  EXPECT_EQ(c->lost_threshold, 3);
  EXPECT_EQ(c->on_failure, OnFailure::kBecomeSecondary);
  EXPECT_EQ(c->sync_mode, SyncMode::kAsync);
  EXPECT_EQ(c->on_sync_timeout, OnSyncTimeout::kBlock);
  EXPECT_EQ(c->io_realtime_priority, -1);
  EXPECT_EQ(c->heartbeat_realtime_priority, -1);
  EXPECT_EQ(c->links, std::vector<std::string>{"ha1"});
  ASSERT_EQ(c->members.size(), 2u);
  EXPECT_EQ(c->members[0].role, ConfiguredRole::kPrimary);
  EXPECT_EQ(c->self().id, "b");
  EXPECT_EQ(c->self().replication, "tcp://127.0.0.1:7410");
  const failover::ClusterConfig cluster = c->ToClusterConfig();
  EXPECT_TRUE(cluster.Validate().ok()) << cluster.Validate().ToString();
  EXPECT_EQ(cluster.self, "b");
  EXPECT_EQ(cluster.members[1].serial, "b");  // an empty serial is the id
  EXPECT_EQ(cluster.LostAfter(), std::chrono::milliseconds(300));
}

// --print-config's text is a valid config whose every value is the default.
TEST(NodeConfig, ThePrintedDefaultsParseToTheDefaults) {
  auto c = ParseConfig(DefaultConfigText(), "defaults");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const NodeConfig d;
  EXPECT_EQ(c->data_dir, d.data_dir);
  EXPECT_EQ(c->control_socket, d.control_socket);
  EXPECT_EQ(c->cluster, d.cluster);
  EXPECT_EQ(c->links, d.links);
  EXPECT_EQ(c->heartbeat_interval, d.heartbeat_interval);
  EXPECT_EQ(c->lost_threshold, d.lost_threshold);
  EXPECT_EQ(c->on_failure, d.on_failure);
  EXPECT_EQ(c->override_enabled, d.override_enabled);
  EXPECT_EQ(c->holdoff_max, d.holdoff_max);
  EXPECT_EQ(c->preempt_delay, d.preempt_delay);
  EXPECT_EQ(c->uptime_margin, d.uptime_margin);
  EXPECT_EQ(c->sync_mode, d.sync_mode);
  EXPECT_EQ(c->min_acks, d.min_acks);
  EXPECT_EQ(c->sync_timeout, d.sync_timeout);
  EXPECT_EQ(c->on_sync_timeout, d.on_sync_timeout);
  EXPECT_EQ(c->io_realtime_priority, d.io_realtime_priority);
  EXPECT_EQ(c->backlog_max_bytes, d.backlog_max_bytes);
  EXPECT_EQ(c->backlog_max_age, d.backlog_max_age);
  EXPECT_EQ(c->ingest_endpoint, d.ingest_endpoint);
  EXPECT_EQ(c->takeover_hook, d.takeover_hook);
  EXPECT_EQ(c->hook_timeout, d.hook_timeout);
  EXPECT_EQ(c->monitored_links, d.monitored_links);
  EXPECT_EQ(c->check_interval, d.check_interval);
  EXPECT_EQ(c->check_timeout, d.check_timeout);
  EXPECT_EQ(c->check_fail_after, d.check_fail_after);
  EXPECT_TRUE(c->remote_checks.empty());
  EXPECT_EQ(c->members.size(), 2u);
}

TEST(NodeConfig, AnUnknownKeyIsNamedWithItsLineAndTheKeysThatExist) {
  const std::string m = Refusal(std::string(kMinimal) + "\n[replication]\nmin_ack = 2\n");
  EXPECT_NE(m.find("node.toml:"), std::string::npos) << m;
  EXPECT_NE(m.find("[replication] min_ack: unknown key"), std::string::npos) << m;
  EXPECT_NE(m.find("min_acks"), std::string::npos) << m;  // what was meant is listed
  // The line is the key's: the file's last.
  EXPECT_NE(m.find(":" + std::to_string(Lines(kMinimal) + 2) + ":"), std::string::npos) << m;
  EXPECT_NE(Refusal(std::string(kMinimal) + "\n[replicaton]\n").find("replicaton: unknown table"),
            std::string::npos);
}

TEST(NodeConfig, AWrongTypeOrAValueOutOfRangeSaysWhatIsWanted) {
  std::string m = Refusal(std::string(kMinimal) + "\n[cluster]\nheartbeat_interval_ms = \"100\"\n");
  EXPECT_NE(m.find("[cluster] heartbeat_interval_ms: must be an integer, not a string"),
            std::string::npos)
      << m;
  m = Refusal(std::string(kMinimal) + "\n[cluster]\nname = 5\nlinks = \"ha1\"\n");
  EXPECT_NE(m.find("[cluster] name: must be a string, not an integer"), std::string::npos) << m;
  EXPECT_NE(m.find("[cluster] links: must be an array of strings, not a string"), std::string::npos)
      << m;
  m = Refusal(std::string(kMinimal) + "\n[cluster]\nlost_threshold = 1\n");
  EXPECT_NE(m.find("[cluster] lost_threshold: 1 is out of range"), std::string::npos) << m;
  m = Refusal(std::string(kMinimal) + "\n[cluster]\non_failure = \"reboot\"\n");
  EXPECT_NE(m.find("[cluster] on_failure: "), std::string::npos) << m;
  EXPECT_NE(m.find("reboot"), std::string::npos) << m;
  m = Refusal(std::string(kMinimal) + "\n[replication]\nio_realtime_priority = 100\n");
  EXPECT_NE(m.find("[replication] io_realtime_priority: 100 is out of range"), std::string::npos)
      << m;
}

// The heartbeat path must run above the stream: at or below it, a busy stream delays heartbeats.
TEST(NodeConfig, TheHeartbeatPathMustRunAboveTheStream) {
  const auto with = [](const std::string& heartbeat, const std::string& io) {
    return std::string(kMinimal) + "\n[cluster]\nheartbeat_realtime_priority = " + heartbeat +
           "\n[replication]\nio_realtime_priority = " + io + "\n";
  };
  std::string m = Refusal(with("10", "-1"));  // the stream's default is 10
  EXPECT_NE(m.find("[cluster] heartbeat_realtime_priority: SCHED_FIFO 10 is not above "
                   "[replication] io_realtime_priority (SCHED_FIFO 10)"),
            std::string::npos)
      << m;
  m = Refusal(with("-1", "30"));  // the heartbeat path's default is 20
  EXPECT_NE(m.find("SCHED_FIFO 20 is not above [replication] io_realtime_priority (SCHED_FIFO "
                   "30)"),
            std::string::npos)
      << m;
  for (const auto& [heartbeat, io] : std::vector<std::pair<std::string, std::string>>{
           {"-1", "-1"}, {"11", "-1"}, {"0", "0"}, {"0", "-1"}, {"5", "0"}, {"-1", "19"}}) {
    EXPECT_TRUE(ParseConfig(with(heartbeat, io), "t.toml").ok()) << heartbeat << " " << io;
  }
  m = Refusal(std::string(kMinimal) + "\n[cluster]\nheartbeat_realtime_priority = 100\n");
  EXPECT_NE(m.find("[cluster] heartbeat_realtime_priority: 100 is out of range"), std::string::npos)
      << m;
}

TEST(NodeConfig, EveryProblemIsReportedAtOnce) {
  const std::string m = Refusal(std::string(kMinimal) +
                                "\n[cluster]\nlost_threshold = 0\noverride = 1\n"
                                "[hooks]\ntimeout = 5\n");
  EXPECT_EQ(Lines(m), 3u) << m;
  EXPECT_NE(m.find("lost_threshold"), std::string::npos) << m;
  EXPECT_NE(m.find("override: must be true or false, not an integer"), std::string::npos) << m;
  EXPECT_NE(m.find("[hooks] timeout: unknown key"), std::string::npos) << m;
}

TEST(NodeConfig, TheClusterMustHoldThisNodeAndOneEndpointPerLink) {
  std::string text = kMinimal;
  text.replace(text.find("id = \"b\""), 8, "id = \"z\"");  // [node] id
  std::string m = Refusal(text);
  EXPECT_NE(m.find("[node] id: 'z' is not among the [[member]] ids (a, b)"), std::string::npos)
      << m;

  m = Refusal("[cluster]\nlinks = [\"ha1\", \"ha2\"]\n" + std::string(kMinimal));
  EXPECT_NE(m.find("member 'a' has 1 heartbeat endpoints for 2 links"), std::string::npos) << m;

  m = Refusal("[node]\nid = \"a\"\n");
  EXPECT_NE(m.find("no [[member]]"), std::string::npos) << m;

  text = kMinimal;
  text.replace(text.rfind("id = \"b\""), 8, "id = \"a\"");  // the second member
  m = Refusal(text);
  EXPECT_NE(m.find("[member] id: 'a' appears twice"), std::string::npos) << m;
}

TEST(NodeConfig, EndpointsAreCheckedBeforeAnythingBindsThem) {
  std::string text = kMinimal;
  text.replace(text.find("tcp://127.0.0.1:7400"), 20, "tcp://127.0.0.1");
  std::string m = Refusal(text);
  EXPECT_NE(m.find("[member] replication: 'tcp://127.0.0.1' needs a host and a port"),
            std::string::npos)
      << m;
  // The key's own line, not its [[member]]'s: "replication" of the first member is on line 8.
  EXPECT_NE(m.find("node.toml:8: [member] replication"), std::string::npos) << m;
  text = kMinimal;
  text.replace(text.find("tcp://127.0.0.1:7400"), 20, "tcp://*:7400");
  m = Refusal(text);
  EXPECT_NE(m.find("the other nodes connect to it"), std::string::npos) << m;
  text = kMinimal;
  text.replace(text.find("tcp://127.0.0.1:7411"), 20, "udp://127.0.0.1:7411");
  m = Refusal(text);
  EXPECT_NE(m.find("is not an endpoint"), std::string::npos) << m;
  text = kMinimal;
  text.replace(text.find("tcp://127.0.0.1:7411"), 20, "tcp://127.0.0.1:99999");
  m = Refusal(text);
  EXPECT_NE(m.find("the port must be a number from 1 to 65535"), std::string::npos) << m;
}

TEST(NodeConfig, SyncModeNeedsEnoughDataNodesToAcknowledge) {
  const std::string m =
      Refusal(std::string(kMinimal) + "\n[replication]\nsync_mode = \"sync\"\nmin_acks = 2\n");
  EXPECT_NE(m.find("[replication] min_acks: 2 acknowledgements asked in sync mode, but only 1"),
            std::string::npos)
      << m;
  auto ok = ParseConfig(std::string(kMinimal) + "\n[replication]\nsync_mode = \"sync\"\n", "x");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->sync_mode, SyncMode::kSync);
}

TEST(NodeConfig, MonitoredLinksAndRemoteChecksAreRead) {
  auto c = ParseConfig(std::string(kMinimal) + R"(
[monitor]
links = ["eth1", "eth2"]
check_interval_ms = 2000
check_fail_after = 2

[[remote_check]]
name = "SIP_UDP"
kind = "sip"
port = 5060

[[remote_check]]
name = "HTTP"
kind = "http"
port = 8080
path = "/health"
enabled = false

[[remote_check]]
name = "PBX"
kind = "command"
command = "check-pbx --quick"
)",
                       "node.toml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->monitored_links, (std::vector<std::string>{"eth1", "eth2"}));
  EXPECT_EQ(c->check_interval, std::chrono::milliseconds(2000));
  EXPECT_EQ(c->check_timeout, std::chrono::milliseconds(500));
  EXPECT_EQ(c->check_fail_after, 2);
  ASSERT_EQ(c->remote_checks.size(), 3u);
  EXPECT_EQ(c->remote_checks[0].kind, CheckKind::kSip);
  EXPECT_EQ(c->remote_checks[0].port, 5060);
  EXPECT_EQ(c->remote_checks[1].path, "/health");
  EXPECT_FALSE(c->remote_checks[1].enabled);
  EXPECT_EQ(c->remote_checks[2].command, "check-pbx --quick");
  // The checks aim at a member's replication host unless it names a service address.
  EXPECT_EQ(c->members[0].ServiceAddress(), "127.0.0.1");
}

TEST(NodeConfig, ARemoteCheckThatCannotRunIsRefused) {
  std::string m = Refusal(std::string(kMinimal) +
                          "\n[[remote_check]]\nname = \"SIP\"\nkind = \"icmp\"\n"
                          "\n[[remote_check]]\nname = \"SIP\"\nkind = \"tcp\"\n"
                          "\n[[remote_check]]\nkind = \"command\"\n");
  EXPECT_NE(m.find("[remote_check] kind: 'icmp' is not a kind of check: tcp, http, sip or command"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("[remote_check] name: 'SIP' appears twice"), std::string::npos) << m;
  EXPECT_NE(m.find("[remote_check] port: required for a tcp check"), std::string::npos) << m;
  EXPECT_NE(m.find("[remote_check] name: required"), std::string::npos) << m;
  EXPECT_NE(m.find("[remote_check] command: required for a command check"), std::string::npos) << m;
  // A check with no valid kind is told so, and nothing about the keys a kind would need.
  m = Refusal(std::string(kMinimal) + "\n[[remote_check]]\nname = \"X\"\n" +
              "\n[[remote_check]]\nname = \"Y\"\nkind = \"icmp\"\n");
  EXPECT_NE(m.find("[remote_check] kind: required: tcp, http, sip or command"), std::string::npos)
      << m;
  EXPECT_EQ(m.find("port"), std::string::npos) << m;
  m = Refusal(std::string(kMinimal) +
              "\n[monitor]\nlinks = [\"a-very-long-interface\"]\n"
              "check_interval_ms = 100\ncheck_timeout_ms = 200\n");
  EXPECT_NE(m.find("[monitor] links: 'a-very-long-interface' is not an interface name"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("[monitor] check_timeout_ms: 200 ms is longer than check_interval_ms"),
            std::string::npos)
      << m;
}

TEST(NodeConfig, NotTomlAtAllIsRefusedWithTheLine) {
  const std::string m = Refusal("[node]\nid = \"a\"\n[cluster\n");
  EXPECT_NE(m.find("node.toml:3: not valid TOML"), std::string::npos) << m;
}

TEST(NodeConfig, AMissingFileIsNamed) {
  auto c = LoadConfig("/nonexistent/statesync.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Status::Code::kNotFound);
  EXPECT_NE(c.status().message().find("/nonexistent/statesync.toml"), std::string::npos);
}

TEST(NodeConfig, TheClusterIdOnTheWireIsTheNamesHash) {
  auto a = ParseConfig(kMinimal, "a");
  auto b = ParseConfig(std::string(kMinimal) + "\n[cluster]\nname = \"other\"\n", "b");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->ClusterId(), NodeConfig{}.ClusterId());  // the default name
  EXPECT_NE(a->ClusterId(), b->ClusterId());
}

}  // namespace
}  // namespace statesync::node
