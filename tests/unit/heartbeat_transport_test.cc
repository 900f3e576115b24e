#include "statesync/node/heartbeat_transport.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <set>
#include <zmq.hpp>

#include "statesync/node/peer_messages.h"

namespace statesync::node {
namespace {

using namespace std::chrono_literals;

// `n` distinct TCP ports nobody listens on right now (the kernel's picks for sockets bound to
// port 0, all held until the last is picked so that none comes twice).
std::vector<int> FreePorts(int n) {
  std::vector<int> fds, ports;
  for (int i = 0; i < n; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    socklen_t len = sizeof(a);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    fds.push_back(fd);
    ports.push_back(ntohs(a.sin_port));
  }
  for (int fd : fds) ::close(fd);
  return ports;
}
std::string Endpoint(int port) {
  return "tcp://127.0.0.1:" + std::to_string(port);
}

// Nodes a and b, two heartbeat links each, on 127.0.0.1.
struct Pair {
  NodeConfig a, b;
  Pair() {
    std::vector<MemberConfig> members;
    const std::vector<int> ports = FreePorts(6);
    auto port = ports.begin();
    for (const char* id : {"a", "b"}) {
      MemberConfig m;
      m.id = id;
      m.role = std::string(id) == "a" ? failover::ConfiguredRole::kPrimary
                                      : failover::ConfiguredRole::kSecondary;
      m.replication = Endpoint(*port++);
      m.heartbeat = {Endpoint(*port++), Endpoint(*port++)};
      members.push_back(m);
    }
    for (NodeConfig* c : {&a, &b}) {
      c->members = members;
      c->links = {"ha1", "ha2"};
    }
    a.id = "a";
    b.id = "b";
  }
};

// Receives on `t` until `want` messages came or 5 s passed.
std::vector<ReceivedPeerMessage> ReceiveAtLeast(HeartbeatTransport& t, std::size_t want) {
  std::vector<ReceivedPeerMessage> got;
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (got.size() < want && std::chrono::steady_clock::now() < until) {
    for (auto& m : t.Receive(50ms)) got.push_back(std::move(m));
  }
  return got;
}

failover::Heartbeat SomeHeartbeat() {
  failover::Heartbeat hb;
  hb.sequence = 7;
  hb.epoch = 64;
  hb.role = failover::EffectiveRole::kPrimary;
  hb.configured = failover::ConfiguredRole::kPrimary;
  hb.applied = {64, 1000};
  hb.ready = true;
  hb.following = "a";
  return hb;
}

TEST(HeartbeatTransport, AMessageGoesOnEveryLinkOrOnTheOneNamed) {
  Pair p;
  auto a = HeartbeatTransport::Start(p.a);
  auto b = HeartbeatTransport::Start(p.b);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  // Until a link's connection is up, `immediate` drops what is sent on it: send until both
  // links have carried one.
  std::vector<ReceivedPeerMessage> got;
  std::set<failover::LinkIndex> links;
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (links.size() < 2 && std::chrono::steady_clock::now() < until) {
    (*a)->Send({"b", std::nullopt, SomeHeartbeat()});
    for (auto& m : (*b)->Receive(50ms)) {
      links.insert(m.link);
      got.push_back(std::move(m));
    }
  }
  for (const auto& m : got) {
    EXPECT_EQ(m.from, "a");
    const auto* hb = std::get_if<failover::Heartbeat>(&m.message);
    ASSERT_NE(hb, nullptr);
    EXPECT_EQ(hb->applied, (Position{64, 1000}));
    EXPECT_TRUE(hb->ready);
  }
  EXPECT_EQ(links, (std::set<failover::LinkIndex>{0, 1}));
  (void)(*b)->Receive(200ms);  // what was still on its way

  // On link 1 only: a vote from b to a.
  std::vector<ReceivedPeerMessage> votes;
  const auto vote_until = std::chrono::steady_clock::now() + 5s;
  while (votes.empty() && std::chrono::steady_clock::now() < vote_until) {
    (*b)->Send({"a", failover::LinkIndex{1}, failover::Vote{64, true, ""}});
    votes = (*a)->Receive(50ms);
  }
  for (auto& m : (*a)->Receive(200ms)) votes.push_back(std::move(m));
  ASSERT_FALSE(votes.empty());
  for (const auto& v : votes) {
    EXPECT_EQ(v.link, 1);  // never on link 0
    EXPECT_EQ(v.from, "b");
    EXPECT_TRUE(std::holds_alternative<failover::Vote>(v.message));
  }
  EXPECT_EQ((*a)->counters().refused, 0u);
}

// A peer that is gone costs a send nothing: no blocking, no queue growing, and the messages are
// counted as dropped.
TEST(HeartbeatTransport, SendingToAPeerThatIsDownNeitherBlocksNorQueues) {
  Pair p;
  auto a = HeartbeatTransport::Start(p.a);
  ASSERT_TRUE(a.ok());
  // A send that blocked would hang here (and the test time out).
  for (int i = 0; i < 10'000; ++i) (*a)->Send({"b", std::nullopt, SomeHeartbeat()});
  EXPECT_EQ((*a)->counters().sent + (*a)->counters().dropped, 20'000u);
  EXPECT_GT((*a)->counters().dropped, 19'000u);
}

// What arrives on a heartbeat link from outside the cluster is refused and counted, and the
// link goes on.
TEST(HeartbeatTransport, StrangersAndDamagedFramesAreRefusedAndCounted) {
  Pair p;
  auto b = HeartbeatTransport::Start(p.b);
  ASSERT_TRUE(b.ok());
  zmq::context_t ctx;
  auto stranger = [&](const std::string& id) {
    zmq::socket_t s(ctx, zmq::socket_type::dealer);
    s.set(zmq::sockopt::routing_id, id);
    s.set(zmq::sockopt::linger, 0);
    s.connect(p.b.members[1].heartbeat[0]);
    return s;
  };
  zmq::socket_t mallory = stranger("mallory");
  zmq::socket_t fake_a = stranger("a");
  const NodeConfig other_cluster = [&] {
    NodeConfig c = p.a;
    c.cluster = "another";
    return c;
  }();
  std::string damaged = EncodePeerMessage(p.a.ClusterId(), "a", 0, SomeHeartbeat());
  damaged[damaged.size() - 2] ^= 1;
  const std::vector<std::pair<zmq::socket_t*, std::string>> bad = {
      {&mallory, EncodePeerMessage(p.a.ClusterId(), "mallory", 0, SomeHeartbeat())},
      {&fake_a, EncodePeerMessage(other_cluster.ClusterId(), "a", 0, SomeHeartbeat())},
      {&fake_a, damaged},
      {&fake_a, EncodePeerMessage(p.a.ClusterId(), "a", 1, SomeHeartbeat())},  // wrong link
      {&fake_a, "not a frame"},
  };
  for (const auto& [socket, frame] : bad) socket->send(zmq::buffer(frame));
  // And one good message after them.
  fake_a.send(zmq::buffer(EncodePeerMessage(p.a.ClusterId(), "a", 0, SomeHeartbeat())));
  auto got = ReceiveAtLeast(**b, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].from, "a");
  const auto until = std::chrono::steady_clock::now() + 5s;
  while ((*b)->counters().refused < bad.size() && std::chrono::steady_clock::now() < until) {
    (void)(*b)->Receive(50ms);
  }
  EXPECT_EQ((*b)->counters().refused, bad.size());
  EXPECT_EQ((*b)->counters().received, 1u);
}

// A peer that comes back after a crash reconnects under its id while its old connection may
// still look open here: the new one is heard. And nothing larger than a heartbeat is read.
TEST(HeartbeatTransport, ARestartedPeerIsHeardAndAnOversizedMessageIsNot) {
  Pair p;
  auto b = HeartbeatTransport::Start(p.b);
  ASSERT_TRUE(b.ok());
  zmq::context_t ctx;
  auto connect_as_a = [&] {
    zmq::socket_t s(ctx, zmq::socket_type::dealer);
    s.set(zmq::sockopt::routing_id, "a");
    s.set(zmq::sockopt::linger, 0);
    s.connect(p.b.members[1].heartbeat[0]);
    return s;
  };
  const std::string hello = EncodePeerMessage(p.a.ClusterId(), "a", 0, SomeHeartbeat());
  zmq::socket_t old_a = connect_as_a();
  old_a.send(zmq::buffer(hello));
  ASSERT_EQ(ReceiveAtLeast(**b, 1).size(), 1u);
  zmq::socket_t new_a = connect_as_a();  // the old one stays open, as after a power loss
  std::vector<ReceivedPeerMessage> got;
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (got.empty() && std::chrono::steady_clock::now() < until) {
    new_a.send(zmq::buffer(hello), zmq::send_flags::dontwait);
    got = (*b)->Receive(50ms);
  }
  EXPECT_FALSE(got.empty()) << "the reconnected peer was not heard";

  zmq::socket_t big = connect_as_a();
  big.send(zmq::buffer(std::string(1 << 20, 'x')));
  const auto received = (*b)->counters().received;
  (void)(*b)->Receive(300ms);
  EXPECT_EQ((*b)->counters().received, received);
  EXPECT_EQ((*b)->counters().refused, 0u);  // dropped by ZeroMQ unread, with its connection
}

TEST(HeartbeatTransport, AnEndpointInUseIsRefusedAtStart) {
  Pair p;
  auto first = HeartbeatTransport::Start(p.a);
  ASSERT_TRUE(first.ok());
  auto second = HeartbeatTransport::Start(p.a);
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("cannot set up the heartbeat links"), std::string::npos)
      << second.status().message();
}

}  // namespace
}  // namespace statesync::node
