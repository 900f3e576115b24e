#include "statesync/replication/subordinate.h"

#include <xxhash.h>

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <thread>

#include "statesync/common/idle_class.h"
#include "statesync/replication/messages.h"
#include "zmq_util.h"

namespace statesync::replication {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

}  // namespace

std::string_view SyncStateName(SyncState s) {
  switch (s) {
    case SyncState::kConnecting:
      return "disconnected";
    case SyncState::kCatchingUp:
      return "catching_up";
    case SyncState::kSnapshot:
      return "snapshot";
    case SyncState::kInSync:
      return "in_sync";
  }
  return "unknown";
}

std::string_view EventKindName(ReplicationEvent::Kind kind) {
  switch (kind) {
    case ReplicationEvent::Kind::kPeerJoined:
      return "peer_joined";
    case ReplicationEvent::Kind::kPeerLost:
      return "peer_lost";
    case ReplicationEvent::Kind::kSyncTimeout:
      return "sync_timeout";
    case ReplicationEvent::Kind::kSnapshotStarted:
      return "snapshot_started";
    case ReplicationEvent::Kind::kSnapshotFinished:
      return "snapshot_finished";
    case ReplicationEvent::Kind::kFork:
      return "fork";
    case ReplicationEvent::Kind::kBadInput:
      return "bad_input";
    case ReplicationEvent::Kind::kBlobCorrupt:
      return "blob_corrupt";
    case ReplicationEvent::Kind::kCaughtUp:
      return "caught_up";
  }
  return "unknown";
}

Status ValidateDelta(const DeltaView& d) {
  const auto id = static_cast<std::uint16_t>(d.table);
  const bool known = (id >= static_cast<std::uint16_t>(TableId::kFwSessions) &&
                      id <= static_cast<std::uint16_t>(TableId::kBlobs)) ||
                     IsUserTable(d.table);
  if (!known) return Status::InvalidArgument("unknown table id " + std::to_string(id));
  if (d.key.empty()) return Status::InvalidArgument("a delta without a key");
  if (d.table == TableId::kFwSessions) {
    Tuple orig;
    std::uint16_t zone = 0;
    if (Status st = ParseFirewallKey(d.key, &orig, &zone); !st.ok()) return st;
    if (d.kind != DeltaKind::kUpsert) return Status::Ok();
    auto s = DecodeFirewallSession(wire::AsBytes(d.value));
    if (!s.ok()) return s.status();
    if (s->orig != orig || s->zone != zone) {
      return Status::InvalidArgument("a firewall session whose key does not match its tuple");
    }
    return Status::Ok();
  }
  if (d.kind != DeltaKind::kUpsert) return Status::Ok();
  return VerifyValue(d.table, d.value);
}

class Subordinate::Impl {
 public:
  Impl(SubordinateOptions options, Store& store, std::unique_ptr<SessionTable> table)
      : o_(std::move(options)), store_(store), table_(std::move(table)) {}
  ~Impl() { Stop(); }

  Status Start() {
    if (!table_ || table_->writable()) {
      return Status::FailedPrecondition("a subordinate needs a read-only table");
    }
    if (table_->last_position() != store_.applied()) {
      return Status::FailedPrecondition("the table is at " + ToString(table_->last_position()) +
                                        " but the store at " + ToString(store_.applied()) +
                                        ": load the table from the store first");
    }
    const auto history = store_.history();
    newest_epoch_ = history.empty() ? store_.applied().epoch : history.back().epoch;
    applied_ = store_.applied();
    {
      std::lock_guard lock(status_mu_);
      status_.applied = applied_;
      status_.newest_epoch = newest_epoch_;
      status_.blob_cursor = store_.blob_cursor();
    }
    auto realtime = detail::SetUpRealtime(ctx_, o_.io_realtime_priority, o_.node_id);
    if (!realtime.ok()) return realtime.status();
    realtime_priority_ = *realtime;
    std::random_device rd;
    session_ = (static_cast<std::uint64_t>(rd()) << 32) | rd();
    first_session_ = session_ + 1;  // SendHello counts the first one
    table_position_ = applied_;
    applier_ = std::thread([this] { ApplyLoop(); });
    blob_thread_ = std::thread([this] { BlobLoop(); });
    thread_ = std::thread([this] { Run(); });
    return Status::Ok();
  }

  void Read(const std::function<void(const SessionTable&)>& fn) const {
    std::lock_guard lock(table_mu_);
    fn(*table_);
  }

