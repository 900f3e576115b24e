#include "statesync/node/node.h"

#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <cctype>
#include <ctime>
#include <deque>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "answers.h"
#include "data_plane.h"
#include "statesync/common/pi_mutex.h"
#include "statesync/failover/core.h"
#include "statesync/node/control.h"
#include "statesync/node/data_dir.h"
#include "statesync/node/heartbeat_transport.h"
#include "statesync/node/monitors.h"
#include "statesync/node/takeover_hook.h"
#include "statesync/replication/io_scheduling.h"

namespace statesync::node {

namespace json = boost::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using failover::Action;
using failover::Actions;
using failover::EffectiveRole;
using failover::Instant;

namespace {

constexpr auto kTickInterval = 10ms;
constexpr std::size_t kEventsKept = 2000;

// "primary", "hold_off": the effective role as the control socket reports it.
std::string RoleWord(EffectiveRole role) {
  std::string word(failover::RoleName(role));
  for (char& c : word) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return word;
}

std::string UtcNow() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t secs = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[48];
  std::snprintf(out, sizeof out, "%s.%03dZ", buf, static_cast<int>(ms.count()));
  return out;
}

// A key as text when it is printable, else as hex.
std::string ShowKey(std::string_view key) {
  const bool printable = std::all_of(key.begin(), key.end(), [](char c) {
    return std::isprint(static_cast<unsigned char>(c)) != 0;
  });
  if (printable && !key.empty()) return std::string(key);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex = "0x";
  for (unsigned char c : key) {
    hex += kHex[c >> 4];
    hex += kHex[c & 15];
  }
  return hex;
}

// The inverse of ShowKey.
std::string ParseKey(const std::string& text) {
  if (text.size() < 2 || text.rfind("0x", 0) != 0 || text.size() % 2 != 0) return text;
  std::string key;
  for (std::size_t i = 2; i + 1 < text.size(); i += 2) {
    const auto nibble = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    const int hi = nibble(text[i]);
    const int lo = nibble(text[i + 1]);
    if (hi < 0 || lo < 0) return text;
    key += static_cast<char>(hi * 16 + lo);
  }
  return key;
}

}  // namespace

class Node::Impl {
 public:
  explicit Impl(NodeConfig config) : config_(std::move(config)), origin_(Clock::now()) {}
  // The components first: they may still report (post) while they stop, and the queue they
  // post to is declared after them.
  ~Impl() {
    control_.reset();
    remote_monitor_.reset();
    hook_.reset();
    data_plane_.reset();
    transport_.reset();
  }

  Status Open() {
    auto dir = DataDir::Open(config_.data_dir);
    if (!dir.ok()) return dir.status();
    data_dir_ = std::move(dir).value();
    auto durable = data_dir_->LoadState();
    if (!durable.ok()) return durable.status();
    if (auto recent = data_dir_->RecentEvents(kEventsKept); recent.ok()) {
      for (auto& e : recent.value()) events_.push_back({++event_seq_, std::move(e)});
    }
    auto transport = HeartbeatTransport::Start(config_);
    if (!transport.ok()) return transport.status();
    transport_ = std::move(transport).value();
    if (transport_->realtime_priority() == 0 &&
        config_.heartbeat_realtime_priority != replication::kIoNormalClass &&
        config_.io_realtime_priority != replication::kIoNormalClass) {
      // Where the heartbeat path could not take its realtime class, a realtime stream would
      // hold the cores from it: the stream keeps the normal class too.
      spdlog::warn(
          "the stream's I/O threads keep the normal scheduling class as well: the heartbeat "
          "path runs in it, and must not run below them");
      config_.io_realtime_priority = replication::kIoNormalClass;
    }
    auto plane =
        DataPlane::Start(config_, data_dir_->StorePath(),
                         [this](const replication::ReplicationEvent& e) { OnReplicationEvent(e); });
    if (!plane.ok()) return plane.status();
    data_plane_ = std::move(plane).value();
    const DataPlaneStatus loaded = data_plane_->status();
    std::string reconciled;
    durable = failover::ReconcileWithStore(config_.ToClusterConfig(), durable.value(),
                                           std::max(loaded.applied, loaded.persisted), &reconciled);
    if (!reconciled.empty()) spdlog::warn("{}", reconciled);
    std::random_device seed;
    core_ = std::make_unique<failover::FailoverCore>(
        config_.ToClusterConfig(), durable.value(),
        [rng = std::mt19937_64(seed())]() mutable { return rng(); });
    // The links' first states before the first heartbeat: they rank this node from the start.
    link_monitor_ = std::make_unique<LinkMonitor>(config_.monitored_links);
    PollLinks();
    remote_monitor_ = std::make_unique<RemoteMonitor>(config_, [this](RemoteMonitor::Round r) {
      Post([this, r = std::move(r)] { OnRemoteChecks(r); });
    });
    hook_ = std::make_unique<TakeoverHook>(
        config_.takeover_hook,
        std::chrono::duration_cast<std::chrono::milliseconds>(config_.hook_timeout),
        [this](const HookResult& r) { OnHookResult(r); });
    auto control = ControlServer::Start(
        config_.ControlSocket(),
        [this](const std::string& request, ControlConnection& c) { HandleControl(request, c); });
    if (!control.ok()) return control.status();
    control_ = std::move(control).value();
    spdlog::info("node {} of cluster '{}': epoch {}, last role {}, control socket {}, ingest {}",
                 config_.id, config_.cluster, durable.value().epoch,
                 failover::RoleName(durable.value().role), config_.ControlSocket().string(),
                 data_plane_->ingest_endpoint());
    return Status::Ok();
  }

