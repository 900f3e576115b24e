#include "data_plane.h"

#include "answers.h"

#include <spdlog/spdlog.h>
#include <xxhash.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <zmq.hpp>

#include "statesync/common/pi_mutex.h"
#include "statesync/common/prefaulted_pages.h"
#include "statesync/replication/messages.h"
#include "statesync/schemas/codec.h"

namespace statesync::node {

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

TimePoint WallNow() {
  return std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
}

// The tables a sync-mode node acknowledges only once min_acks subordinates persisted them.
constexpr TableId kSyncTables[] = {TableId::kFwSessions, TableId::kCalls, TableId::kCdrs,
                                   TableId::kBlobs};

// A blob comes whole in one ingest request, up to this size (the socket's message limit is
// this plus room for the envelope).
constexpr std::size_t kMaxIngestBlobBytes = 32 << 20;
// Blobs received but not yet stored; past this, new ones are answered "busy".
constexpr std::size_t kMaxQueuedBlobBytes = 256 << 20;

}  // namespace

std::string_view DataPlaneModeName(DataPlaneStatus::Mode mode) {
  switch (mode) {
    case DataPlaneStatus::Mode::kIdle:
      return "idle";
    case DataPlaneStatus::Mode::kPrimary:
      return "primary";
    case DataPlaneStatus::Mode::kSubordinate:
      return "subordinate";
    case DataPlaneStatus::Mode::kPromoting:
      return "promoting";
  }
  return "?";
}

class DataPlane::Impl {
 public:
  Impl(const NodeConfig& config, replication::EventSink events)
      : config_(config), events_(std::move(events)) {}

