#include "statesync/node/heartbeat_transport.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <zmq.hpp>

#include "statesync/node/peer_messages.h"
#include "statesync/replication/zmq_realtime.h"

namespace statesync::node {

class HeartbeatTransport::Impl {
 public:
  explicit Impl(const NodeConfig& config) : config_(config), cluster_id_(config.ClusterId()) {}

  Status Start() {
    const failover::NodeId& self = config_.id;
    auto realtime = replication::StartContextRealtime(
        ctx_, config_.heartbeat_realtime_priority,
        replication::RealtimeThreads{self, "the heartbeat path", "heartbeat_realtime_priority",
                                     replication::kDefaultHeartbeatRealtimePriority});
    if (!realtime.ok()) return realtime.status();
    realtime_priority_ = *realtime;
    try {
      for (std::size_t link = 0; link < config_.links.size(); ++link) {
        zmq::socket_t in(ctx_, zmq::socket_type::router);
        in.set(zmq::sockopt::linger, 0);
        in.set(zmq::sockopt::rcvhwm, kQueueMessages);
        // A peer that comes back after a crash reconnects under the same id while our side of
        // its old connection may still look open: the new connection takes the id over.
        in.set(zmq::sockopt::router_handover, 1);
        // Nothing larger than a heartbeat is read into memory at all.
        in.set(zmq::sockopt::maxmsgsize, kMaxMessageBytes);
        SetConnectionHeartbeat(in);
        in.bind(config_.self().heartbeat[link]);
        inbound_.push_back(std::move(in));
        for (const MemberConfig& m : config_.members) {
          if (m.id == self) continue;
          zmq::socket_t out(ctx_, zmq::socket_type::dealer);
          out.set(zmq::sockopt::routing_id, self);
          out.set(zmq::sockopt::linger, 0);
          // Nothing queued for a peer that is not connected, and little for one that is slow:
          // an old heartbeat is worth less than none.
          out.set(zmq::sockopt::immediate, 1);
          out.set(zmq::sockopt::sndhwm, kQueueMessages);
          // Reconnect at the heartbeat interval, without backing off: a peer that restarts
          // must hear us within its start-up window (the loss time), or it would find no
          // primary and take the role itself (found by the secondary-restart scenario, where
          // ZeroMQ's back-off kept the primary silent for 400-800 ms).
          out.set(zmq::sockopt::reconnect_ivl, static_cast<int>(std::min<std::int64_t>(
                                                   100, config_.heartbeat_interval.count())));
          out.set(zmq::sockopt::reconnect_ivl_max, 0);
          SetConnectionHeartbeat(out);
          Monitor(out, m.id, static_cast<failover::LinkIndex>(link));
          out.connect(m.heartbeat[link]);
          outbound_[{m.id, static_cast<failover::LinkIndex>(link)}] = std::move(out);
        }
      }
    } catch (const zmq::error_t& e) {
      return Status::Unavailable("cannot set up the heartbeat links: " + std::string(e.what()));
    }
    return Status::Ok();
  }

  void Send(const failover::SendMessage& m) {
    for (std::size_t link = 0; link < config_.links.size(); ++link) {
      if (m.link && *m.link != link) continue;
      auto it = outbound_.find({m.to, static_cast<failover::LinkIndex>(link)});
      if (it == outbound_.end()) {
        ++counters_.dropped;
        continue;
      }
      const std::string frame = EncodePeerMessage(
          cluster_id_, config_.id, static_cast<failover::LinkIndex>(link), m.message);
      bool sent = false;
      try {
        sent = it->second.send(zmq::buffer(frame), zmq::send_flags::dontwait).has_value();
      } catch (const zmq::error_t&) {
        sent = false;
      }
      ++(sent ? counters_.sent : counters_.dropped);
    }
  }

  std::vector<ReceivedPeerMessage> Receive(std::chrono::milliseconds timeout, int wake_fd) {
    std::vector<ReceivedPeerMessage> out;
    std::vector<zmq::pollitem_t> items;
    if (wake_fd >= 0) items.push_back({nullptr, wake_fd, ZMQ_POLLIN, 0});
    for (auto& s : inbound_) items.push_back({s.handle(), 0, ZMQ_POLLIN, 0});
    for (auto& m : monitors_) items.push_back({m.socket.handle(), 0, ZMQ_POLLIN, 0});
    try {
      zmq::poll(items.data(), items.size(), timeout);
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) spdlog::error("{}: heartbeat poll failed: {}", config_.id, e.what());
      return out;
    }
    ReadMonitors();
    for (std::size_t link = 0; link < inbound_.size(); ++link) {
      for (int n = 0; n < kQueueMessages; ++n) {
        zmq::message_t routing_id, body;
        try {
          if (!inbound_[link].recv(routing_id, zmq::recv_flags::dontwait)) break;
          if (!routing_id.more() || !inbound_[link].recv(body, zmq::recv_flags::dontwait)) {
            Refuse(link, "a message without a body");
            continue;
          }
          if (body.more()) {  // more parts than our senders send: drain them and refuse
            zmq::message_t extra;
            while (inbound_[link].recv(extra, zmq::recv_flags::dontwait) && extra.more()) {
            }
            Refuse(link, "a message of more than one part");
            continue;
          }
        } catch (const zmq::error_t& e) {
          Refuse(link, e.what());
          break;
        }
        Accept(static_cast<failover::LinkIndex>(link), routing_id.to_string(), body, &out);
      }
    }
    return out;
  }

  HeartbeatCounters counters() const { return counters_; }
  int realtime_priority() const { return realtime_priority_; }