  Status Run() {
    EnterHeartbeatClass();
    auto next_tick = Clock::now();
    while (failure_.ok()) {
      if (stop_requested_) {
        Shutdown();
        break;
      }
      const auto wait = std::clamp(
          std::chrono::duration_cast<std::chrono::milliseconds>(next_tick - Clock::now()), 0ms,
          kTickInterval);
      for (auto& m : transport_->Receive(wait, wake_fd_)) {
        Execute(core_->Receive(Now(), m.from, m.link, m.message));
      }
      for (const auto& e : transport_->TakeConnectionEvents()) {
        spdlog::debug("connection to {} on link {} {}", e.peer, e.link, e.up ? "open" : "closed");
        Execute(core_->ConnectionChanged(Now(), e.peer, e.link, e.up));
      }
      RunPosted();
      CheckReleaseWait();
      if (Clock::now() >= next_tick) {
        ReportProgress();
        if (Clock::now() - links_polled_ >= config_.heartbeat_interval) PollLinks();
        Execute(core_->Tick(Now()));
        AimRemoteChecks();
        if (Status synced = data_dir_->BackgroundSyncError(); !synced.ok() && failure_.ok()) {
          spdlog::critical("cannot save the HA state: {}", synced.ToString());
          failure_ = synced;
        }
        next_tick += kTickInterval;
        if (next_tick < Clock::now()) next_tick = Clock::now() + kTickInterval;
      }
    }
    if (!failure_.ok()) {
      ReleaseHeldSends();
      // The node cannot go on (its HA state cannot be saved): whatever it served, it stops
      // taking writes and gives the service address up before anything else.
      data_plane_->Serve(false);
      if (core_->role() == EffectiveRole::kPrimary) hook_->Run("demote", core_->epoch());
    }
    Teardown();
    return failure_;
  }

  void RequestStop(bool planned, std::chrono::milliseconds holdoff) {
    planned_stop_ = planned;
    stop_holdoff_ = holdoff;
    stop_requested_ = true;
  }

 private:
  Instant Now() const { return std::chrono::duration_cast<Instant>(Clock::now() - origin_); }

  // The event loop sends the heartbeats: it runs in the heartbeat links' class, above the
  // stream's I/O threads, which would otherwise hold the cores while the stream is busy (a
  // primary stalled for 340 ms under load was replaced). What it starts (the hook's and the
  // checks' commands, threads) begins in the normal class.
  void EnterHeartbeatClass() {
    const int priority = transport_->realtime_priority();
    if (priority > 0) {
      if (!replication::EnterRealtime(priority, /*reset_on_fork=*/true)) {
        spdlog::warn(
            "the event loop keeps the normal scheduling class: SCHED_FIFO at {} is "
            "refused although the heartbeat links' thread took it",
            priority);
      }
    } else if (config_.heartbeat_realtime_priority == replication::kIoNormalClass &&
               config_.io_realtime_priority != replication::kIoNormalClass) {
      spdlog::warn(
          "heartbeat_realtime_priority is 0 while the stream's I/O threads run in SCHED_FIFO "
          "where permitted: a busy stream can delay the heartbeats and cause false failovers");
    }
  }

  void ReportProgress() {
    const DataPlaneStatus s = data_plane_->status();
    // What the node holds durably ranks it in elections: a promotion applies all of it.
    const Position held = std::max(s.applied, s.persisted);
    if (held != reported_applied_ || s.in_sync != reported_in_sync_) {
      spdlog::debug("replication at {}{}", ToString(held), s.in_sync ? ", in sync" : "");
      reported_applied_ = held;
      reported_in_sync_ = s.in_sync;
      Execute(core_->ReplicationProgress(Now(), held, s.in_sync));
    }
  }

  // ---- monitors ----

  void PollLinks() {
    links_polled_ = Clock::now();
    for (const LinkState& l : link_monitor_->Poll()) {
      spdlog::info("monitored link {} {}", l.name, l.up ? "up" : "down");
      Execute(core_->MonitorChanged(Now(), l.name, l.up));
    }
  }

  // Remote service monitoring aims at the primary this secondary follows; a FAILED node aims
  // at the peer that claims the primary role, or else at the first data peer, to see when its
  // network is back.
  void AimRemoteChecks() {
    if (config_.remote_checks.empty()) return;
    const std::string peer = RemoteCheckTarget();
    const MemberConfig* member = config_.FindMember(peer);
    const std::string host = member != nullptr ? member->ServiceAddress() : "";
    if (last_remote_round_ && last_remote_round_->peer != peer) last_remote_round_.reset();
    remote_monitor_->SetTarget(host.empty() ? "" : peer, host);
  }

  std::string RemoteCheckTarget() const {
    std::string peer;
    const EffectiveRole role = core_->role();
    if (role == EffectiveRole::kSecondary) {
      peer = core_->primary();
    } else if (role == EffectiveRole::kFailed) {
      for (const auto& v : core_->peers()) {
        if (v.member.role == failover::ConfiguredRole::kWitness) continue;
        const bool claims = v.alive && v.last && v.last->role == EffectiveRole::kPrimary;
        if (claims || peer.empty()) peer = v.member.id;
        if (claims) break;
      }
    }
    if (peer == config_.id) peer.clear();
    return peer;
  }

  void OnRemoteChecks(const RemoteMonitor::Round& r) {
    std::string summary;
    for (const ProbeResult& p : r.probes) {
      summary += (summary.empty() ? "" : "; ") + p.name + ": " + p.detail;
    }
    spdlog::debug("remote checks of {} at {}: {}", r.peer, r.host, summary);
    if (r.peer != RemoteCheckTarget()) {
      // Posted before the role or the primary changed: what it says about the previous target
      // must not fail the current one (a crashed primary's services fail as its successor
      // takes over).
      return;
    }
    last_remote_round_ = r;
    Execute(core_->RemoteChecks(Now(), r.checks));
  }