  SubordinateStatus status() const {
    std::lock_guard lock(status_mu_);
    return status_;
  }

  std::unique_ptr<SessionTable> Stop() {
    if (thread_.joinable()) {
      stop_ = true;
      waker_.Signal();
      thread_.join();
    }
    if (blob_thread_.joinable()) {
      {
        std::lock_guard lock(blob_queue_mu_);
        blob_stop_ = true;
      }
      blob_queue_cv_.notify_all();
      blob_thread_.join();
    }
    if (applier_.joinable()) {
      {
        std::lock_guard lock(apply_mu_);
        apply_stop_ = true;
      }
      apply_cv_.notify_all();
      applier_.join();  // after applying what was queued: the table matches the store
    }
    std::lock_guard lock(table_mu_);
    return std::move(table_);
  }

 private:
  void Run() {
    pthread_setname_np(pthread_self(), "ss-follow-io");
    if (realtime_priority_ > 0) EnterRealtime(realtime_priority_);
    header_ = {o_.cluster_id, o_.node_id, newest_epoch_};
    SendHello();
    while (!stop_) {
      zmq::pollitem_t items[] = {{dealer_.handle(), 0, ZMQ_POLLIN, 0},
                                 {nullptr, waker_.fd(), ZMQ_POLLIN, 0}};
      try {
        zmq::poll(items, 2, milliseconds(10));
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) spdlog::error("{}: poll failed: {}", o_.node_id, e.what());
      }
      if (items[1].revents & ZMQ_POLLIN) waker_.Clear();
      for (int n = 0; n < 256 && !stop_; ++n) {
        // On the heap, so that a batch handed to the applier keeps its bytes where they are.
        auto msg = std::make_unique<zmq::message_t>();
        try {
          if (!dealer_.recv(*msg, zmq::recv_flags::dontwait)) break;
        } catch (const zmq::error_t& e) {
          spdlog::error("{}: receive failed: {}", o_.node_id, e.what());
          break;
        }
        Handle(std::move(msg));
        PublishStatus();
        // An ack at least every 250 ms also while messages keep coming: the primary drops a
        // subordinate it has not heard from for its peer timeout.
        if (state_ != SyncState::kConnecting && Clock::now() - last_ack_ > milliseconds(250)) {
          SendAck();
        }
      }
      if (credit_withheld_ && !MustWithholdCredit()) ack_due_ = true;
      if (blob_progress_.exchange(false)) ack_due_ = true;
      HandOverBlobChunks();
      // An ack at least every 250 ms, also while credit is withheld: it tells the primary that
      // this node is alive (it drops subordinates it has not heard from for its peer timeout).
      if (state_ != SyncState::kConnecting && Clock::now() - last_ack_ > milliseconds(250)) {
        ack_due_ = true;
      }
      if (ack_due_) SendAck();
      TrySendHello();
      const auto now = Clock::now();
      if (now - last_trim_ >= o_.trim_interval) {
        last_trim_ = now;
        auto dropped = store_.Trim(o_.journal, detail::WallNow(), UINT64_MAX);
        if (!dropped.ok()) {
          spdlog::error("{}: trimming the journal: {}", o_.node_id, dropped.status().ToString());
        }
      }
      if (state_ == SyncState::kConnecting && now - hello_sent_ > o_.hello_timeout) {
        SendHello();
      } else if (state_ != SyncState::kConnecting && now - last_heard_ > o_.peer_timeout) {
        const std::string text = "no word from the primary for " +
                                 std::to_string(o_.peer_timeout.count()) +
                                 " ms: saying HELLO again";
        spdlog::warn("{}: {}", o_.node_id, text);
        Emit(ReplicationEvent::Kind::kPeerLost, "", text);
        SendHello();
      }
      PublishStatus();
    }
  }

  // Step 1: a new socket and session, so that nothing of the previous one is taken for this one.
  void SendHello() {
    try {
      dealer_ = zmq::socket_t(ctx_, zmq::socket_type::dealer);
      dealer_.set(zmq::sockopt::routing_id, o_.node_id);
      dealer_.set(zmq::sockopt::linger, 0);
      dealer_.set(zmq::sockopt::immediate, 1);
      dealer_.set(zmq::sockopt::rcvhwm,
                  static_cast<int>(4 * (o_.credit_batches + o_.credit_blob_chunks) + 64));
      dealer_.connect(o_.primary_endpoint);
    } catch (const zmq::error_t& e) {
      spdlog::error("{}: cannot connect to {}: {}", o_.node_id, o_.primary_endpoint, e.what());
    }
    ++session_;
    announced_in_sync_ = false;
    received_ = 0;
    {
      // Chunks of the previous session are sent again from the cursor if still needed.
      blob_handover_.clear();
      std::lock_guard lock(blob_queue_mu_);  // waits, but only when a session starts
      blob_queue_.clear();
      blob_received_ = 0;
    }
    state_ = SyncState::kConnecting;
    snapshot_open_ = false;
    HelloMsg h;
    h.node_id = o_.node_id;
    h.replication_id = store_.replication_id();
    h.last_applied = applied_;
    h.session = session_;
    h.history = store_.history();
    h.blob_next = store_.blob_cursor();
    h.credit_batches = o_.credit_batches;
    h.credit_blob_chunks = o_.credit_blob_chunks;
    header_.epoch = newest_epoch_;
    // With `immediate`, a send finds no room until the connection exists: the loop retries it
    // every few milliseconds until it goes.
    hello_frame_ = Encode(header_, h);
    TrySendHello();
    hello_sent_ = last_heard_ = Clock::now();
    std::lock_guard lock(status_mu_);
    ++status_.hellos;
    status_.state = state_;
  }

  // ---- the applier thread ----
  struct PendingApply {
    std::unique_ptr<zmq::message_t> message;
    wire::Decoded decoded;
    Seq after = 0;  // deltas up to this seq were already applied
  };

  void ApplyLoop() {
    pthread_setname_np(pthread_self(), "ss-apply");
    std::vector<DeltaView> views;
    for (;;) {
      PendingApply item;
      {
        std::unique_lock lock(apply_mu_);
        apply_cv_.wait(lock, [&] { return apply_stop_ || !apply_queue_.empty(); });
        if (apply_queue_.empty()) return;  // stopping, and everything is applied
        item = std::move(apply_queue_.front());
        apply_queue_.pop_front();
        apply_queue_bytes_ -= item.message->size();
        applying_ = true;
      }
      const auto* deltas = item.decoded.envelope->body_as_DeltaBatch()->deltas();
      views.clear();
      for (flatbuffers::uoffset_t i = 0; i < deltas->size(); ++i) {
        const DeltaView v = ViewOf(*deltas->Get(i));
        if (v.position.seq > item.after) views.push_back(v);
      }
      const Position last = views.empty() ? Position{} : views.back().position;
      {
        std::lock_guard lock(table_mu_);
        Status st = table_->Apply(views);
        STATESYNC_CHECK(st.ok(), "a validated, journaled delta did not apply");
      }
      {
        std::lock_guard lock(apply_mu_);
        applying_ = false;
        table_position_ = last;
      }
      apply_cv_.notify_all();
    }
  }

  // Waits until the applier has applied everything handed to it.
  void WaitApplied() {
    std::unique_lock lock(apply_mu_);
    apply_cv_.wait(lock, [&] { return apply_queue_.empty() && !applying_; });
  }

  std::size_t apply_backlog_bytes() const {
    std::lock_guard lock(apply_mu_);
    return apply_queue_bytes_;
  }

  // The applier's queue is bounded in bytes, apart from the network credit: a pause of the
  // applier (the table growing, memory first touched) must not stop the stream, whose durable
  // point is the journal.
  bool MustWithholdCredit() const {
    return store_.materializer_behind() || apply_backlog_bytes() >= o_.max_apply_backlog_bytes;
  }

  void TrySendHello() {
    if (hello_frame_.empty()) return;
    if (detail::Send(dealer_, "", hello_frame_) == detail::SendResult::kSent) {
      hello_frame_.clear();
      hello_sent_ = Clock::now();
    }
  }

  void SendAck() {
    AckMsg a;
    a.node_id = o_.node_id;
    a.persisted = applied_;
    // While the store's materializer or the applier is too far behind, no new credit: the
    // primary waits, and the loop acks again once they have caught up.
    credit_withheld_ = MustWithholdCredit();
    a.credit_batches = credit_withheld_ ? 0 : o_.credit_batches;
    {
      std::lock_guard lock(apply_mu_);
      a.applied = table_position_;
    }
    a.session = session_;
    a.received = received_;
    a.blob_next = store_.blob_cursor();
    a.blob_received = blob_received_;
    a.credit_blob_chunks = o_.credit_blob_chunks;
    header_.epoch = newest_epoch_;
    if (detail::Send(dealer_, "", Encode(header_, a)) == detail::SendResult::kSent) {
      ack_due_ = false;
      last_ack_ = Clock::now();
    }
  }

  // A message of an earlier session of this node (sent before the primary saw the new HELLO):
  // counted apart and dropped.
  bool IsLate(std::uint64_t session) {
    if (session >= session_ || session < first_session_) return false;
    std::lock_guard lock(status_mu_);
    ++status_.input.late;
    return true;
  }

  void Refuse(std::uint64_t InputCounters::*counter, const std::string& reason) {
    std::uint64_t n;
    {
      std::lock_guard lock(status_mu_);
      n = ++(status_.input.*counter);
    }
    detail::LogRefusal(n, o_.node_id, reason);
    Emit(ReplicationEvent::Kind::kBadInput, "", reason);
  }

  void Handle(std::unique_ptr<zmq::message_t> owned) {
    const zmq::message_t& msg = *owned;
    wire::DecodeLimits limits;
    limits.max_message_bytes = o_.max_message_bytes;
    wire::Decoded d = wire::Decode({static_cast<const std::uint8_t*>(msg.data()), msg.size()},
                                   o_.cluster_id, limits);
    if (!d.ok()) {
      {
        std::lock_guard lock(status_mu_);
        detail::CountDecodeError(status_.input, d, o_.node_id);
      }
      Emit(ReplicationEvent::Kind::kBadInput, "", d.reason);
      return;
    }
    const fb::Envelope& env = *d.envelope;
    if (env.epoch() < newest_epoch_) {
      Refuse(&InputCounters::stale_epoch,
             "a " + std::string(fb::EnumNameBody(env.body_type())) + " from epoch " +
                 std::to_string(env.epoch()) + ", older than epoch " +
                 std::to_string(newest_epoch_) + " which this node has seen");
      return;
    }
    newest_epoch_ = env.epoch();
    last_heard_ = Clock::now();
    switch (env.body_type()) {
      case fb::Body::Heartbeat:
        primary_head_ = std::max(primary_head_, env.body_as_Heartbeat()->applied_seq());
        UpdateSyncState();
        return;
      case fb::Body::Continue:
        OnContinue(From(*env.body_as_Continue()));
        return;
      case fb::Body::Fork:
        OnFork(From(*env.body_as_Fork()));
        return;
      case fb::Body::SnapshotChunk:
        OnSnapshotChunk(*env.body_as_SnapshotChunk());
        return;
      case fb::Body::SnapshotEnd:
        OnSnapshotEnd(From(*env.body_as_SnapshotEnd()));
        return;
      case fb::Body::DeltaBatch:
        OnBatch(std::move(owned), std::move(d));
        return;
      case fb::Body::BlobChunk:
        OnBlobChunk(*env.body_as_BlobChunk());
        return;
      default:
        Refuse(&InputCounters::unexpected, "a " + std::string(fb::EnumNameBody(env.body_type())) +
                                               ", which a subordinate does not take");
        return;
    }
  }

  void OnContinue(const ContinueMsg& m) {
    if (IsLate(m.session)) return;
    if (m.session != session_ || state_ != SyncState::kConnecting) {
      Refuse(&InputCounters::unexpected, "a CONTINUE for another session");
      return;
    }
    if (m.from != applied_) {
      Refuse(&InputCounters::unexpected, "a CONTINUE from " + ToString(m.from) +
                                             " while this node is at " + ToString(applied_));
      SendHello();
      return;
    }
    if (store_.replication_id() != m.replication_id) {
      // A new node adopts the history it starts following from its beginning.
      if (Status st = store_.SetReplicationId(m.replication_id); !st.ok()) {
        spdlog::error("{}: cannot store the replication id: {}", o_.node_id, st.ToString());
        SendHello();
        return;
      }
    }
    state_ = SyncState::kCatchingUp;
    primary_head_ = std::max(primary_head_, m.head);
    catchup_start_seq_ = applied_.seq;
    catchup_started_ = Clock::now();
    spdlog::info("{}: the primary continues from {} (its head is at seq {})", o_.node_id,
                 ToString(applied_), m.head);
    {
      std::lock_guard lock(status_mu_);
      ++status_.continues;
    }
    UpdateSyncState();
  }

  void OnFork(const ForkMsg& m) {
    if (IsLate(m.session)) return;
    if (m.session != session_ || state_ != SyncState::kConnecting) {
      Refuse(&InputCounters::unexpected, "a FORK for another session");
      return;
    }
    const std::string reason = "this node's history left the primary's (" + m.replication_id +
                               ") after " + ToString(m.common);
    auto moved = store_.QuarantineAfter(m.common, reason, detail::WallNow());
    if (!moved.ok()) {
      spdlog::error("{}: cannot quarantine the divergent tail: {}", o_.node_id,
                    moved.status().ToString());
      SendHello();  // nothing was changed; try again
      return;
    }
    const std::string text = reason + ": " + std::to_string(*moved) +
                             " records moved to the quarantine; a snapshot follows";
    spdlog::warn("{}: {}", o_.node_id, text);
    Emit(ReplicationEvent::Kind::kFork, "", text);
    state_ = SyncState::kSnapshot;
    std::lock_guard lock(status_mu_);
    ++status_.forks;
    status_.quarantined += *moved;
  }

  // Empties the store and the table for a snapshot. The first chunk opens it, or the end itself
  // for a snapshot of empty tables. False (and a new HELLO) if the store refused.
  bool OpenSnapshot(std::uint64_t records_total) {
    // The primary may also switch a CONTINUE session to a snapshot when this node's place has
    // left its journal. What the applier still holds belongs to the data being replaced.
    WaitApplied();
    if (Status st = store_.BeginSnapshot(); !st.ok()) {
      spdlog::error("{}: cannot start the snapshot: {}", o_.node_id, st.ToString());
      SendHello();
      return false;
    }
    {
      std::lock_guard lock(table_mu_);
      table_ = std::make_unique<SessionTable>(o_.table_options);
    }
    applied_ = Position{};
    {
      std::lock_guard lock(apply_mu_);
      table_position_ = Position{};
    }
    snapshot_open_ = true;
    state_ = SyncState::kSnapshot;
    snapshot_records_ = snapshot_bytes_ = 0;
    catchup_started_ = Clock::now();
    spdlog::info("{}: receiving a snapshot (about {} records)", o_.node_id, records_total);
    std::lock_guard lock(status_mu_);
    ++status_.snapshots;
    return true;
  }

  void OnSnapshotChunk(const fb::SnapshotChunk& c) {
    if (IsLate(c.snapshot_id())) return;
    if (c.snapshot_id() != session_ ||
        (state_ != SyncState::kConnecting && state_ != SyncState::kSnapshot &&
         state_ != SyncState::kCatchingUp && state_ != SyncState::kInSync)) {
      Refuse(&InputCounters::unexpected, "a snapshot chunk for another session");
      return;
    }
    ++received_;
    ack_due_ = true;
    if (!snapshot_open_ && !OpenSnapshot(c.records_total())) return;
    snapshot_total_ = c.records_total();
    std::vector<StoredDelta> records;
    if (c.records()) {
      records.reserve(c.records()->size());
      for (const fb::Delta* d : *c.records()) {
        DeltaView v = ViewOf(*d);
        v.kind = DeltaKind::kUpsert;
        if (Status st = ValidateDelta(v); !st.ok()) {
          Refuse(&InputCounters::bad_record, "a snapshot record refused: " + st.message());
          SendHello();  // the snapshot is incomplete: start over
          return;
        }
        records.push_back({v.table, DeltaKind::kUpsert, v.key, v.value});
        snapshot_bytes_ += v.key.size() + v.value.size();
      }
    }
    if (Status st = store_.AddSnapshotRecords(records); !st.ok()) {
      spdlog::error("{}: cannot store snapshot records: {}", o_.node_id, st.ToString());
      SendHello();
      return;
    }
    {
      std::lock_guard lock(table_mu_);
      for (const auto& r : records) {
        // Verified above, so this cannot fail on content.
        Status st = table_->Load(r.table, r.key, r.value);
        STATESYNC_CHECK(st.ok(), "a verified snapshot record did not load");
      }
    }
    snapshot_records_ += records.size();
    UpdateSyncState();
  }

  void OnSnapshotEnd(const SnapshotEndMsg& m) {
    const bool expected = state_ == SyncState::kSnapshot || state_ == SyncState::kConnecting ||
                          state_ == SyncState::kCatchingUp || state_ == SyncState::kInSync;
    if (IsLate(m.snapshot_id)) return;
    if (m.snapshot_id != session_ || !expected) {
      Refuse(&InputCounters::unexpected, "a snapshot end for another session");
      return;
    }
    ++received_;
    ack_due_ = true;
    // A snapshot of empty tables has no chunk: the end opens it.
    if (!snapshot_open_ && !OpenSnapshot(0)) return;
    if (Status st = store_.FinishSnapshot(m.replication_id, m.position, m.history); !st.ok()) {
      spdlog::error("{}: cannot finish the snapshot: {}", o_.node_id, st.ToString());
      SendHello();
      return;
    }
    {
      std::lock_guard lock(table_mu_);
      Status st = table_->ResetPosition(m.position);
      STATESYNC_CHECK(st.ok(), "a read-only table has nothing pending");
    }
    applied_ = m.position;
    {
      std::lock_guard lock(apply_mu_);
      table_position_ = m.position;
    }
    snapshot_open_ = false;
    state_ = SyncState::kCatchingUp;
    catchup_start_seq_ = applied_.seq;
    const std::string text = "snapshot installed: " + std::to_string(snapshot_records_) +
                             " records at " + ToString(m.position);
    spdlog::info("{}: {}", o_.node_id, text);
    Emit(ReplicationEvent::Kind::kSnapshotFinished, "", text);
    UpdateSyncState();
  }

  void OnBatch(std::unique_ptr<zmq::message_t> owned, wire::Decoded decoded) {
    const zmq::message_t& msg = *owned;
    const fb::Envelope& env = *decoded.envelope;
    if (state_ == SyncState::kConnecting && session_ != first_session_) {
      // Sent before the primary saw this node's new HELLO: the CONTINUE that follows says
      // where the stream resumes.
      std::lock_guard lock(status_mu_);
      ++status_.input.late;
      return;
    }
    if (state_ != SyncState::kCatchingUp && state_ != SyncState::kInSync) {
      Refuse(&InputCounters::unexpected, "a delta batch before CONTINUE or SNAPSHOT_END");
      return;
    }
    ++received_;
    ack_due_ = true;
    const fb::DeltaBatch& batch = *env.body_as_DeltaBatch();
    if (std::string why = CheckBatch(batch, env.epoch()); !why.empty()) {
      Refuse(&InputCounters::bad_batch, "a delta batch refused: " + why);
      return;
    }
    const auto* deltas = batch.deltas();
    const DeltaView first = ViewOf(*deltas->Get(0));
    const DeltaView last = ViewOf(*deltas->Get(deltas->size() - 1));
    if (last.position.seq <= applied_.seq) return;  // already here (a resent batch)
    if (first.position.seq > applied_.seq + 1) {
      Refuse(&InputCounters::gap, "a batch from seq " + std::to_string(first.position.seq) +
                                      " while this node is at seq " + std::to_string(applied_.seq) +
                                      ": asking again");
      SendHello();
      return;
    }
    if (last.position.epoch < applied_.epoch) {
      Refuse(&InputCounters::bad_batch, "a batch of epoch " + std::to_string(last.position.epoch) +
                                            " after epoch " + std::to_string(applied_.epoch));
      return;
    }
    for (flatbuffers::uoffset_t i = 0; i < deltas->size(); ++i) {
      const DeltaView v = ViewOf(*deltas->Get(i));
      if (v.position.seq <= applied_.seq) continue;
      if (Status st = ValidateDelta(v); !st.ok()) {
        Refuse(&InputCounters::bad_record,
               "a batch refused, its delta at " + ToString(v.position) + ": " + st.message());
        return;
      }
    }
    // The durable point: the frame as received, or cut to what is new here.
    Status st;
    Position from = first.position;
    if (first.position.seq == applied_.seq + 1) {
      st = store_.Append(first.position, last.position,
                         {static_cast<const std::uint8_t*>(msg.data()), msg.size()},
                         detail::WallNow());
    } else {
      const EnvelopeHeader h{o_.cluster_id, env.sender() ? env.sender()->string_view() : "",
                             env.epoch()};
      const std::string cut = Rewrap(batch, h, applied_.seq);
      from = {last.position.epoch, applied_.seq + 1};
      st = store_.Append(from, last.position, wire::AsBytes(cut), detail::WallNow());
    }
    if (!st.ok()) {
      spdlog::error("{}: cannot persist the batch from {}: {}", o_.node_id, ToString(from),
                    st.ToString());
      SendHello();
      return;
    }
    // Persisted: acknowledge it. The table is brought up to date by the applier thread, so that
    // the next batch's checks and journal write overlap this one's apply.
    const Seq after = applied_.seq;
    const std::size_t n = last.position.seq - after;
    applied_ = last.position;
    {
      std::lock_guard lock(apply_mu_);
      apply_queue_bytes_ += owned->size();
      apply_queue_.push_back({std::move(owned), std::move(decoded), after});
    }
    apply_cv_.notify_all();
    primary_head_ = std::max(primary_head_, applied_.seq);
    {
      std::lock_guard lock(status_mu_);
      ++status_.batches;
      status_.deltas += n;
    }
    UpdateSyncState();
  }

  // `blob_received_` counts chunks dealt with (stored, or refused): the primary rewinds the lane
  // to the acked cursor only once every chunk it sent was dealt with, and grants credit as they
  // are, so the blob thread's queue holds at most the blob credit.
  void OnBlobChunk(const fb::BlobChunk& c) {
    ack_due_ = true;
    const BlobChunkMsg m = From(c);
    if (XXH3_64bits(m.data.data(), m.data.size()) != m.chunk_xxh64) {
      ++blob_received_;
      Refuse(&InputCounters::blob_corrupt, "a chunk of blob " + m.info.blob_id + " at offset " +
                                               std::to_string(m.offset) +
                                               " does not match its checksum");
      return;
    }
    // Stored by the blob thread, so that voice data never holds a delta batch back.
    blob_handover_.push_back({m.info, m.offset, std::string(m.data)});
    HandOverBlobChunks();
  }

  // Moves received chunks to the blob thread's queue if its lock is free; else they wait for the
  // loop's next pass. The blob thread runs in the idle class: preempted while holding the lock,
  // it could hold it for as long as normal-class threads keep the cores busy, and this thread
  // must not wait that long.
  void HandOverBlobChunks() {
    if (blob_handover_.empty()) return;
    {
      std::unique_lock lock(blob_queue_mu_, std::try_to_lock);
      if (!lock.owns_lock()) return;
      for (auto& c : blob_handover_) blob_queue_.push_back(std::move(c));
    }
    blob_handover_.clear();
    blob_queue_cv_.notify_all();
  }

  // ---- the blob thread ----
  struct PendingBlobChunk {
    BlobInfo info;
    std::uint64_t offset = 0;
    std::string data;
  };

  void BlobLoop() {
    pthread_setname_np(pthread_self(), "ss-blobs");
    // Voice data yields the CPU to the delta stream: while this thread is behind, its credit
    // is withheld, so the lane's rate follows what the stream leaves free. In the idle class
    // rather than at nice 10: on 2 cores the deltas' p99 with blobs fell from 4.0-5.5 to
    // 3.1-3.3 ms (docs/BENCHMARKS.md).
    EnterIdleClass();
    for (;;) {
      PendingBlobChunk c;
      {
        std::unique_lock lock(blob_queue_mu_);
        blob_queue_cv_.wait(lock, [&] { return blob_stop_ || !blob_queue_.empty(); });
        if (blob_stop_) return;  // what is left is sent again from the cursor
        c = std::move(blob_queue_.front());
        blob_queue_.pop_front();
      }
      const BlobCursor cursor = store_.blob_cursor();
      if (c.info.seq == cursor.seq && c.offset == cursor.offset) {
        Status st = store_.AddBlobChunk(c.info, c.offset, c.data);
        if (st.code() == Status::Code::kCorruption) {
          Refuse(&InputCounters::blob_corrupt, st.message());
          Emit(ReplicationEvent::Kind::kBlobCorrupt, "", st.message());
        } else if (!st.ok()) {
          spdlog::error("{}: cannot store a blob chunk: {}", o_.node_id, st.ToString());
        }
      }
      ++blob_received_;
      blob_progress_ = true;  // the I/O thread acks the new cursor and credit
      waker_.Signal();
    }
  }

  void UpdateSyncState() {
    if (state_ == SyncState::kCatchingUp || state_ == SyncState::kInSync) {
      const bool at_head = applied_.seq >= primary_head_;
      if (at_head && state_ == SyncState::kCatchingUp && !announced_in_sync_) {
        announced_in_sync_ = true;
        spdlog::info("{}: in sync with the primary at seq {}", o_.node_id, applied_.seq);
        Emit(ReplicationEvent::Kind::kCaughtUp, "",
             "in sync at seq " + std::to_string(applied_.seq));
      }
      state_ = at_head ? SyncState::kInSync : SyncState::kCatchingUp;
    }
  }

  void PublishStatus() {
    const auto now = Clock::now();
    CatchUpProgress p;
    const double elapsed = std::chrono::duration<double>(now - catchup_started_).count();
    if (state_ == SyncState::kSnapshot) {
      p.records_done = snapshot_records_;
      p.records_total = std::max(snapshot_total_, snapshot_records_);
      p.bytes_done = snapshot_bytes_;
    } else if (state_ == SyncState::kCatchingUp) {
      p.records_done = applied_.seq - catchup_start_seq_;
      p.records_total = primary_head_ > catchup_start_seq_ ? primary_head_ - catchup_start_seq_ : 0;
    } else if (state_ == SyncState::kInSync) {
      p.records_done = p.records_total = 1;
    }
    p.fraction = p.records_total ? static_cast<double>(p.records_done) / p.records_total : 0;
    if (p.fraction > 1) p.fraction = 1;
    p.records_per_second = elapsed > 0 ? p.records_done / elapsed : 0;
    p.eta_seconds = p.records_per_second > 0 && p.records_total > p.records_done
                        ? (p.records_total - p.records_done) / p.records_per_second
                        : 0;
    std::lock_guard lock(status_mu_);
    status_.state = state_;
    status_.persisted = applied_;
    {
      std::lock_guard alock(apply_mu_);
      status_.applied = table_position_;
    }
    status_.primary_head = primary_head_;
    status_.newest_epoch = newest_epoch_;
    status_.progress = p;
    status_.blob_cursor = store_.blob_cursor();
  }

  void Emit(ReplicationEvent::Kind kind, const std::string& peer, const std::string& text) {
    if (o_.events) o_.events({kind, peer, text});
  }

  SubordinateOptions o_;
  Store& store_;
  mutable std::mutex table_mu_;
  std::unique_ptr<SessionTable> table_;
  detail::Waker waker_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  Clock::time_point last_trim_{};
  mutable std::mutex status_mu_;
  SubordinateStatus status_;

  // The applier's queue (bounded by the credit the I/O thread grants).
  mutable std::mutex apply_mu_;
  std::condition_variable apply_cv_;
  std::deque<PendingApply> apply_queue_;
  std::size_t apply_queue_bytes_ = 0;
  bool applying_ = false;
  bool apply_stop_ = false;
  Position table_position_;  // the table's position (what has been applied)
  std::thread applier_;

  // The blob thread's queue (bounded by the blob credit).
  mutable std::mutex blob_queue_mu_;
  std::condition_variable blob_queue_cv_;
  std::deque<PendingBlobChunk> blob_queue_;
  std::deque<PendingBlobChunk> blob_handover_;  // the I/O thread's: received, not yet queued
  bool blob_stop_ = false;
  std::atomic<bool> blob_progress_{false};
  std::thread blob_thread_;

  // The I/O thread's.
  zmq::context_t ctx_{1};
  zmq::socket_t dealer_;
  EnvelopeHeader header_;
  std::uint64_t session_ = 0;
  std::uint64_t first_session_ = 0;
  SyncState state_ = SyncState::kConnecting;
  Position applied_;
  Epoch newest_epoch_ = 0;
  Seq primary_head_ = 0;
  std::uint64_t received_ = 0;
  std::atomic<std::uint64_t> blob_received_{0};
  bool ack_due_ = false;
  Clock::time_point last_ack_;
  bool credit_withheld_ = false;
  bool announced_in_sync_ = false;  // logged once per session
  bool snapshot_open_ = false;
  int realtime_priority_ = 0;  // the I/O thread's SCHED_FIFO priority; 0: the normal class
  std::uint64_t snapshot_records_ = 0;
  std::uint64_t snapshot_total_ = 0;
  std::uint64_t snapshot_bytes_ = 0;
  Seq catchup_start_seq_ = 0;
  Clock::time_point catchup_started_;
  Clock::time_point hello_sent_;
  std::string hello_frame_;  // a HELLO waiting for the connection
  Clock::time_point last_heard_;
};

Subordinate::Subordinate(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Subordinate::~Subordinate() = default;

Result<std::unique_ptr<Subordinate>> Subordinate::Start(SubordinateOptions options, Store& store,
                                                        std::unique_ptr<SessionTable> table) {
  auto impl = std::make_unique<Impl>(std::move(options), store, std::move(table));
  if (Status st = impl->Start(); !st.ok()) return st;
  return std::unique_ptr<Subordinate>(new Subordinate(std::move(impl)));
}
void Subordinate::Read(const std::function<void(const SessionTable&)>& fn) const {
  impl_->Read(fn);
}
SubordinateStatus Subordinate::status() const {
  return impl_->status();
}
std::unique_ptr<SessionTable> Subordinate::Stop() {
  return impl_->Stop();
}

}  // namespace statesync::replication