  Status Open(const std::filesystem::path& store_dir) {
    StoreOptions so;
    so.dir = store_dir;
    so.sync_writes = config_.sync_writes;
    auto store = Store::Open(so);
    if (!store.ok()) return store.status();
    store_ = std::move(store).value();
    pages_ = std::make_shared<PrefaultedPages>();
    table_ =
        std::make_unique<SessionTable>(SessionTableOptions{.writable = false, .pages = pages_});
    const auto started = Clock::now();
    LoadStats stats;
    if (Status st = store_->LoadInto(*table_, &stats); !st.ok()) return st;
    spdlog::info(
        "loaded {} records from {} in {} ms, up to {}", table_->total_size(), store_dir.string(),
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count(),
        ToString(table_->last_position()));
    try {
      ingest_ = zmq::socket_t(ctx_, zmq::socket_type::router);
      ingest_.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(64 << 20));
      ingest_.set(zmq::sockopt::linger, 0);
      ingest_.bind(config_.IngestEndpoint());
      ingest_endpoint_ = ingest_.get(zmq::sockopt::last_endpoint);
    } catch (const zmq::error_t& e) {
      return Status::Unavailable("ingest: cannot bind " + config_.IngestEndpoint() + ": " +
                                 e.what());
    }
    Publish();
    thread_ = std::thread([this] { Loop(); });
    blob_thread_ = std::thread([this] { BlobLoop(); });
    return Status::Ok();
  }

  ~Impl() { Stop(); }

  void Post(std::function<void()> task) {
    std::lock_guard lock(mu_);
    tasks_.push_back(std::move(task));
    tasks_waiting_.store(true, std::memory_order_relaxed);
  }

  void Stop() {
    if (!thread_.joinable()) return;
    stop_ = true;
    thread_.join();
    if (primary_) {
      primary_->Flush(*table_);
      primary_->Stop();  // a blob being stored is stored at once, later ones refused
      primary_.reset();
      ++primary_generation_;
    }
    {
      std::lock_guard lock(blob_mu_);
      blob_stop_ = true;
    }
    blob_cv_.notify_all();
    blob_thread_.join();
    if (sub_) {
      table_ = sub_->Stop();
      sub_.reset();
    }
    if (Status st = store_->Flush(); !st.ok()) spdlog::warn("store flush: {}", st.ToString());
  }

  DataPlaneStatus status() const {
    std::lock_guard lock(mu_);
    return status_;
  }

  const std::string& ingest_endpoint() const { return ingest_endpoint_; }

  // ---- on the data thread ----

  void Follow(const std::string& primary, const std::string& endpoint) {
    if (promotion_) {
      promotion_->done(
          promotion_->epoch, Position{},
          Status::FailedPrecondition("the promotion was called off: following " + primary));
      promotion_.reset();
    }
    if (sub_ && following_ == primary) return;
    if (drain_ && drain_->primary == primary) return;
    drain_.reset();
    if (primary_ && !serving_ && Behind(primary, table_->last_position())) {
      // A hand-over: the node taking over promotes once it holds this node's last record, and
      // only this node's primary side can stream the tail to it. Stepping down now would leave
      // a lagging subordinate without it (and the tail in this node's quarantine).
      drain_ = Drain{primary, endpoint, table_->last_position(), HandOverProgress()};
      spdlog::info("handing over to {}: streaming until it holds {}", primary,
                   ToString(drain_->last));
      return;
    }
    FollowNow(primary, endpoint);
  }

  // Whether `node`, a subordinate of this primary, has not persisted `last` yet.
  bool Behind(const std::string& node, Position last) const {
    const auto persisted = PersistedBy(node);
    // By seq: a primary that took no writes in its epoch is at (epoch, seq of the last write),
    // which a subordinate holds as (older epoch, the same seq).
    return persisted && *persisted < last.seq;
  }

  // What `node`, a subordinate of this primary, has persisted; nothing once it is lost.
  std::optional<Seq> PersistedBy(const std::string& node) const {
    for (const auto& p : primary_->peers()) {
      if (p.node_id == node && p.state != replication::PeerStatus::State::kLost) {
        return p.persisted.seq;
      }
    }
    return std::nullopt;
  }

  void StepDrain() {
    if (!drain_) return;
    const auto persisted = PersistedBy(drain_->primary);
    if (persisted && *persisted < drain_->last.seq &&
        drain_->wait.KeepWaiting(*persisted, Clock::now())) {
      return;
    }
    const Drain d = std::move(*drain_);
    drain_.reset();
    if (persisted && *persisted < d.last.seq) {
      spdlog::warn("handing over to {}: it still lacks records up to {}: {}", d.primary,
                   ToString(d.last), d.wait.WhyStopped(Clock::now()));
    }
    FollowNow(d.primary, d.endpoint);
  }

  void FollowNow(const std::string& primary, const std::string& endpoint) {
    StepDownPrimary();
    if (sub_) table_ = sub_->Stop();
    sub_.reset();
    if (Status st = MatchTableToStore(); !st.ok()) {
      spdlog::critical("cannot follow {}: {}", primary, st.ToString());
      std::abort();
    }
    replication::SubordinateOptions o;
    o.node_id = config_.id;
    o.cluster_id = config_.ClusterId();
    o.primary_endpoint = endpoint;
    o.journal = Journal();
    o.io_realtime_priority = config_.io_realtime_priority;
    o.table_options = SessionTableOptions{.writable = false, .pages = pages_};
    o.events = events_;
    auto sub = replication::Subordinate::Start(o, *store_, std::move(table_));
    if (!sub.ok()) {
      // Without its table the node has nothing to serve: a bug or a broken store.
      spdlog::critical("cannot follow {}: {}", primary, sub.status().ToString());
      std::abort();
    }
    sub_ = std::move(sub).value();
    following_ = primary;
    spdlog::info("following {} at {}", primary, endpoint);
  }

  void Promote(Epoch epoch, Position up_to, PromotedCallback done) {
    if (promotion_) {
      promotion_->done(
          promotion_->epoch, Position{},
          Status::FailedPrecondition("replaced by a promotion in epoch " + std::to_string(epoch)));
    }
    drain_.reset();  // the hand-over was called off: this node is primary again
    promotion_ = Promotion{epoch, up_to, HandOverProgress(), std::move(done)};
    StepPromotion();
  }

  void StepPromotion() {
    if (!promotion_) return;
    const auto started = Clock::now();
    const auto ms = [](Clock::duration d) {
      return std::chrono::duration<double, std::milli>(d).count();
    };
    if (sub_) {
      const auto st = sub_->status();
      // An old primary that took no writes in its epoch hands over (epoch, seq of its last
      // write), which this node holds as (older epoch, the same seq): by seq, as Behind(), once
      // this node is in sync with it (a divergent tail of its own is resolved by then).
      const bool holds =
          st.persisted >= promotion_->up_to || (st.state == replication::SyncState::kInSync &&
                                                st.persisted.seq >= promotion_->up_to.seq);
      if (!holds && promotion_->wait.KeepWaiting(st.persisted.seq, Clock::now())) {
        return;
      }
      table_ = sub_->Stop();
      sub_.reset();
      following_.clear();
    }
    const auto stopped = Clock::now();
    Promotion p = std::move(*promotion_);
    promotion_.reset();
    StepDownPrimary();
    Status st = table_->BecomeWritable(p.epoch);
    if (st.ok()) {
      replication::PrimaryOptions o;
      o.node_id = config_.id;
      o.cluster_id = config_.ClusterId();
      o.endpoint = config_.self().replication;
      o.journal = Journal();
      o.io_realtime_priority = config_.io_realtime_priority;
      o.min_acks = config_.min_acks;
      o.sync_timeout = config_.sync_timeout;
      o.on_sync_timeout = config_.on_sync_timeout == OnSyncTimeout::kFail
                              ? replication::SyncFailure::kFail
                              : replication::SyncFailure::kBlock;
      if (config_.sync_mode == SyncMode::kSync) {
        for (TableId t : kSyncTables) o.durability[t] = replication::Durability::kSync;
      }
      o.events = events_;
      const auto writable = Clock::now();
      auto primary = replication::Primary::Start(o, *store_, p.epoch);
      const auto serving = Clock::now();
      if (primary.ok()) {
        primary_ = std::move(primary).value();
        // The table's first Tick as a writer looks at every session's deadline (40-50 ms for
        // 1M): the loop runs it after the promotion is reported, not on its way.
        spdlog::info(
            "serving replication in epoch {} on {} (subordinate stopped in {:.1f} ms, table "
            "writable in {:.1f}, primary started in {:.1f})",
            p.epoch, primary_->endpoint(), ms(stopped - started), ms(writable - stopped),
            ms(serving - writable));
      } else {
        st = primary.status();
        table_->BecomeReadOnly();
      }
    }
    head_samples_.clear();
    p.done(p.epoch, table_->last_position(), st);
  }

  void Serve(bool on) {
    serving_ = on && primary_ != nullptr;
    if (!serving_) RefuseQueuedBlobs();
    if (on && !primary_) spdlog::warn("asked to take writes without a primary side");
    if (!on && promotion_) {
      // The core gave the role up before the promotion finished.
      promotion_->done(promotion_->epoch, Position{},
                       Status::FailedPrecondition("the promotion was called off"));
      promotion_.reset();
    }
  }

  // A subordinate starts from a table at the store's position. A primary that stepped down
  // without writing in its epoch has a table in that epoch while the store's head is still in
  // the one before (an epoch starts in the store with its first batch): the same records, so
  // only the position is set. Anything else means the table holds what the store does not,
  // and it is read again from the store.
  Status MatchTableToStore() {
    const Position stored = store_->applied();
    const Position held = table_->last_position();
    if (held == stored) return Status::Ok();
    if (held.seq == stored.seq && table_->pending() == 0) return table_->ResetPosition(stored);
    spdlog::warn("the table is at {} and the store at {}: reading the table from the store",
                 ToString(held), ToString(stored));
    table_ =
        std::make_unique<SessionTable>(SessionTableOptions{.writable = false, .pages = pages_});
    return store_->LoadInto(*table_);
  }

  void StepDownPrimary() {
    serving_ = false;
    if (!primary_) return;
    primary_->Flush(*table_);
    primary_->Stop();
    primary_.reset();
    ++primary_generation_;  // blobs still waiting for their acknowledgement fail
    if (Status st = table_->BecomeReadOnly(); !st.ok()) {
      spdlog::critical("the table cannot become read-only: {}", st.ToString());
      std::abort();
    }
  }

  JournalLimits Journal() const {
    JournalLimits limits;
    limits.max_bytes = config_.backlog_max_bytes;
    limits.max_age = config_.backlog_max_age;
    return limits;
  }

  // One ingest request: [identity][request id][frame].
  void HandleIngest() {
    // Up to 64 requests a pass, but a task from the event loop (stop taking writes, promote)
    // goes first: a pass of 64 batches takes tens of ms, more under a sanitizer.
    for (int n = 0; n < 64 && !tasks_waiting_.load(std::memory_order_relaxed); ++n) {
      std::vector<zmq::message_t> parts;
      zmq::message_t part;
      bool more = true;
      bool got = false;
      while (more) {
        if (!ingest_.recv(part, zmq::recv_flags::dontwait)) break;
        got = true;
        more = part.more();
        parts.push_back(std::move(part));
      }
      if (!got) return;
      if (parts.size() != 3) {
        ++ingest_refused_;
        if (parts.size() >= 2)
          Reply(parts[0].to_string(), parts[1].to_string(),
                ErrorAnswer("an ingest request is a request id and one frame"));
        continue;
      }
      HandleBatch(parts[0].to_string(), parts[1].to_string(), parts[2]);
    }
  }

  void HandleBatch(const std::string& identity, const std::string& request_id,
                   const zmq::message_t& frame) {
    if (!serving_ || !primary_) {
      ++ingest_refused_;
      Reply(identity, request_id,
            ErrorAnswer(config_.id + " is not the serving primary; writes go to the primary"));
      return;
    }
    const auto decoded = wire::Decode(
        {static_cast<const std::uint8_t*>(frame.data()), frame.size()}, config_.ClusterId());
    if (!decoded.ok()) {
      ++ingest_refused_;
      Reply(identity, request_id, ErrorAnswer("a damaged batch: " + decoded.reason));
      return;
    }
    if (const auto* blob = decoded.envelope->body_as_BlobChunk()) {
      HandleBlob(identity, request_id, *blob);
      return;
    }
    const auto* batch = decoded.envelope->body_as_DeltaBatch();
    if (batch == nullptr || batch->deltas() == nullptr || batch->deltas()->size() == 0) {
      ++ingest_refused_;
      Reply(identity, request_id, ErrorAnswer("an ingest request holds a DeltaBatch with deltas"));
      return;
    }
    // Every delta is checked before any is applied: a batch goes in whole or not at all.
    std::uint32_t index = 0;
    for (const fb::Delta* d : *batch->deltas()) {
      const DeltaView view = replication::ViewOf(*d);
      Status st = view.kind == DeltaKind::kUpsert || view.kind == DeltaKind::kDelete
                      ? replication::ValidateDelta(view)
                      : Status::InvalidArgument("an ingest delta is an Upsert or a Delete");
      if (!st.ok()) {
        ++ingest_refused_;
        Reply(identity, request_id,
              ErrorAnswer("delta " + std::to_string(index) + ": " + st.message()));
        return;
      }
      ++index;
    }
    // Room in the change log for the whole batch, or none of it: while the stream cannot take
    // more (the store behind, the disk full), the client is told to retry, and this thread goes
    // on with its other work.
    const std::size_t count = batch->deltas()->size();
    if (table_->change_log_capacity() - table_->pending() < count) {
      primary_->Pump(*table_);
      if (table_->change_log_capacity() - table_->pending() < count) {
        ++ingest_busy_;
        Reply(identity, request_id,
              BusyAnswer("the change log is full: the stream is behind; retry"));
        return;
      }
    }
    bool sync = false;
    std::uint32_t applied = 0;
    for (const fb::Delta* d : *batch->deltas()) {
      const DeltaView view = replication::ViewOf(*d);
      auto m = view.kind == DeltaKind::kUpsert ? table_->Upsert(view.table, view.key, view.value)
                                               : table_->Delete(view.table, view.key);
      if (!m.ok()) {
        // Checked and given room above, so the table refused a record ValidateDelta accepts.
        ++ingest_refused_;
        primary_->Pump(*table_);
        Reply(
            identity, request_id,
            ErrorAnswer("delta " + std::to_string(applied) + " refused by the table (" +
                        std::to_string(applied) + " applied before it): " + m.status().message()));
        return;
      }
      ++applied;
      if (config_.sync_mode == SyncMode::kSync && !IsUserTable(view.table)) sync = true;
    }
    ++ingest_batches_;
    ingest_records_ += count;
    const Position last = table_->last_position();
    primary_->Pump(*table_);
    boost::json::object answer;
    answer["ok"] = true;
    answer["records"] = count;
    answer["epoch"] = last.epoch;
    answer["last_seq"] = last.seq;
    if (!sync) {
      answer["acked"] = true;
      Reply(identity, request_id, boost::json::serialize(answer));
      return;
    }
    primary_->WhenDurable(
        TableId::kFwSessions, last, [this, identity, request_id, answer](const Status& st) mutable {
          answer["acked"] = st.ok();
          if (!st.ok()) answer["error"] = st.message();
          std::lock_guard lock(acks_mu_);
          finished_acks_.push_back({identity, request_id, boost::json::serialize(answer)});
        });
  }

  // A voice-data blob, whole: checked here, then stored (at the blob lane's pace, which yields
  // to the deltas) and, in sync mode, awaited on min_acks subordinates by ss-blob-ingest.
  void HandleBlob(const std::string& identity, const std::string& request_id,
                  const fb::BlobChunk& chunk) {
    const std::string id = chunk.blob_id()->str();
    const std::size_t size = chunk.data() != nullptr ? chunk.data()->size() : 0;
    std::string why;
    if (id.empty()) {
      why = "a blob needs a blob_id";
    } else if (size == 0) {
      why = "blob '" + id + "' has no data";
    } else if (chunk.offset() != 0 || chunk.total_size() != size) {
      why = "an ingest blob comes whole in one request: offset 0 and total_size " +
            std::to_string(chunk.total_size()) + " equal to the data's " + std::to_string(size) +
            " bytes";
    } else if (size > kMaxIngestBlobBytes) {
      why = "blob '" + id + "' has " + std::to_string(size) + " bytes, more than the " +
            std::to_string(kMaxIngestBlobBytes) + " an ingest request takes";
    } else if (chunk.blob_xxh64() != 0 &&
               chunk.blob_xxh64() != XXH3_64bits(chunk.data()->data(), size)) {
      why = "blob '" + id + "' does not match its blob_xxh64: damaged on the way";
    }
    if (!why.empty()) {
      ++ingest_refused_;
      Reply(identity, request_id, ErrorAnswer(why));
      return;
    }
    {
      std::lock_guard lock(blob_mu_);
      if (blob_queued_bytes_ + size > kMaxQueuedBlobBytes && !blob_jobs_.empty()) {
        ++ingest_busy_;
        Reply(identity, request_id,
              BusyAnswer("the blob queue is full: the blob lane is behind; retry"));
        return;
      }
      BlobJob job;
      job.identity = identity;
      job.request_id = request_id;
      job.blob_id = id;
      job.kind = static_cast<std::uint8_t>(chunk.kind());
      job.name = chunk.name() != nullptr ? chunk.name()->str() : "";
      job.data.assign(reinterpret_cast<const char*>(chunk.data()->data()), size);
      job.primary = primary_;
      job.generation = primary_generation_;
      blob_queued_bytes_ += size;
      blob_jobs_.push_back(std::move(job));
    }
    blob_cv_.notify_one();
  }

  // Blobs taken but not being stored yet are refused when the node stops taking writes: stored
  // after that, they would be acknowledged by a node that is no longer the primary.
  void RefuseQueuedBlobs() {
    std::deque<BlobJob> refused;
    {
      std::lock_guard lock(blob_mu_);
      refused.swap(blob_jobs_);
      blob_queued_bytes_ = 0;
    }
    if (refused.empty()) return;
    ingest_refused_ += refused.size();
    std::lock_guard lock(acks_mu_);
    for (BlobJob& job : refused) {
      finished_acks_.push_back(
          {std::move(job.identity), std::move(job.request_id),
           ErrorAnswer(config_.id + " stopped taking writes before blob '" + job.blob_id +
                       "' was stored; writes go to the primary")});
    }
  }

  void BlobLoop() {
    pthread_setname_np(pthread_self(), "ss-blob-ingest");
    for (;;) {
      BlobJob job;
      {
        std::unique_lock lock(blob_mu_);
        blob_cv_.wait(lock, [&] { return blob_stop_ || !blob_jobs_.empty(); });
        if (blob_jobs_.empty()) return;
        job = std::move(blob_jobs_.front());
        blob_jobs_.pop_front();
        blob_queued_bytes_ -= job.data.size();
      }
      boost::json::object answer;
      auto stored = job.primary->PutBlob(job.blob_id, job.kind, job.name, job.data);
      if (!stored.ok()) {
        answer["ok"] = false;
        answer["error"] = stored.status().message();
      } else {
        answer["ok"] = true;
        answer["blob_id"] = job.blob_id;
        answer["blob_seq"] = stored->seq;
        answer["bytes"] = stored->size;
        const Status acked =
            config_.sync_mode == SyncMode::kSync
                ? AwaitBlobAcks(*job.primary, job.generation, job.blob_id, stored->seq)
                : Status::Ok();
        answer["acked"] = acked.ok();
        if (!acked.ok()) answer["error"] = acked.message();
      }
      job.primary.reset();  // a primary stopped meanwhile ends here, on this thread
      std::lock_guard lock(acks_mu_);
      finished_acks_.push_back(
          {std::move(job.identity), std::move(job.request_id), boost::json::serialize(answer)});
    }
  }

  // Sync mode: the blob counts once min_acks subordinates hold it whole (their blob cursor is
  // past it). The deltas' rule for sync_timeout applies: fail answers with an error, block
  // keeps waiting (until the node gives the primary role up).
  Status AwaitBlobAcks(const replication::Primary& primary, std::uint64_t generation,
                       const std::string& blob_id, std::uint64_t blob_seq) {
    const auto deadline = Clock::now() + config_.sync_timeout;
    for (;;) {
      int holding = 0;
      for (const auto& p : primary.peers()) holding += p.blob_acked.seq > blob_seq ? 1 : 0;
      if (holding >= config_.min_acks) return Status::Ok();
      if (primary_generation_ != generation || blob_stop_flag()) {
        return Status::Unavailable(
            "the node gave the primary role up before " + std::to_string(config_.min_acks) +
            " subordinate(s) held blob '" + blob_id + "' (seq " + std::to_string(blob_seq) + ")");
      }
      if (config_.on_sync_timeout == OnSyncTimeout::kFail && Clock::now() >= deadline) {
        return Status::Unavailable("blob '" + blob_id + "' (seq " + std::to_string(blob_seq) +
                                   ") held by " + std::to_string(holding) +
                                   " subordinate(s) after " +
                                   std::to_string(config_.sync_timeout.count()) + " ms, " +
                                   std::to_string(config_.min_acks) + " needed");
      }
      std::this_thread::sleep_for(2ms);
    }
  }
  bool blob_stop_flag() {
    std::lock_guard lock(blob_mu_);
    return blob_stop_;
  }

  void Reply(const std::string& identity, const std::string& request_id,
             const std::string& answer) {
    try {
      ingest_.send(zmq::buffer(identity), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
      ingest_.send(zmq::buffer(request_id), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
      ingest_.send(zmq::buffer(answer), zmq::send_flags::dontwait);
    } catch (const zmq::error_t& e) {
      spdlog::debug("ingest: answer dropped: {}", e.what());
    }
  }

  void SendFinishedAcks() {
    std::vector<FinishedAck> acks;
    {
      std::lock_guard lock(acks_mu_);
      acks.swap(finished_acks_);
    }
    for (const auto& a : acks) Reply(a.identity, a.request_id, a.answer);
  }

  void RunTasks() {
    std::deque<std::function<void()>> tasks;
    {
      std::lock_guard lock(mu_);
      tasks.swap(tasks_);
      tasks_waiting_.store(false, std::memory_order_relaxed);
    }
    for (auto& t : tasks) t();
  }

  void Publish() {
    DataPlaneStatus s;
    const auto now = Clock::now();
    s.serving = serving_;
    s.following = following_;
    s.ingest_batches = ingest_batches_;
    s.ingest_records = ingest_records_;
    s.ingest_refused = ingest_refused_;
    s.ingest_busy = ingest_busy_;
    s.persisted = store_->applied();
    if (promotion_) {
      s.mode = DataPlaneStatus::Mode::kPromoting;
    }
    if (sub_) {
      if (!promotion_) s.mode = DataPlaneStatus::Mode::kSubordinate;
      const auto st = sub_->status();
      s.applied = st.applied;
      s.persisted = st.persisted;
      s.sync = st.state;
      s.in_sync = st.state == replication::SyncState::kInSync;
      s.progress = st.progress;
      s.primary_head = st.primary_head;
      s.snapshots = st.snapshots;
      s.forks = st.forks;
      sub_->Read([&](const SessionTable& t) { s.sessions = t.total_size(); });
    } else {
      s.applied = table_->last_position();
      s.sessions = table_->total_size();
      s.in_sync = primary_ != nullptr;
      s.sync = replication::SyncState::kInSync;
      s.progress.fraction = 1;
    }
    if (primary_) {
      s.mode = DataPlaneStatus::Mode::kPrimary;
      s.peers = primary_->peers();
      const Seq head = s.applied.seq;
      if (head_samples_.empty() || head_samples_.back().first != head) {
        head_samples_.emplace_back(head, now);
        while (head_samples_.size() > 8192) head_samples_.pop_front();
      }
      for (const auto& p : s.peers) {
        std::chrono::milliseconds lag{0};
        if (p.persisted.seq < head) {
          // Age of the oldest write the peer does not hold yet.
          for (const auto& [seq, at] : head_samples_) {
            if (seq > p.persisted.seq) {
              lag = std::chrono::duration_cast<std::chrono::milliseconds>(now - at);
              break;
            }
          }
        }
        s.peer_lag[p.node_id] = lag;
      }
    }
    std::lock_guard lock(mu_);
    status_ = std::move(s);
  }

  void Loop() {
    pthread_setname_np(pthread_self(), "ss-data");
    auto next_publish = Clock::now();
    auto next_tick = Clock::now();
    while (!stop_) {
      RunTasks();
      StepPromotion();
      StepDrain();
      SendFinishedAcks();
      zmq::pollitem_t item{ingest_.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, 2ms);
      if (item.revents & ZMQ_POLLIN) HandleIngest();
      const auto now = Clock::now();
      // Expiry writes only while the node serves: after it gave the role up, deletes in an
      // abandoned epoch would only be quarantined later.
      if (primary_ && serving_ && now >= next_tick) {
        table_->Tick(WallNow());
        next_tick = now + 100ms;
      }
      if (primary_) primary_->Pump(*table_);
      if (now >= next_publish) {
        Publish();
        // Often: the failover core ranks candidates by this position.
        next_publish = now + 2ms;
      }
    }
  }

  // A wait for records on their way from one node to another: it goes on while they arrive,
  // and ends once none arrived for `stall` or after `limit` in all. A lagging link takes as
  // long as it needs to carry a hand-over's tail; a stuck one is given up quickly.
  class ProgressWait {
   public:
    ProgressWait(Clock::time_point now, std::chrono::milliseconds stall,
                 std::chrono::milliseconds limit)
        : stall_(stall), limit_(limit), progress_at_(now), give_up_at_(now + limit) {}
    // Whether to wait on, with the receiver at `seq` now.
    bool KeepWaiting(Seq seq, Clock::time_point now) {
      if (seq > progress_) {
        progress_ = seq;
        progress_at_ = now;
      }
      return now - progress_at_ < stall_ && now < give_up_at_;
    }
    std::string WhyStopped(Clock::time_point now) const {
      return now >= give_up_at_
                 ? "the hand-over's limit (" + std::to_string(limit_.count()) + " ms) passed"
                 : "nothing arrived for " + std::to_string(stall_.count()) + " ms";
    }

   private:
    std::chrono::milliseconds stall_;
    std::chrono::milliseconds limit_;
    Seq progress_ = 0;
    Clock::time_point progress_at_;
    Clock::time_point give_up_at_;
  };
  // Both halves of a hand-over (the old primary's streaming, the new one's gate) wait alike.
  ProgressWait HandOverProgress() const {
    return ProgressWait(Clock::now(), config_.HandOverWait(), config_.HandOverLimit());
  }
  struct Promotion {
    Epoch epoch = 0;
    Position up_to;
    ProgressWait wait;
    PromotedCallback done;
  };
  struct Drain {
    std::string primary;
    std::string endpoint;
    Position last;  // the last record this node took
    ProgressWait wait;
  };
  struct FinishedAck {
    std::string identity;
    std::string request_id;
    std::string answer;
  };
  struct BlobJob {
    std::string identity;
    std::string request_id;
    std::string blob_id;
    std::uint8_t kind = 0;
    std::string name;
    std::string data;
    std::shared_ptr<replication::Primary> primary;  // the one that took it, kept alive
    std::uint64_t generation = 0;
  };

  const NodeConfig config_;
  const replication::EventSink events_;
  std::unique_ptr<Store> store_;
  std::shared_ptr<PrefaultedPages> pages_;
  std::unique_ptr<SessionTable> table_;  // while idle or primary; the subordinate's otherwise
  // Shared with ss-blob-ingest, whose PutBlob may still run when the data thread stops it.
  std::shared_ptr<replication::Primary> primary_;
  std::atomic<std::uint64_t> primary_generation_{0};
  std::unique_ptr<replication::Subordinate> sub_;
  std::string following_;
  std::optional<Promotion> promotion_;
  std::optional<Drain> drain_;  // a hand-over's tail, streamed before following
  bool serving_ = false;
  std::deque<std::pair<Seq, Clock::time_point>> head_samples_;
  std::uint64_t ingest_batches_ = 0;
  std::uint64_t ingest_records_ = 0;
  std::uint64_t ingest_refused_ = 0;
  std::uint64_t ingest_busy_ = 0;

  zmq::context_t ctx_{1};
  zmq::socket_t ingest_;
  std::string ingest_endpoint_;
  std::thread thread_;
  std::atomic<bool> stop_{false};

  // Shared with the event loop, which runs in SCHED_FIFO where permitted.
  mutable PriorityInheritanceMutex mu_;
  std::deque<std::function<void()>> tasks_;
  std::atomic<bool> tasks_waiting_{false};
  DataPlaneStatus status_;

  std::mutex acks_mu_;
  std::vector<FinishedAck> finished_acks_;

  std::mutex blob_mu_;
  std::condition_variable blob_cv_;
  std::deque<BlobJob> blob_jobs_;
  std::size_t blob_queued_bytes_ = 0;
  bool blob_stop_ = false;
  std::thread blob_thread_;
};

Result<std::unique_ptr<DataPlane>> DataPlane::Start(const NodeConfig& config,
                                                    const std::filesystem::path& store_dir,
                                                    replication::EventSink events) {
  auto impl = std::make_unique<Impl>(config, std::move(events));
  if (Status st = impl->Open(store_dir); !st.ok()) return st;
  return std::unique_ptr<DataPlane>(new DataPlane(std::move(impl)));
}

DataPlane::DataPlane(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DataPlane::~DataPlane() = default;

void DataPlane::Follow(const std::string& primary, const std::string& endpoint) {
  impl_->Post([this, primary, endpoint] { impl_->Follow(primary, endpoint); });
}

void DataPlane::Promote(Epoch epoch, Position up_to, PromotedCallback done) {
  impl_->Post([this, epoch, up_to, done = std::move(done)]() mutable {
    impl_->Promote(epoch, up_to, std::move(done));
  });
}

void DataPlane::Serve(bool on) {
  impl_->Post([this, on] { impl_->Serve(on); });
}

void DataPlane::StopServing(std::function<void(Position)> done) {
  impl_->Post([this, done = std::move(done)] {
    impl_->Serve(false);
    if (impl_->primary_) impl_->primary_->Pump(*impl_->table_);
    done(impl_->table_ ? impl_->table_->last_position() : Position{});
  });
}

DataPlaneStatus DataPlane::status() const {
  return impl_->status();
}

std::future<std::string> DataPlane::Query(std::function<std::string(const SessionTable&)> fn) {
  return Query([fn = std::move(fn)](const SessionTable& t, const Store&) { return fn(t); });
}

std::future<std::string> DataPlane::Query(
    std::function<std::string(const SessionTable&, const Store&)> fn) {
  auto promise = std::make_shared<std::promise<std::string>>();
  auto future = promise->get_future();
  impl_->Post([this, promise, fn = std::move(fn)] {
    const Store& store = *impl_->store_;
    if (impl_->sub_) {
      impl_->sub_->Read([&](const SessionTable& t) { promise->set_value(fn(t, store)); });
    } else {
      promise->set_value(fn(*impl_->table_, store));
    }
  });
  return future;
}

const std::string& DataPlane::ingest_endpoint() const {
  return impl_->ingest_endpoint();
}

void DataPlane::Stop() {
  impl_->Stop();
}

}  // namespace statesync::node