  std::vector<ConnectionEvent> TakeConnectionEvents() {
    std::vector<ConnectionEvent> events;
    events.swap(events_);
    return events;
  }

 private:
  struct MonitorSocket {
    failover::NodeId peer;
    failover::LinkIndex link;
    zmq::socket_t socket;
  };

  // Reports the outgoing connection's opens and closes on an inproc PAIR socket.
  void Monitor(zmq::socket_t& out, const failover::NodeId& peer, failover::LinkIndex link) {
    const std::string address = "inproc://heartbeat-monitor-" + std::to_string(monitors_.size());
    if (zmq_socket_monitor(out.handle(), address.c_str(),
                           ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED) != 0) {
      throw zmq::error_t();
    }
    zmq::socket_t pair(ctx_, zmq::socket_type::pair);
    pair.set(zmq::sockopt::linger, 0);
    pair.connect(address);
    monitors_.push_back({peer, link, std::move(pair)});
  }

  void ReadMonitors() {
    for (auto& m : monitors_) {
      for (;;) {
        zmq::message_t event, endpoint;
        try {
          if (!m.socket.recv(event, zmq::recv_flags::dontwait)) break;
          if (event.more()) (void)m.socket.recv(endpoint, zmq::recv_flags::dontwait);
        } catch (const zmq::error_t&) {
          break;
        }
        if (event.size() < sizeof(std::uint16_t)) continue;
        std::uint16_t kind = 0;
        std::memcpy(&kind, event.data(), sizeof kind);
        if (kind == ZMQ_EVENT_CONNECTED || kind == ZMQ_EVENT_DISCONNECTED) {
          events_.push_back({m.peer, m.link, kind == ZMQ_EVENT_CONNECTED});
        }
      }
    }
  }

  static constexpr int kQueueMessages = 16;
  static constexpr std::int64_t kMaxMessageBytes = 64 << 10;

  // ZeroMQ's own pings on every connection, so that one whose peer vanished (power lost, a cut
  // link) is closed after the cluster's loss time rather than kept half-open for ever.
  void SetConnectionHeartbeat(zmq::socket_t& s) const {
    s.set(zmq::sockopt::heartbeat_ivl, static_cast<int>(config_.heartbeat_interval.count()));
    s.set(zmq::sockopt::heartbeat_timeout,
          static_cast<int>(config_.heartbeat_interval.count() * config_.lost_threshold));
  }

  void Accept(failover::LinkIndex link, const std::string& routing_id, const zmq::message_t& body,
              std::vector<ReceivedPeerMessage>* out) {
    auto decoded = DecodePeerMessage({static_cast<const std::uint8_t*>(body.data()), body.size()},
                                     cluster_id_);
    if (!decoded.ok()) return Refuse(link, decoded.status().message());
    // The ZeroMQ identity, the envelope's sender and a member's id must agree, and a heartbeat
    // must arrive on the link it was sent on (else two links are wired to one network).
    if (decoded->from != routing_id || !IsPeer(decoded->from)) {
      return Refuse(link, "from '" + decoded->from + "' (connection '" + routing_id +
                              "'), not a member of this cluster");
    }
    if (decoded->link && *decoded->link != link) {
      return Refuse(link, "a heartbeat sent on link " + std::to_string(*decoded->link) +
                              " arrived on link " + std::to_string(link) +
                              ": are two links wired to one network?");
    }
    ++counters_.received;
    out->push_back({std::move(decoded->from), link, std::move(decoded->message)});
  }

  bool IsPeer(const std::string& id) const {
    return id != config_.id && config_.FindMember(id) != nullptr;
  }

  void Refuse(std::size_t link, const std::string& why) {
    ++counters_.refused;
    // The first ten, then one in a thousand: a flood must not flood the log too.
    if (counters_.refused <= 10 || counters_.refused % 1000 == 0) {
      spdlog::warn("{}: refused on heartbeat link {} ({} refused so far): {}", config_.id,
                   config_.links[link], counters_.refused, why);
    }
  }

  const NodeConfig config_;
  const std::uint64_t cluster_id_;
  zmq::context_t ctx_{1};
  int realtime_priority_ = 0;  // the context's thread's SCHED_FIFO priority; 0: normal class
  std::vector<zmq::socket_t> inbound_;  // one per link
  std::map<std::pair<failover::NodeId, failover::LinkIndex>, zmq::socket_t> outbound_;
  HeartbeatCounters counters_;
  std::vector<MonitorSocket> monitors_;  // one per outgoing connection
  std::vector<ConnectionEvent> events_;
};

HeartbeatTransport::HeartbeatTransport(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HeartbeatTransport::~HeartbeatTransport() = default;

Result<std::unique_ptr<HeartbeatTransport>> HeartbeatTransport::Start(const NodeConfig& config) {
  auto impl = std::make_unique<Impl>(config);
  if (Status st = impl->Start(); !st.ok()) return st;
  return std::unique_ptr<HeartbeatTransport>(new HeartbeatTransport(std::move(impl)));
}

void HeartbeatTransport::Send(const failover::SendMessage& message) {
  impl_->Send(message);
}
std::vector<ReceivedPeerMessage> HeartbeatTransport::Receive(std::chrono::milliseconds timeout,
                                                             int wake_fd) {
  return impl_->Receive(timeout, wake_fd);
}
std::vector<ConnectionEvent> HeartbeatTransport::TakeConnectionEvents() {
  return impl_->TakeConnectionEvents();
}
int HeartbeatTransport::realtime_priority() const {
  return impl_->realtime_priority();
}

HeartbeatCounters HeartbeatTransport::counters() const {
  return impl_->counters();
}

}  // namespace statesync::node