  // ---- carrying out the core's decisions ----

  void Execute(const Actions& actions) {
    if (std::any_of(actions.begin(), actions.end(), [](const Action& a) {
          return std::holds_alternative<failover::ReleaseService>(a);
        })) {
      // The step-down comes before ReleaseService in the batch (the core announces its new
      // role at once): from it on, messages wait for the data plane to say where the writes
      // stopped (ReleaseService below).
      released_.reset();
      release_pending_ = {core_->epoch(), Clock::now() + ReleaseWait()};
    }
    for (const Action& action : actions) {
      if (!failure_.ok()) return;
      std::visit([this](const auto& a) { Do(a); }, action);
    }
  }

  void Do(const failover::SendMessage& sent) {
    const failover::SendMessage* message = &sent;
    failover::SendMessage patched;
    const auto* control = std::get_if<failover::Control>(&sent.message);
    const bool takeover = control != nullptr && control->kind == failover::ControlKind::kTakeOver;
    if (release_pending_) {
      // A heartbeat saying this node is secondary, ahead of its take-over, had the receiver
      // elect itself from its own (older) position: both wait, in order.
      held_sends_.push_back(sent);
      return;
    }
    if (takeover && released_ && released_->first == control->epoch &&
        control->final_position < released_->second) {
      // The take-over names the last record this node took, so that the new primary waits for
      // it (ReleaseService above).
      patched = sent;
      std::get<failover::Control>(patched.message).final_position = released_->second;
      message = &patched;
      spdlog::info("take-over to {}: final position {} (the core's was {})", sent.to,
                   ToString(released_->second), ToString(control->final_position));
    }
    const failover::SendMessage& m = *message;
    if (spdlog::should_log(spdlog::level::debug)) {
      std::visit(
          [&](const auto& msg) {
            using M = std::decay_t<decltype(msg)>;
            if constexpr (std::is_same_v<M, failover::Heartbeat>) {
              spdlog::debug("send heartbeat to {} link {}: {} epoch {} at {} following '{}'", m.to,
                            m.link ? std::to_string(*m.link) : "all", RoleWord(msg.role), msg.epoch,
                            ToString(msg.applied), msg.following);
            } else if constexpr (std::is_same_v<M, failover::VoteRequest>) {
              spdlog::debug("send vote request to {}: epoch {} at {}", m.to, msg.epoch,
                            ToString(msg.applied));
            } else if constexpr (std::is_same_v<M, failover::Vote>) {
              spdlog::debug("send vote to {}: epoch {} {} {}", m.to, msg.epoch,
                            msg.granted ? "granted" : "refused", msg.why_not);
            } else {
              spdlog::debug("send control to {}: {}", m.to, msg.reason);
            }
          },
          m.message);
    }
    transport_->Send(m);
  }

  void Do(const failover::PersistState& p) {
    const auto started = Clock::now();
    // Synced unless the core says the disk holds what a power loss must keep (a lone
    // promotion into a reserved epoch): a vote or an epoch forgotten in a power loss could elect
    // two primaries in one round. Two slots overwritten in place make it one fdatasync, 1-5 ms
    // on an idle disk, 100-300 ms while the store flushes much (docs/BENCHMARKS.md).
    const Status st = data_dir_->SaveState(p.state, p.sync);
    const auto took =
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started).count();
    if (p.sync) {
      spdlog::debug("HA state saved in {} us", took);
    } else {
      spdlog::info("HA state saved in {} us, synced in the background (epoch {} was reserved)",
                   took, p.state.epoch);
    }
    if (!st.ok()) {
      // Going on would let the node act in an epoch it might forget: stop instead.
      spdlog::critical("cannot save the HA state: {}", st.ToString());
      failure_ = st;
    }
  }

  void Do(const failover::RoleChange& r) {
    spdlog::warn("{}", r.AlertText());
    json::object e = Event("role_change");
    e["from"] = RoleWord(r.from);
    e["to"] = RoleWord(r.to);
    e["epoch"] = r.epoch;
    e["reason"] = r.reason;
    e["text"] = r.AlertText();
    AddEvent(std::move(e));
    if (r.to == EffectiveRole::kPrimary) promoted_at_ = Clock::now();
  }

  void Do(const failover::Alert& a) {
    spdlog::warn("alert: {}", a.text);
    json::object e = Event("alert");
    e["text"] = a.text;
    AddEvent(std::move(e));
  }

  void Do(const failover::AwaitState& a) {
    const Epoch epoch = core_->epoch();
    data_plane_->Promote(epoch, a.up_to, [this](Epoch e, Position applied, const Status& st) {
      Post([this, e, applied, st] { OnPromoted(e, applied, st); });
    });
  }

  void OnPromoted(Epoch epoch, Position applied, const Status& st) {
    if (core_->epoch() != epoch || core_->role() != EffectiveRole::kPrimary ||
        !core_->awaiting_state()) {
      return;  // the core moved on meanwhile; a later action changed what the data plane does
    }
    if (!st.ok()) {
      Do(failover::Alert{"promotion in epoch " + std::to_string(epoch) +
                         " failed: " + st.ToString()});
      Execute(core_->Command(Now(), failover::OperatorCommand::kSetSecondary));
      return;
    }
    const auto took =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - promoted_at_);
    spdlog::info("state applied up to {} in {} ms", ToString(applied), took.count());
    Execute(core_->StateApplied(Now(), applied));
  }

  void Do(const failover::ClaimService& c) {
    data_plane_->Serve(true);
    json::object e = Event("ready");
    e["epoch"] = c.epoch;
    e["text"] = "ready to serve in epoch " + std::to_string(c.epoch);
    AddEvent(std::move(e));
    hook_->Run("promote", c.epoch);
  }

  void Do(const failover::ReleaseService&) {
    // Where the writes stopped, for a take-over that follows: the core's position is the one
    // last reported (up to 10 ms old), and records taken since would not be carried over. The
    // data thread says so within a pass of its loop (2 ms); the messages to the peers wait for
    // it (Execute; the loop goes on), at most ReleaseWait().
    const Epoch epoch = core_->epoch();
    data_plane_->StopServing([this, epoch](Position stopped) {
      Post([this, epoch, stopped] {
        if (!release_pending_ || release_pending_->first != epoch) return;
        released_ = {epoch, stopped};
        ReleaseHeldSends();
      });
    });
    hook_->Run("demote", epoch);
  }

  // Half the loss time: the peers hear nothing from this node while a take-over is held, and
  // must not take that for a failure (a sanitizer build's data thread was seen to answer only
  // after 48 ms).
  std::chrono::milliseconds ReleaseWait() const {
    return config_.heartbeat_interval * config_.lost_threshold / 2;
  }

  // A take-over held for the position where the writes stopped goes out with the core's own
  // when the data plane has not said within ReleaseWait(); and so do the node's last messages
  // when it stops (Shutdown, a failure).
  void CheckReleaseWait() {
    if (!release_pending_ || Clock::now() < release_pending_->second) return;
    spdlog::warn(
        "the data plane did not say where the writes stopped within {} ms: a take-over "
        "carries the position last reported",
        ReleaseWait().count());
    ReleaseHeldSends();
  }

  // What was held goes out in order (a take-over with the stopped position, when known).
  void ReleaseHeldSends() {
    release_pending_.reset();
    std::vector<failover::SendMessage> held;
    held.swap(held_sends_);
    for (const auto& m : held) Do(m);
  }

  void Do(const failover::Follow& f) {
    if (f.primary.empty() || f.primary == config_.id) return;
    const MemberConfig* m = config_.FindMember(f.primary);
    if (m == nullptr || m->replication.empty()) return;  // a witness holds no data
    data_plane_->Follow(m->id, m->replication);
  }

  void Do(const failover::Quarantine& q) {
    // The subordinate quarantines the divergent tail itself when the winner's FORK arrives.
    json::object e = Event("quarantine");
    e["epoch"] = q.epoch;
    e["text"] = "writes of epoch " + std::to_string(q.epoch) +
                " after the fork point go to the quarantine when this node rejoins";
    AddEvent(std::move(e));
  }

  // ---- work from other threads, run on the loop ----

  void Post(std::function<void()> task) {
    {
      std::lock_guard lock(posted_mu_);
      posted_.push_back(std::move(task));
    }
    // Wakes the loop from its wait for heartbeats: a promotion's result must not wait for the
    // next tick.
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
  }

  void RunPosted() {
    // The wake-up is taken before the queue: one posted after the swap wakes the next wait.
    std::uint64_t count = 0;
    [[maybe_unused]] auto n = ::read(wake_fd_, &count, sizeof count);
    std::deque<std::function<void()>> tasks;
    {
      std::lock_guard lock(posted_mu_);
      tasks.swap(posted_);
    }
    for (auto& t : tasks) t();
  }

  // Runs `fn` on the loop and waits for its answer (or an error when the loop is gone).
  std::string OnLoop(std::function<std::string()> fn) {
    auto promise = std::make_shared<std::promise<std::string>>();
    auto future = promise->get_future();
    Post([promise, fn = std::move(fn)] { promise->set_value(fn()); });
    if (future.wait_for(5s) != std::future_status::ready) {
      return ErrorAnswer("the node's event loop did not answer within 5 s");
    }
    return future.get();
  }

  void OnReplicationEvent(const replication::ReplicationEvent& r) {
    // Refused input can come thousands of times a second (a stale primary's peers acking, a
    // stranger on the port): the event log takes one a second per kind and peer, with the
    // number left out, so that it costs the loop nothing and keeps its history.
    std::uint64_t left_out = 0;
    {
      std::lock_guard lock(event_rate_mu_);
      auto& slot = event_rate_[{static_cast<int>(r.kind), r.peer}];
      const auto now = Clock::now();
      if (now - slot.first < 1s) {
        ++slot.second;
        return;
      }
      left_out = slot.second;
      slot = {now, 0};
    }
    Post([this, r, left_out] {
      // The adapter has logged it already.
      json::object e = Event("replication");
      e["kind"] = replication::EventKindName(r.kind);
      if (!r.peer.empty()) e["peer"] = r.peer;
      e["text"] = r.text;
      if (left_out > 0) e["similar_left_out"] = left_out;
      AddEvent(std::move(e));
    });
  }

  void OnHookResult(const HookResult& r) {
    Post([this, r] {
      json::object e = Event("hook");
      e["hook_event"] = r.event;
      e["epoch"] = r.epoch;
      e["exit_code"] = r.exit_code;
      e["timed_out"] = r.timed_out;
      e["duration_ms"] = r.duration.count();
      if (!r.error.empty()) e["error"] = r.error;
      e["output"] = r.output;
      e["text"] = "takeover hook '" + r.event + "' " + (r.ok() ? "succeeded" : "failed") + " in " +
                  std::to_string(r.duration.count()) + " ms";
      if (r.ok()) {
        spdlog::info("{}", json::value_to<std::string>(e["text"]));
      } else {
        spdlog::error("{}: exit {}{}{} {}", json::value_to<std::string>(e["text"]), r.exit_code,
                      r.timed_out ? ", timed out" : "", r.error.empty() ? "" : ", " + r.error,
                      r.output);
      }
      AddEvent(std::move(e));
    });
  }

  // ---- the HA event log ----

  json::object Event(std::string_view type) const {
    json::object e;
    e["time"] = UtcNow();
    e["node"] = config_.id;
    e["type"] = type;
    return e;
  }

  void AddEvent(json::object e) {
    e["role"] = RoleWord(core_->role());
    std::string line = json::serialize(e);
    if (Status st = data_dir_->AppendEvent(line); !st.ok()) {
      spdlog::warn("event log: {}", st.ToString());
    }
    std::lock_guard lock(events_mu_);
    events_.push_back({++event_seq_, std::move(line)});
    while (events_.size() > kEventsKept) events_.pop_front();
  }

  // ---- the control socket ----

  void HandleControl(const std::string& line, ControlConnection& c) {
    json::object request;
    try {
      json::value v = json::parse(line);
      if (!v.is_object()) throw std::invalid_argument("not an object");
      request = std::move(v.as_object());
    } catch (const std::exception& e) {
      c.Send(ErrorAnswer(std::string("a request is one JSON object: ") + e.what()));
      return;
    }
    const json::value* command = request.if_contains("command");
    if (command == nullptr || !command->is_string()) {
      c.Send(ErrorAnswer("the request names no \"command\""));
      return;
    }
    const std::string name(command->as_string());
    if (name == "status") {
      c.Send(OnLoop([this] { return json::serialize(StatusJson()); }));
    } else if (name == "digest") {
      c.Send(TableQuery([](const SessionTable& t, const Store& s) { return DigestJson(t, s); }));
    } else if (name == "sessions") {
      c.Send(Sessions(request));
    } else if (name == "events") {
      StreamEvents(request, c);
    } else if (name == "set-role" || name == "takeover" || name == "restore-role") {
      c.Send(RoleCommand(name, request));
    } else if (name == "holdoff") {
      std::int64_t seconds = 0;
      if (const auto* s = request.if_contains("seconds"); s != nullptr && s->is_int64()) {
        seconds = s->as_int64();
      }
      if (seconds < 0) {
        c.Send(ErrorAnswer("holdoff: --seconds must be 0 (the cluster's holdoff_max) or more"));
        return;
      }
      RequestStop(true, std::chrono::seconds(seconds));
      json::object o;
      o["ok"] = true;
      o["text"] = "planned restart: peers are told to hold off, then " + config_.id + " stops";
      c.Send(json::serialize(o));
    } else if (name == "stop") {
      RequestStop(false, 0ms);
      c.Send(R"({"ok":true,"text":"stopping"})");
    } else {
      c.Send(ErrorAnswer("unknown command '" + name +
                         "' (status, digest, sessions, events, set-role, takeover, restore-role, "
                         "holdoff, stop)"));
    }
  }

  // `fn` takes the table, or the table and the store.
  template <typename Fn>
  std::string TableQuery(Fn fn) {
    auto answer = data_plane_->Query(std::move(fn));
    if (answer.wait_for(30s) != std::future_status::ready) {
      return ErrorAnswer("the data plane did not answer within 30 s");
    }
    try {
      return answer.get();
    } catch (const std::future_error&) {
      return ErrorAnswer("the node is stopping");
    }
  }

  // The records of every table, and the voice-data blobs whole (by id and checksum): equal on
  // two nodes that hold the same data.
  static std::string DigestJson(const SessionTable& t, const Store& store) {
    XXH3_state_t* state = XXH3_createState();
    XXH3_64bits_reset(state);
    std::uint64_t records = 0;
    json::object tables;
    auto ids = t.tables();
    std::sort(ids.begin(), ids.end());
    for (TableId id : ids) {
      const TableDigest d = t.Digest(id);
      if (d.records == 0) continue;
      const std::uint64_t part[3] = {static_cast<std::uint64_t>(id), d.records, d.sum};
      XXH3_64bits_update(state, part, sizeof part);
      records += d.records;
      tables[TableName(id)] = d.records;
    }
    std::vector<std::pair<std::string, std::uint64_t>> blobs;
    std::uint64_t blob_bytes = 0;
    const Status scanned = store.ScanBlobs([&](const BlobInfo& b) {
      blobs.emplace_back(b.blob_id, b.xxh64);
      blob_bytes += b.size;
    });
    std::sort(blobs.begin(), blobs.end());
    for (const auto& [id, sum] : blobs) {
      XXH3_64bits_update(state, id.data(), id.size());
      XXH3_64bits_update(state, &sum, sizeof sum);
    }
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx",
                  static_cast<unsigned long long>(XXH3_64bits_digest(state)));
    XXH3_freeState(state);
    json::object o;
    o["ok"] = true;
    o["applied_seq"] = t.last_position().seq;
    o["applied_epoch"] = t.last_position().epoch;
    o["records"] = records;
    o["digest"] = hex;
    o["tables"] = std::move(tables);
    o["blobs"] = blobs.size();
    o["blob_bytes"] = blob_bytes;
    if (!scanned.ok()) o["blob_error"] = scanned.ToString();
    return json::serialize(o);
  }

  std::string Sessions(const json::object& request) {
    std::string action = "count";
    if (const auto* a = request.if_contains("action"); a != nullptr && a->is_string()) {
      action = std::string(a->as_string());
    }
    TableId table = TableId::kFwSessions;
    if (const auto* t = request.if_contains("table"); t != nullptr && t->is_string()) {
      auto parsed = ParseTableName(t->as_string());
      if (!parsed) {
        return ErrorAnswer("unknown table '" + std::string(t->as_string()) +
                           "' (fw_sessions, calls, cdrs, blobs, user_N)");
      }
      table = *parsed;
    }
    if (action == "count") {
      return TableQuery([table](const SessionTable& t) {
        json::object o;
        o["ok"] = true;
        json::object tables;
        for (TableId id : t.tables()) tables[TableName(id)] = t.size(id);
        o["table"] = TableName(table);
        o["count"] = t.size(table);
        o["total"] = t.total_size();
        o["tables"] = std::move(tables);
        return json::serialize(o);
      });
    }
    if (action == "list") {
      std::size_t limit = 100;
      if (const auto* l = request.if_contains("limit"); l != nullptr && l->is_int64()) {
        limit = static_cast<std::size_t>(std::clamp<std::int64_t>(l->as_int64(), 0, 100000));
      }
      return TableQuery([table, limit](const SessionTable& t) {
        json::array keys;
        t.Scan(table, [&](std::string_view key, std::string_view value) {
          if (keys.size() >= limit) return;
          json::object k;
          k["key"] = ShowKey(key);
          k["value_bytes"] = value.size();
          keys.push_back(std::move(k));
        });
        json::object o;
        o["ok"] = true;
        o["table"] = TableName(table);
        o["count"] = t.size(table);
        o["records"] = std::move(keys);
        return json::serialize(o);
      });
    }
    if (action == "get") {
      const auto* k = request.if_contains("key");
      if (k == nullptr || !k->is_string()) return ErrorAnswer("sessions get: give a KEY");
      const std::string key = ParseKey(std::string(k->as_string()));
      return TableQuery([table, key](const SessionTable& t) {
        auto value = t.Get(table, key);
        if (!value)
          return ErrorAnswer("no record with key " + ShowKey(key) + " in " + TableName(table));
        json::object o;
        o["ok"] = true;
        o["table"] = TableName(table);
        o["key"] = ShowKey(key);
        o["value_bytes"] = value->size();
        o["value"] = ShowKey(*value);
        return json::serialize(o);
      });
    }
    if (action == "check") {
      // Every record a file lists ("TABLE HEXKEY" a line, as `load --acked-keys` writes) must
      // be here: the check after a failover that no acknowledged record was lost.
      const auto* f = request.if_contains("file");
      if (f == nullptr || !f->is_string()) return ErrorAnswer("sessions check: give a --keys FILE");
      auto keys = ReadKeys(std::string(f->as_string()));
      if (!keys.ok()) return ErrorAnswer(keys.status().message());
      return TableQuery([keys = std::move(keys).value()](const SessionTable& t, const Store& s) {
        return CheckKeys(t, s, keys);
      });
    }
    return ErrorAnswer("sessions: unknown action '" + action + "' (count, list, get, check)");
  }

  struct KeyToCheck {
    TableId table;
    std::string key;
    std::string line;
  };
  // Reads the file on the calling (control) thread: only the lookups hold the table.
  static Result<std::vector<KeyToCheck>> ReadKeys(const std::string& file) {
    std::ifstream in(file);
    if (!in) return Status::NotFound("sessions check: cannot read " + file);
    std::vector<KeyToCheck> keys;
    std::string line;
    std::size_t line_number = 0;
    while (std::getline(in, line)) {
      ++line_number;
      if (line.empty()) continue;
      const auto space = line.find(' ');
      const auto table = space == std::string::npos
                             ? std::nullopt
                             : ParseTableName(std::string_view(line).substr(0, space));
      if (!table) {
        return Status::InvalidArgument("sessions check: " + file + ":" +
                                       std::to_string(line_number) + ": expected 'TABLE HEXKEY'");
      }
      keys.push_back({*table, ParseKey("0x" + line.substr(space + 1)), line});
    }
    return keys;
  }

  // A line of table `blobs` names a voice-data blob by its id: it must be here whole.
  static std::string CheckKeys(const SessionTable& t, const Store& store,
                               const std::vector<KeyToCheck>& keys) {
    std::uint64_t missing = 0;
    json::array first_missing;
    for (const auto& k : keys) {
      bool here = false;
      if (k.table == TableId::kBlobs) {
        BlobInfo info;
        auto blob = store.GetBlob(k.key, &info);
        here = blob.ok() && blob->has_value();
      } else {
        here = t.Get(k.table, k.key).has_value();
      }
      if (!here) {
        ++missing;
        if (first_missing.size() < 10) first_missing.push_back(json::string(k.line));
      }
    }
    json::object o;
    o["ok"] = true;
    o["checked"] = keys.size();
    o["missing"] = missing;
    o["first_missing"] = std::move(first_missing);
    o["applied_seq"] = t.last_position().seq;
    return json::serialize(o);
  }

  void StreamEvents(const json::object& request, ControlConnection& c) {
    bool follow = false;
    std::size_t last = 50;
    if (const auto* f = request.if_contains("follow"); f != nullptr && f->is_bool()) {
      follow = f->as_bool();
    }
    if (const auto* n = request.if_contains("last"); n != nullptr && n->is_int64()) {
      last = static_cast<std::size_t>(std::clamp<std::int64_t>(n->as_int64(), 0, kEventsKept));
    }
    std::uint64_t sent = 0;
    {
      std::unique_lock lock(events_mu_);
      const std::size_t from = events_.size() > last ? events_.size() - last : 0;
      std::vector<std::string> lines;
      for (std::size_t i = from; i < events_.size(); ++i) lines.push_back(events_[i].second);
      sent = event_seq_;
      lock.unlock();
      for (const auto& l : lines) {
        if (!c.Send(l)) return;
      }
    }
    if (!follow) return;
    while (!c.Closed()) {
      std::vector<std::string> lines;
      {
        // Followers look every 50 ms rather than be woken: a condition variable's own lock
        // (not priority-inheriting) would be taken by the realtime loop at every event.
        std::this_thread::sleep_for(50ms);
        std::unique_lock lock(events_mu_);
        for (const auto& [seq, line] : events_) {
          if (seq > sent) lines.push_back(line);
        }
        sent = event_seq_;
      }
      for (const auto& l : lines) {
        if (!c.Send(l)) return;
      }
    }
  }

  std::string RoleCommand(const std::string& name, const json::object& request) {
    failover::OperatorCommand command = failover::OperatorCommand::kSetPrimary;
    if (name == "restore-role") {
      command = failover::OperatorCommand::kRestoreRole;
    } else if (name == "set-role") {
      const auto* r = request.if_contains("role");
      const std::string role = r != nullptr && r->is_string() ? std::string(r->as_string()) : "";
      if (role == "primary") {
        command = failover::OperatorCommand::kSetPrimary;
      } else if (role == "secondary") {
        command = failover::OperatorCommand::kSetSecondary;
      } else if (role == "off") {
        command = failover::OperatorCommand::kSetOff;
      } else {
        return ErrorAnswer("set-role: the role is primary, secondary or off (not '" + role + "')");
      }
    }
    return OnLoop([this, command, name] {
      const EffectiveRole before = core_->role();
      Actions actions = core_->Command(Now(), command);
      json::array alerts;
      for (const Action& a : actions) {
        if (const auto* alert = std::get_if<failover::Alert>(&a))
          alerts.push_back(json::string(alert->text));
      }
      Execute(actions);
      json::object o;
      o["ok"] = true;
      o["command"] = name;
      o["effective_role_before"] = RoleWord(before);
      o["effective_role"] = RoleWord(core_->role());
      o["alerts"] = std::move(alerts);
      return json::serialize(o);
    });
  }

  json::object StatusJson() {
    const DataPlaneStatus d = data_plane_->status();
    json::object o;
    o["ok"] = true;
    o["node_id"] = config_.id;
    o["cluster"] = config_.cluster;
    o["cluster_id"] = config_.ClusterId();
    o["configured_role"] = failover::ConfiguredRoleName(core_->configured_role());
    o["effective_role"] = RoleWord(core_->role());
    o["epoch"] = core_->epoch();
    o["applied_seq"] = d.applied.seq;
    o["applied_epoch"] = d.applied.epoch;
    o["sessions"] = d.sessions;
    o["ready"] = core_->ready();
    o["primary"] = core_->primary();
    o["pid"] = static_cast<std::int64_t>(::getpid());
    o["uptime_ms"] = Now().count();
    o["data_dir"] = config_.data_dir.string();
    o["ingest"] = data_plane_->ingest_endpoint();

    // The head the peers are measured against: ours as primary, else the primary's as heard.
    Seq head = d.applied.seq;
    std::map<std::string, replication::PeerStatus> streamed;
    for (const auto& p : d.peers) streamed[p.node_id] = p;
    const auto views = core_->peers();
    if (core_->role() != EffectiveRole::kPrimary) {
      head = std::max(head, d.primary_head);
      for (const auto& v : views) {
        if (v.member.id == core_->primary() && v.last) head = std::max(head, v.last->applied.seq);
      }
    }
    json::array peers;
    for (const auto& v : views) {
      json::object p;
      p["id"] = v.member.id;
      p["configured_role"] = failover::ConfiguredRoleName(v.member.role);
      p["state"] = v.alive && v.last ? RoleWord(v.last->role) : "lost";
      p["alive"] = v.alive;
      json::array up;
      json::array down;
      for (std::size_t l = 0; l < v.links_up.size() && l < config_.links.size(); ++l) {
        (v.links_up[l] ? up : down).push_back(json::string(config_.links[l]));
      }
      p["links_up"] = std::move(up);
      p["links_down"] = std::move(down);
      if (v.since_heard) p["since_heard_ms"] = v.since_heard->count();
      if (v.last) {
        p["epoch"] = v.last->epoch;
        p["applied_seq"] = v.last->applied.seq;
        p["ready"] = v.last->ready;
        p["monitors_up"] = v.last->monitors_up;
      }
      if (v.member.role != failover::ConfiguredRole::kWitness) {
        if (auto it = streamed.find(v.member.id); it != streamed.end()) {
          const Seq persisted = it->second.persisted.seq;
          p["lag_records"] = head > persisted ? head - persisted : 0;
          if (auto lag = d.peer_lag.find(v.member.id); lag != d.peer_lag.end()) {
            p["lag_ms"] = lag->second.count();
          }
          p["stream"] = it->second.state == replication::PeerStatus::State::kContinue   ? "continue"
                        : it->second.state == replication::PeerStatus::State::kSnapshot ? "snapshot"
                                                                                        : "lost";
        } else if (v.last) {
          p["lag_records"] = head > v.last->applied.seq ? head - v.last->applied.seq : 0;
        }
      }
      peers.push_back(std::move(p));
    }
    o["peers"] = std::move(peers);

    json::array monitors;
    for (const LinkState& l : link_monitor_->Current()) {
      json::object m;
      m["name"] = l.name;
      m["kind"] = "link";
      m["up"] = l.up;
      monitors.push_back(std::move(m));
    }
    o["monitors"] = std::move(monitors);
    if (!config_.remote_checks.empty()) {
      json::object remote;
      remote["target"] = last_remote_round_ ? last_remote_round_->peer : "";
      json::array checks;
      if (last_remote_round_) {
        for (std::size_t i = 0; i < last_remote_round_->checks.size(); ++i) {
          json::object c;
          c["name"] = last_remote_round_->checks[i].name;
          c["state"] = failover::ServiceStateName(last_remote_round_->checks[i].state);
          c["detail"] = last_remote_round_->probes[i].detail;
          checks.push_back(std::move(c));
        }
      }
      remote["checks"] = std::move(checks);
      o["remote_checks"] = std::move(remote);
    }

    json::object sync;
    if (core_->role() == EffectiveRole::kPrimary) {
      sync["state"] = "in_sync";
      sync["progress"] = 1.0;
    } else if (d.mode == DataPlaneStatus::Mode::kSubordinate) {
      sync["state"] = replication::SyncStateName(d.sync);
      sync["progress"] = d.in_sync ? 1.0 : d.progress.fraction;
      sync["following"] = d.following;
      sync["lag_records"] = head > d.applied.seq ? head - d.applied.seq : 0;
      sync["records_done"] = d.progress.records_done;
      sync["records_total"] = d.progress.records_total;
      sync["records_per_second"] = d.progress.records_per_second;
      sync["eta_s"] = d.progress.eta_seconds;
    } else {
      sync["state"] = "disconnected";
      sync["progress"] = 0.0;
    }
    o["sync"] = std::move(sync);

    json::object repl;
    repl["mode"] = DataPlaneModeName(d.mode);
    repl["serving"] = d.serving;
    repl["persisted_seq"] = d.persisted.seq;
    repl["snapshots"] = d.snapshots;
    repl["forks"] = d.forks;
    repl["ingest_batches"] = d.ingest_batches;
    repl["ingest_records"] = d.ingest_records;
    repl["ingest_refused"] = d.ingest_refused;
    repl["ingest_busy"] = d.ingest_busy;
    o["replication"] = std::move(repl);

    const HeartbeatCounters h = transport_->counters();
    json::object hb;
    hb["sent"] = h.sent;
    hb["dropped"] = h.dropped;
    hb["received"] = h.received;
    hb["refused"] = h.refused;
    o["heartbeat"] = std::move(hb);
    return o;
  }

  // ---- stopping ----

  void Shutdown() {
    const Actions actions =
        planned_stop_
            ? core_->Command(Now(), failover::OperatorCommand::kPlannedRestart, stop_holdoff_)
            : core_->Command(Now(), failover::OperatorCommand::kShutdown);
    Execute(actions);
    ReleaseHeldSends();
    // Let the hold-off reach the peers before the sockets close (sends are queued, not
    // lingered).
    std::this_thread::sleep_for(50ms);
  }

  void Teardown() {
    control_.reset();
    hook_->Drain();  // a demote queued by the stop runs (each run up to its limit)
    hook_.reset();
    data_plane_->Stop();
    transport_.reset();
    spdlog::info("node {} stopped", config_.id);
  }

  // An eventfd that Post() makes readable. First of the members, so closed last: the
  // components below may still post while they are destroyed.
  struct EventFd {
    EventFd() : fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
    ~EventFd() {
      if (fd >= 0) ::close(fd);
    }
    EventFd(const EventFd&) = delete;
    EventFd& operator=(const EventFd&) = delete;
    const int fd;
  } wake_;
  const int wake_fd_ = wake_.fd;
  NodeConfig config_;
  const Clock::time_point origin_;
  std::unique_ptr<DataDir> data_dir_;
  std::unique_ptr<DataPlane> data_plane_;
  std::unique_ptr<HeartbeatTransport> transport_;
  std::unique_ptr<failover::FailoverCore> core_;
  std::unique_ptr<TakeoverHook> hook_;
  std::unique_ptr<LinkMonitor> link_monitor_;
  std::unique_ptr<RemoteMonitor> remote_monitor_;
  std::unique_ptr<ControlServer> control_;
  Status failure_ = Status::Ok();

  Position reported_applied_;
  bool reported_in_sync_ = false;
  Clock::time_point promoted_at_;
  // The epoch the service was last released in, and the last position written in it; while
  // the data plane has not said, the epoch and how long take-overs are held for it.
  std::optional<std::pair<Epoch, Position>> released_;
  std::optional<std::pair<Epoch, Clock::time_point>> release_pending_;
  std::vector<failover::SendMessage> held_sends_;  // while release_pending_
  Clock::time_point links_polled_;
  std::optional<RemoteMonitor::Round> last_remote_round_;

  std::atomic<bool> stop_requested_{false};
  std::atomic<bool> planned_stop_{false};
  std::chrono::milliseconds stop_holdoff_{0};

  // The loop runs in SCHED_FIFO where permitted, and shares these with normal-class threads:
  // a holder preempted inside its section must not keep the loop (and the heartbeats) waiting.
  PriorityInheritanceMutex event_rate_mu_;
  std::map<std::pair<int, std::string>, std::pair<Clock::time_point, std::uint64_t>> event_rate_;

  PriorityInheritanceMutex posted_mu_;
  std::deque<std::function<void()>> posted_;

  PriorityInheritanceMutex events_mu_;
  std::deque<std::pair<std::uint64_t, std::string>> events_;
  std::uint64_t event_seq_ = 0;
};

Result<std::unique_ptr<Node>> Node::Open(NodeConfig config) {
  auto impl = std::make_unique<Impl>(std::move(config));
  if (Status st = impl->Open(); !st.ok()) return st;
  return std::unique_ptr<Node>(new Node(std::move(impl)));
}

Node::Node(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Node::~Node() = default;

Status Node::Run() {
  return impl_->Run();
}

void Node::RequestStop(bool planned, std::chrono::milliseconds holdoff) {
  impl_->RequestStop(planned, holdoff);
}

}  // namespace statesync::node
