#include "statesync/replication/primary.h"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <future>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "blob_pacer.h"
#include "statesync/common/idle_class.h"
#include "statesync/replication/messages.h"
#include "zmq_util.h"

namespace statesync::replication {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::string NewReplicationId() {
  std::random_device rd;
  std::string id;
  static constexpr char kHex[] = "0123456789abcdef";
  for (int i = 0; i < 20; ++i) id.push_back(kHex[rd() % 16]);
  return id;
}

struct Outgoing {
  Position first;
  Position last;
  std::string frame;
  Clock::time_point closed_at;
};

struct Recent {
  Position first;
  Position last;
  std::shared_ptr<const std::string> frame;
};

struct Waiter {
  DurableCallback done;
  Clock::time_point deadline;
  bool alerted = false;
};

}  // namespace

class Primary::Impl {
 public:
  Impl(PrimaryOptions options, Store& store, Epoch epoch)
      : o_(std::move(options)), store_(store), epoch_(epoch) {
    if (o_.blob_yield_delay.count() > 0) {
      detail::BlobPacer::Options po;
      po.target = o_.blob_yield_delay;
      po.min_bytes_per_second = static_cast<double>(o_.blob_min_bytes_per_second);
      po.max_bytes_per_second = static_cast<double>(o_.blob_max_bytes_per_second);
      pacer_.emplace(po, Clock::now());
      published_blob_rate_ = pacer_->BytesPerSecond(Clock::now());
    }
  }

  ~Impl() { Stop(); }

  Status Start() {
    if (!waker_.ok()) return Status::IOError("cannot create an eventfd");
    const std::vector<Position> history = store_.history();
    if (!history.empty() && history.back().epoch > epoch_) {
      return Status::StaleEpoch("the store already holds epoch " +
                                std::to_string(history.back().epoch) + ", newer than " +
                                std::to_string(epoch_));
    }
    if (history.empty() || history.back().epoch < epoch_) {
      if (Status st = store_.StartEpoch(epoch_); !st.ok()) return st;
    }
    rid_ = store_.replication_id();
    if (rid_.empty()) {
      rid_ = NewReplicationId();
      if (Status st = store_.SetReplicationId(rid_); !st.ok()) return st;
    }
    journaled_ = store_.applied();
    auto realtime = detail::SetUpRealtime(ctx_, o_.io_realtime_priority, o_.node_id);
    if (!realtime.ok()) return realtime.status();
    realtime_priority_ = *realtime;
    try {
      router_ = zmq::socket_t(ctx_, zmq::socket_type::router);
      router_.set(zmq::sockopt::router_mandatory, 1);
      router_.set(zmq::sockopt::router_handover, 1);
      router_.set(zmq::sockopt::linger, 0);
      router_.set(zmq::sockopt::sndhwm,
                  static_cast<int>(2 * o_.max_credit_batches + 2 * o_.max_credit_blob_chunks + 64));
      router_.set(zmq::sockopt::rcvhwm, 10000);
      router_.bind(o_.endpoint);
      endpoint_ = router_.get(zmq::sockopt::last_endpoint);
    } catch (const zmq::error_t& e) {
      return Status::IOError("cannot bind the replication socket on " + o_.endpoint + ": " +
                             e.what());
    }
    header_ = {o_.cluster_id, o_.node_id, epoch_};
    spdlog::info("{}: serving replication id {} in epoch {} on {}, head at seq {}", o_.node_id,
                 rid_, epoch_, endpoint_, journaled_.seq);
    thread_ = std::thread([this] { Run(); });
    blob_store_thread_ = std::thread([this] { BlobStoreLoop(); });
    return Status::Ok();
  }

  // ---- the table owner's side ----
  std::size_t Pump(SessionTable& table, bool flush) {
    std::lock_guard lock(builder_mu_);
    std::size_t taken = 0;
    for (;;) {
      const auto now = Clock::now();
      if (!builder_.empty()) {
        const bool full =
            builder_.deltas() >= o_.batch_max_deltas || builder_.bytes() >= o_.batch_max_bytes;
        const bool due = Due(now);
        const bool last = table.pending() == 0;
        if (full || due || (flush && last)) {
          if (!CloseBatch(flush)) break;
        }
      }
      if (table.pending() == 0) break;
      if (builder_.deltas() >= o_.batch_max_deltas || builder_.bytes() >= o_.batch_max_bytes) {
        break;  // could not close it: the outbox is full
      }
      if (builder_.empty()) Open(now);
      taken += table.Drain(o_.batch_max_deltas - builder_.deltas(),
                           [this](const DeltaView& d) { builder_.Add(d); });
    }
    return taken;
  }

  void WhenDurable(TableId table, Position position, DurableCallback done) {
    auto it = o_.durability.find(table);
    if (it == o_.durability.end() || it->second == Durability::kAsync || o_.min_acks <= 0) {
      done(Status::Ok());
      return;
    }
    Status answer = Status::Ok();
    {
      std::lock_guard lock(waiters_mu_);
      if (position.seq > durable_.seq) {
        // Stop answers the waiters it finds; one that came later would wait forever.
        if (!stop_) {
          waiters_.emplace(position.seq,
                           Waiter{std::move(done), Clock::now() + o_.sync_timeout, false});
          return;
        }
        answer = StoppedBefore(position.seq);
      }
    }
    done(answer);
  }

  Position durable() const {
    std::lock_guard lock(waiters_mu_);
    return durable_;
  }

  // The caller waits while the ss-blob-store thread, in the idle class (below the stream's threads
  // and the table's writer) and at the lane's rate, writes the blob: storing voice data yields the
  // CPU to the journal's appends.
  Result<BlobInfo> PutBlob(std::string_view blob_id, std::uint8_t kind, std::string_view name,
                           std::string_view data) {
    BlobJob job{blob_id, kind, name, data, {}};
    auto done = job.done.get_future();
    {
      std::lock_guard lock(blob_jobs_mu_);
      if (blob_jobs_stop_ || !blob_store_thread_.joinable()) {
        return Status::Unavailable("the primary is stopped: blob " + std::string(blob_id) +
                                   " was not stored");
      }
      blob_jobs_.push_back(&job);
    }
    blob_jobs_cv_.notify_one();
    auto info = done.get();
    if (info.ok()) waker_.Signal();
    return info;
  }

  const std::string& replication_id() const { return rid_; }
  const std::string& endpoint() const { return endpoint_; }
  Epoch epoch() const { return epoch_; }

  PrimaryStats stats() const {
    PrimaryStats s;
    {
      std::lock_guard lock(stats_mu_);
      s = stats_;
    }
    // Not under stats_mu_: CloseBatch takes the two the other way round.
    std::lock_guard olock(outbox_mu_);
    s.outbox_bytes = outbox_bytes_;
    return s;
  }

  std::vector<PeerStatus> peers() const {
    std::shared_ptr<const std::vector<PeerStatus>> published;
    {
      // Only the pointer under the lock, which the I/O thread also takes: a caller preempted
      // while copying strings must not hold it there.
      std::lock_guard lock(stats_mu_);
      published = peer_status_;
    }
    return published ? *published : std::vector<PeerStatus>{};
  }

  void Stop() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard lock(blob_jobs_mu_);
      blob_jobs_stop_ = true;  // blobs already handed over are stored first
    }
    blob_jobs_cv_.notify_all();
    blob_store_thread_.join();
    stop_ = true;
    waker_.Signal();
    thread_.join();
    std::multimap<Seq, Waiter> left;
    {
      std::lock_guard lock(waiters_mu_);
      left.swap(waiters_);
    }
    for (auto& [seq, w] : left) w.done(StoppedBefore(seq));
  }

 private:
  struct BlobJob {
    std::string_view blob_id;
    std::uint8_t kind;
    std::string_view name;
    std::string_view data;
    std::promise<Result<BlobInfo>> done;
  };

  void BlobStoreLoop() {
    pthread_setname_np(pthread_self(), "ss-blob-store");
    EnterIdleClass();  // below the table's writer as well as the stream (docs/BENCHMARKS.md)
    detail::TokenBucket bucket;
    const auto pace = [&](std::size_t bytes) {
      for (;;) {
        const auto now = Clock::now();
        const double rate = PublishedBlobRate();
        if (std::isinf(rate)) break;
        bucket.Refill(now, rate);
        const auto wait = bucket.Wait(bytes, rate);
        if (wait.count() == 0) break;
        std::unique_lock lock(blob_jobs_mu_);
        // A stopping primary stores what was handed over at once.
        if (blob_jobs_cv_.wait_for(lock, wait, [&] { return blob_jobs_stop_; })) break;
      }
      bucket.tokens -= static_cast<double>(bytes);
      if (pacer_) stored_blob_bytes_.fetch_add(bytes, std::memory_order_relaxed);
    };
    for (;;) {
      BlobJob* job = nullptr;
      {
        std::unique_lock lock(blob_jobs_mu_);
        blob_jobs_cv_.wait(lock, [&] { return blob_jobs_stop_ || !blob_jobs_.empty(); });
        if (blob_jobs_.empty()) return;
        job = blob_jobs_.front();
        blob_jobs_.pop_front();
      }
      job->done.set_value(
          store_.PutBlob(job->blob_id, job->kind, job->name, job->data, o_.blob_chunk_bytes, pace));
    }
  }

  // The pacer is the I/O thread's alone. ss-blob-store, in the idle class, reads the rate the I/O
  // thread last published and hands in what it stored through an atomic: a lock shared with it
  // could be held by it while preempted, for as long as normal-class threads keep the cores busy,
  // and the I/O thread would wait as long.
  double UnpacedRate() const {
    return o_.blob_max_bytes_per_second == 0 ? std::numeric_limits<double>::infinity()
                                             : static_cast<double>(o_.blob_max_bytes_per_second);
  }

  // The blob lane's rate now, in bytes per second (infinite: not limited). The I/O thread's.
  double BlobRate(Clock::time_point now) {
    if (!pacer_) return UnpacedRate();
    pacer_->OnMoved(stored_blob_bytes_.exchange(0, std::memory_order_relaxed));
    const double rate = pacer_->BytesPerSecond(now);
    published_blob_rate_.store(rate, std::memory_order_relaxed);
    return rate;
  }

  // The rate as the I/O thread last published it (every pass of its loop), for ss-blob-store.
  double PublishedBlobRate() const {
    return pacer_ ? published_blob_rate_.load(std::memory_order_relaxed) : UnpacedRate();
  }

  struct Peer {
    std::string id;
    std::uint64_t session = 0;
    PeerStatus::State state = PeerStatus::State::kLost;
    Seq sent_seq = 0;
    std::uint64_t sent_msgs = 0;
    std::uint64_t acked_received = 0;
    std::uint32_t window = 0;
    std::uint64_t blob_sent = 0;
    std::uint64_t blob_acked_received = 0;
    std::uint32_t blob_window = 0;
    BlobCursor blob_next_send;
    detail::TokenBucket blob_tokens;  // what the lane may send this subordinate now
    BlobCursor blob_acked;
    Position persisted;
    std::unique_ptr<StoreSnapshot> snapshot;
    Position snapshot_position;
    std::uint64_t snapshot_sent = 0;
    std::uint64_t snapshot_total = 0;
    Clock::time_point last_heard;
    Clock::time_point last_keepalive;
    bool caught_up = false;
    std::string pending;  // a stream message the socket could not take yet

    std::uint64_t credit() const {
      const std::uint64_t limit = acked_received + window;
      return limit > sent_msgs ? limit - sent_msgs : 0;
    }
    std::uint64_t blob_credit() const {
      const std::uint64_t limit = blob_acked_received + blob_window;
      return limit > blob_sent ? limit - blob_sent : 0;
    }
  };

  // REQUIRES: builder_mu_ held and the batch empty. Tells the I/O thread when the batch is due,
  // waking it when it sleeps past that.
  void Open(Clock::time_point now) {
    const auto due = (now + o_.batch_deadline).time_since_epoch().count();
    open_due_.store(due);
    if (due < io_wakes_at_.load()) waker_.Signal();
  }

  // Whether a batch is open and due at `now`.
  bool Due(Clock::time_point now) const {
    const Clock::rep due = open_due_.load();
    return due != 0 && now.time_since_epoch().count() >= due;
  }

  // REQUIRES: builder_mu_ held. False if the outbox is full (the batch stays open). The frame is
  // finished outside outbox_mu_, which the I/O thread takes on every pass: finishing is a copy
  // and a checksum of up to batch_max_bytes on the owner's thread, and an owner preempted inside
  // it would hold the I/O thread for as long.
  bool CloseBatch(bool wait) {
    {
      std::unique_lock lock(outbox_mu_);
      if (outbox_bytes_ >= o_.outbox_max_bytes) {
        if (!wait) {
          std::lock_guard slock(stats_mu_);
          ++stats_.outbox_full;
          return false;
        }
        outbox_cv_.wait(lock, [&] { return outbox_bytes_ < o_.outbox_max_bytes || stop_; });
        if (stop_) return false;
      }
    }
    // Until the push below only TakeOutbox touches the outbox (builder_mu_ keeps other closers
    // out): it takes batches and puts back, in front, those it could not journal, whose bytes
    // outbox_bytes_ never stopped counting. The room found above is still there, and a batch
    // put back stays ahead of this one.
    Outgoing out{builder_.first(), builder_.last(), {}, Clock::now()};
    const std::size_t n = builder_.deltas();
    out.frame = builder_.Finish(header_, rid_);
    open_due_.store(0);
    {
      std::lock_guard slock(stats_mu_);
      ++stats_.batches;
      stats_.deltas += n;
      stats_.bytes += out.frame.size();
    }
    {
      std::lock_guard lock(outbox_mu_);
      outbox_bytes_ += out.frame.size();
      outbox_.push_back(std::move(out));
    }
    waker_.Signal();
    return true;
  }

  // ---- the I/O thread ----
  void Run() {
    pthread_setname_np(pthread_self(), "ss-primary-io");
    if (realtime_priority_ > 0) EnterRealtime(realtime_priority_);
    zmq::pollitem_t items[] = {{router_.handle(), 0, ZMQ_POLLIN, 0},
                               {nullptr, waker_.fd(), ZMQ_POLLIN, 0}};
    auto last_trim = Clock::now();
    while (!stop_) {
      try {
        zmq::poll(items, 2, PollTimeout());
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) spdlog::error("{}: poll failed: {}", o_.node_id, e.what());
      }
      if (items[1].revents & ZMQ_POLLIN) waker_.Clear();
      CloseDueBatch();
      TakeOutbox();
      ReceiveAll();
      const auto now = Clock::now();
      for (auto& [id, peer] : peers_) Serve(peer, now);
      CheckTimers(now);
      if (now - last_trim >= o_.trim_interval) {
        Trim();
        last_trim = now;
      }
      PublishStatus(now);
    }
    // Journal what was handed over, so that nothing Pump took is lost on an orderly stop.
    TakeOutbox();
    for (auto& [id, peer] : peers_) Serve(peer, Clock::now());
  }

  // How long the I/O thread may sleep: 5 ms, or until the open batch is due (rounded up to
  // ZeroMQ's milliseconds, at least one: a batch past due whose lock is busy must not make the
  // thread spin). A due batch that found the outbox full waits for TakeOutbox instead.
  // io_wakes_at_ is stored before open_due_ is read, and Pump stores open_due_ before it reads
  // io_wakes_at_: one of the two sees the other's write. The thread wakes no later than any value
  // it stores there, so Pump, which signals only for a batch due before the value it reads,
  // never leaves a batch waiting past its deadline.
  milliseconds PollTimeout() {
    const auto now = Clock::now();
    constexpr milliseconds kLongest{5};
    io_wakes_at_.store((now + kLongest).time_since_epoch().count());
    const std::int64_t due = open_due_.load();
    if (due == 0 || close_blocked_) return kLongest;
    const auto wait =
        std::clamp(std::chrono::ceil<milliseconds>(Clock::time_point(Clock::duration(due)) - now),
                   milliseconds(1), kLongest);
    // The wake-up really asked for, so that Pump signals only for a batch due before it.
    io_wakes_at_.store((now + wait).time_since_epoch().count());
    return wait;
  }

  // Closes the open batch once it is due, when the table's owner has not: deltas Pump took leave
  // at their deadline even while the owner's thread waits for a core (on 2 busy cores that wait
  // reached several milliseconds, docs/BENCHMARKS.md). Never waits for builder_mu_: an owner
  // holding it is pumping and closes a due batch itself, and a realtime I/O thread must not wait
  // behind a preempted normal one.
  void CloseDueBatch() {
    if (!Due(Clock::now())) return;
    std::unique_lock lock(builder_mu_, std::try_to_lock);
    // Due again under the lock: the owner may have closed that batch and opened another.
    if (!lock.owns_lock() || !Due(Clock::now())) return;
    if (!CloseBatch(false)) close_blocked_ = true;
  }

  void TakeOutbox() {
    // While the store's materializer is too far behind, batches stay in the outbox: Pump then
    // stops taking deltas, and the table's change log holds them (and at last refuses writes).
    if (store_.materializer_behind() && !stop_) return;
    std::deque<Outgoing> batch;
    {
      std::lock_guard lock(outbox_mu_);
      batch.swap(outbox_);
    }
    if (batch.empty()) return;
    const TimePoint now = detail::WallNow();
    std::size_t released = 0;
    while (!batch.empty()) {
      Outgoing& out = batch.front();
      Status st = store_.Append(out.first, out.last, wire::AsBytes(out.frame), now);
      if (!st.ok()) {
        spdlog::error("{}: cannot journal the batch at seq {}; retrying: {}", o_.node_id,
                      out.first.seq, st.ToString());
        break;
      }
      journaled_ = out.last;
      if (pacer_) {
        closed_at_.emplace_back(out.last.seq, out.closed_at);
        if (closed_at_.size() > kMaxClosedAt) closed_at_.pop_front();
      }
      released += out.frame.size();
      recent_bytes_ += out.frame.size();
      recent_.push_back(
          {out.first, out.last, std::make_shared<const std::string>(std::move(out.frame))});
      batch.pop_front();
    }
    while (recent_bytes_ > o_.recent_max_bytes && !recent_.empty()) {
      recent_bytes_ -= recent_.front().frame->size();
      recent_.pop_front();
    }
    {
      std::lock_guard lock(outbox_mu_);
      // What could not be journaled goes back in front, in order.
      while (!batch.empty()) {
        outbox_.push_front(std::move(batch.back()));
        batch.pop_back();
      }
      outbox_bytes_ -= released;
    }
    if (released > 0) close_blocked_ = false;
    outbox_cv_.notify_all();
  }

  void ReceiveAll() {
    for (int n = 0; n < 1000; ++n) {
      zmq::message_t id, body;
      try {
        if (!router_.recv(id, zmq::recv_flags::dontwait)) return;
        if (!id.more() || !router_.recv(body, zmq::recv_flags::dontwait)) continue;
        while (body.more()) {  // a message with more parts than ours: drain and refuse it
          zmq::message_t extra;
          if (!router_.recv(extra, zmq::recv_flags::dontwait)) break;
          body.rebuild(extra.data(), extra.size());
        }
      } catch (const zmq::error_t& e) {
        spdlog::error("{}: receive failed: {}", o_.node_id, e.what());
        return;
      }
      Handle(id.to_string(), body);
    }
  }

  void Handle(const std::string& from, const zmq::message_t& body) {
    wire::DecodeLimits limits;
    limits.max_message_bytes = o_.max_message_bytes;
    wire::Decoded d = wire::Decode({static_cast<const std::uint8_t*>(body.data()), body.size()},
                                   o_.cluster_id, limits);
    if (!d.ok()) {
      std::lock_guard lock(stats_mu_);
      detail::CountDecodeError(stats_.input, d, o_.node_id + " from " + from);
      Emit(ReplicationEvent::Kind::kBadInput, from, d.reason);
      return;
    }
    const fb::Envelope& env = *d.envelope;
    if (env.epoch() > epoch_) {
      // A subordinate has followed a newer primary: this node is no longer the primary of the
      // cluster. The failover core decides what to do; replication keeps serving meanwhile.
      Emit(ReplicationEvent::Kind::kBadInput, from,
           from + " has seen epoch " + std::to_string(env.epoch()) + ", newer than ours (" +
               std::to_string(epoch_) + ")");
    }
    switch (env.body_type()) {
      case fb::Body::Hello:
        OnHello(from, From(*env.body_as_Hello()));
        return;
      case fb::Body::Ack:
        OnAck(from, From(*env.body_as_Ack()));
        return;
      default: {
        std::lock_guard lock(stats_mu_);
        const auto n = ++stats_.input.unexpected;
        detail::LogRefusal(n, o_.node_id,
                           "a " + std::string(fb::EnumNameBody(env.body_type())) + " from " + from +
                               ", which a primary does not take");
        return;
      }
    }
  }

  void OnHello(const std::string& from, const HelloMsg& m) {
    if (m.node_id != from) {
      // ZeroMQ renames the connection a new one with the same routing id took over; what was
      // still queued on the old one arrives under a made-up id.
      std::lock_guard lock(stats_mu_);
      ++stats_.input.late;
      return;
    }
    Peer& p = peers_[from];
    p = Peer{};
    p.id = from;
    p.session = m.session;
    p.window = std::min(m.credit_batches, o_.max_credit_batches);
    p.blob_window = std::min(m.credit_blob_chunks, o_.max_credit_blob_chunks);
    p.blob_next_send = m.blob_next;
    p.blob_acked = m.blob_next;
    p.last_heard = p.last_keepalive = Clock::now();
    const std::vector<Position> history = store_.history();
    std::string how;
    if (m.replication_id == rid_) {
      const ForkPoint fork = FindFork(history, journaled_.seq, m.history, m.last_applied);
      if (fork.diverged) {
        SendFork(p, fork.common);
        how = "its history left ours after " + ToString(fork.common) + " (it holds up to " +
              ToString(m.last_applied) + "): the tail goes to its quarantine, then a snapshot";
      } else if (CanContinue(m.last_applied.seq)) {
        p.state = PeerStatus::State::kContinue;
        p.sent_seq = m.last_applied.seq;
        p.persisted = m.last_applied;
        Send(p, Encode(header_, ContinueMsg{rid_, m.last_applied, p.session, journaled_.seq}),
             false);
        how = "CONTINUE from seq " + std::to_string(m.last_applied.seq) + " (head " +
              std::to_string(journaled_.seq) + ")";
      } else {
        p.state = PeerStatus::State::kSnapshot;
        how = "SNAPSHOT: seq " + std::to_string(m.last_applied.seq + 1) +
              " is no longer in the journal";
      }
    } else if (m.last_applied.seq == 0 && CanContinue(0)) {
      // A new subordinate, and the journal still holds the whole history: no snapshot needed.
      p.state = PeerStatus::State::kContinue;
      p.sent_seq = 0;
      Send(p, Encode(header_, ContinueMsg{rid_, Position{}, p.session, journaled_.seq}), false);
      how = "CONTINUE from the start (a new subordinate; the journal holds all " +
            std::to_string(journaled_.seq) + " deltas)";
    } else if (m.last_applied.seq > 0) {
      SendFork(p, Position{});
      how = "another history (" + m.replication_id +
            "): all it holds goes to its quarantine, "
            "then a snapshot";
    } else {
      p.state = PeerStatus::State::kSnapshot;
      how = "SNAPSHOT: a new subordinate";
    }
    spdlog::info("{}: {} said HELLO at {}: {}", o_.node_id, from, ToString(m.last_applied), how);
    Emit(ReplicationEvent::Kind::kPeerJoined, from, how);
  }

  void SendFork(Peer& p, Position common) {
    p.state = PeerStatus::State::kSnapshot;
    Send(p, Encode(header_, ForkMsg{rid_, common, p.session}), false);
    std::lock_guard lock(stats_mu_);
    ++stats_.forks;
  }

  bool CanContinue(Seq last) const {
    if (last == journaled_.seq) return true;
    if (last == 0 && journaled_.seq > 0) {
      const JournalStats js = store_.journal();
      return js.batches > 0 && js.first_seq == 1;
    }
    if (last > journaled_.seq) return false;
    const JournalStats js = store_.journal();
    return js.batches > 0 && js.first_seq <= last + 1;
  }

  void OnAck(const std::string& from, const AckMsg& m) {
    auto it = peers_.find(from);
    if (it == peers_.end() || it->second.session != m.session) return;  // an older session's
    Peer& p = it->second;
    p.last_heard = Clock::now();
    if (p.state == PeerStatus::State::kLost) return;
    p.acked_received = std::max(p.acked_received, m.received);
    p.window = std::min(m.credit_batches, o_.max_credit_batches);
    p.blob_acked_received = std::max(p.blob_acked_received, m.blob_received);
    p.blob_window = std::min(m.credit_blob_chunks, o_.max_credit_blob_chunks);
    p.blob_acked = m.blob_next;
    // With no chunk in flight, the subordinate's cursor is where the lane resumes (after a
    // chunk it refused, it is behind what was sent).
    if (p.blob_acked_received >= p.blob_sent && m.blob_next < p.blob_next_send) {
      p.blob_next_send = m.blob_next;
    }
    if (p.persisted < m.persisted) p.persisted = m.persisted;
    if (p.caught_up) SampleDeltaDelay(p.persisted.seq);
    if (!p.caught_up && p.state == PeerStatus::State::kContinue &&
        p.persisted.seq == journaled_.seq) {
      p.caught_up = true;
      Emit(ReplicationEvent::Kind::kCaughtUp, from,
           from + " caught up at seq " + std::to_string(p.persisted.seq));
    }
    UpdateDurable();
  }

  // A caught-up subordinate's acknowledgement gives the blob pacer the delay of the newest batch
  // it covers (the first subordinate to cover a batch gives its sample).
  void SampleDeltaDelay(Seq persisted) {
    if (!pacer_ || closed_at_.empty() || closed_at_.front().first > persisted) return;
    Clock::time_point closed;
    while (!closed_at_.empty() && closed_at_.front().first <= persisted) {
      closed = closed_at_.front().second;
      closed_at_.pop_front();
    }
    const auto now = Clock::now();
    pacer_->OnDeltaDelay(now, std::chrono::duration_cast<std::chrono::microseconds>(now - closed));
  }

  static Status StoppedBefore(Seq seq) {
    return Status::Unavailable("the primary stopped before seq " + std::to_string(seq) +
                               " was acknowledged");
  }

  void UpdateDurable() {
    std::vector<Position> persisted;
    for (const auto& [id, p] : peers_) {
      if (p.state != PeerStatus::State::kLost) persisted.push_back(p.persisted);
    }
    if (o_.min_acks <= 0 || persisted.size() < static_cast<std::size_t>(o_.min_acks)) return;
    std::sort(persisted.begin(), persisted.end(), std::greater<>());
    const Position d = persisted[o_.min_acks - 1];
    // The callbacks run outside the lock: one may ask WhenDurable again.
    completed_.clear();
    {
      std::lock_guard lock(waiters_mu_);
      if (d <= durable_) return;
      durable_ = d;
      while (!waiters_.empty() && waiters_.begin()->first <= durable_.seq) {
        completed_.push_back(std::move(waiters_.begin()->second.done));
        waiters_.erase(waiters_.begin());
      }
    }
    for (auto& done : completed_) done(Status::Ok());
  }

  // Sends a stream message (counted against credit) or a control message.
  bool Send(Peer& p, std::string_view frame, bool counted) {
    switch (detail::Send(router_, p.id, frame)) {
      case detail::SendResult::kSent:
        if (counted) ++p.sent_msgs;
        return true;
      case detail::SendResult::kFull:
        // Credit keeps the socket's queue below its high-water mark, so this is rare: keep the
        // message and send it before anything else.
        if (!counted) return false;
        p.pending.assign(frame);
        ++p.sent_msgs;
        return true;
      case detail::SendResult::kGone:
        MarkLost(p, "its connection is gone");
        return false;
    }
    return false;
  }

  void MarkLost(Peer& p, const std::string& why) {
    if (p.state == PeerStatus::State::kLost) return;
    p.state = PeerStatus::State::kLost;
    p.snapshot.reset();
    spdlog::warn("{}: lost subordinate {}: {}", o_.node_id, p.id, why);
    Emit(ReplicationEvent::Kind::kPeerLost, p.id, "lost subordinate " + p.id + ": " + why);
    UpdateDurable();
  }

  void Serve(Peer& p, Clock::time_point now) {
    if (p.state == PeerStatus::State::kLost) return;
    if (!p.pending.empty()) {
      switch (detail::Send(router_, p.id, p.pending)) {
        case detail::SendResult::kSent:
          p.pending.clear();
          break;
        case detail::SendResult::kFull:
          return;
        case detail::SendResult::kGone:
          MarkLost(p, "its connection is gone");
          return;
      }
    }
    bool deltas_waiting = false;
    if (p.state == PeerStatus::State::kSnapshot) {
      ServeSnapshot(p);
      deltas_waiting = p.state == PeerStatus::State::kSnapshot;
    }
    if (p.state == PeerStatus::State::kContinue) deltas_waiting = !ServeContinue(p);
    // The blob lane: one chunk while deltas wait, as many as the window and the lane's rate
    // allow otherwise.
    int chunks = deltas_waiting ? 1 : 1 << 20;
    const double rate = BlobRate(now);
    if (std::isinf(rate)) {
      p.blob_tokens.tokens = 1;
    } else {
      p.blob_tokens.Refill(now, rate);
    }
    while (chunks-- > 0 && p.state != PeerStatus::State::kLost && p.blob_credit() > 0 &&
           p.blob_tokens.tokens > 0) {
      if (!ServeBlob(p, !std::isinf(rate))) break;
    }
    if (now - p.last_keepalive >= o_.keepalive && p.state != PeerStatus::State::kLost) {
      SendKeepalive(p);
      p.last_keepalive = now;
    }
  }

  // Returns true when the peer has everything up to the head (or cannot be sent more).
  bool ServeContinue(Peer& p) {
    while (p.credit() > 0 && p.sent_seq < journaled_.seq) {
      // 1. From the ring of recent batches.
      auto it = std::upper_bound(recent_.begin(), recent_.end(), p.sent_seq + 1,
                                 [](Seq s, const Recent& r) { return s < r.first.seq; });
      if (it != recent_.begin() && std::prev(it)->last.seq > p.sent_seq) {
        const Recent& r = *std::prev(it);
        if (r.first.seq == p.sent_seq + 1) {
          if (!Send(p, *r.frame, true)) return false;
        } else if (!SendRewrapped(p, *r.frame)) {
          return false;
        }
        p.sent_seq = r.last.seq;
        continue;
      }
      // 2. From the journal.
      std::vector<JournalBatch> batches;
      const std::size_t batches_wanted = std::min<std::uint64_t>(p.credit(), 16);
      Status st = store_.ReadJournal(p.sent_seq, batches_wanted * o_.batch_max_bytes, &batches,
                                     batches_wanted);
      if (st.code() == Status::Code::kNotFound) {
        spdlog::info("{}: {} is at seq {}, which the journal no longer holds ({}): snapshot",
                     o_.node_id, p.id, p.sent_seq, st.message());
        p.state = PeerStatus::State::kSnapshot;
        return false;
      }
      if (!st.ok() || batches.empty()) {
        if (!st.ok()) spdlog::error("{}: reading the journal: {}", o_.node_id, st.ToString());
        return false;
      }
      for (const JournalBatch& b : batches) {
        if (p.credit() == 0) return false;
        if (!SendRewrapped(p, b.frame)) return false;
        p.sent_seq = b.last.seq;
      }
    }
    return p.sent_seq >= journaled_.seq;
  }

  // Sends a stored batch under this primary's envelope, cut to the deltas the peer lacks.
  bool SendRewrapped(Peer& p, std::string_view frame) {
    std::span<const std::uint8_t> payload;
    wire::DecodeLimits limits;
    limits.max_message_bytes = 1u << 30;
    wire::Decoded d = wire::Unframe(wire::AsBytes(frame), limits, &payload);
    if (d.ok()) d = wire::VerifyEnvelope(payload, limits);
    if (!d.ok() || d.envelope->body_as_DeltaBatch() == nullptr) {
      spdlog::error("{}: a journal batch does not decode: {}", o_.node_id, d.reason);
      return false;
    }
    const fb::DeltaBatch& batch = *d.envelope->body_as_DeltaBatch();
    const Seq first = batch.deltas()->Get(0)->position()->seq();
    if (d.envelope->epoch() == epoch_ && first == p.sent_seq + 1) return Send(p, frame, true);
    return Send(p, Rewrap(batch, header_, p.sent_seq), true);
  }

  void ServeSnapshot(Peer& p) {
    if (!p.snapshot) {
      auto snap = store_.OpenSnapshot();
      if (!snap.ok()) {
        spdlog::error("{}: cannot open a snapshot for {}: {}", o_.node_id, p.id,
                      snap.status().ToString());
        return;
      }
      p.snapshot = std::move(snap).value();
      p.snapshot_position = p.snapshot->position();
      p.snapshot_total = p.snapshot->records_estimate();
      p.snapshot_sent = 0;
      {
        std::lock_guard lock(stats_mu_);
        ++stats_.snapshots;
      }
      const std::string text = "sending " + p.id + " a snapshot at " +
                               ToString(p.snapshot_position) + " (about " +
                               std::to_string(p.snapshot_total) + " records)";
      spdlog::info("{}: {}", o_.node_id, text);
      Emit(ReplicationEvent::Kind::kSnapshotStarted, p.id, text);
    }
    std::vector<StoreSnapshot::Record> records;
    while (p.credit() > 0) {
      Status st = p.snapshot->Next(o_.snapshot_chunk_bytes, &records);
      if (!st.ok()) {
        spdlog::error("{}: snapshot for {} failed: {}", o_.node_id, p.id, st.ToString());
        p.snapshot.reset();
        return;
      }
      if (records.empty()) {
        std::vector<Position> history;
        for (const Position& h : store_.history()) {
          if (h.seq <= p.snapshot_position.seq) history.push_back(h);
        }
        if (history.empty() && p.snapshot_position.seq > 0) {
          history.push_back({p.snapshot_position.epoch, 1});
        }
        SnapshotEndMsg end{p.session, rid_, p.snapshot_position, p.snapshot_sent, history};
        if (!Send(p, Encode(header_, end), true)) return;
        const std::string text = "snapshot for " + p.id +
                                 " sent: " + std::to_string(p.snapshot_sent) + " records at " +
                                 ToString(p.snapshot_position);
        spdlog::info("{}: {}", o_.node_id, text);
        Emit(ReplicationEvent::Kind::kSnapshotFinished, p.id, text);
        p.snapshot.reset();
        p.state = PeerStatus::State::kContinue;
        p.sent_seq = p.snapshot_position.seq;
        return;
      }
      const std::string frame = EncodeSnapshotChunk(header_, p.session, records,
                                                    std::max(p.snapshot_total, p.snapshot_sent), 0);
      if (!Send(p, frame, true)) return;
      p.snapshot_sent += records.size();
    }
  }

  // Returns false when there was nothing to send.
  bool ServeBlob(Peer& p, bool paced) {
    const BlobCursor head = store_.blob_cursor();
    if (p.blob_next_send.seq >= head.seq) return false;
    BlobInfo info;
    std::string data;
    Status st = store_.ReadBlob(p.blob_next_send.seq, p.blob_next_send.offset, o_.blob_chunk_bytes,
                                &info, &data);
    if (st.code() == Status::Code::kNotFound) {
      p.blob_next_send = {p.blob_next_send.seq + 1, 0};  // a blob this node never completed
      return true;
    }
    if (!st.ok()) {
      spdlog::error("{}: reading blob {}: {}", o_.node_id, p.blob_next_send.seq, st.ToString());
      return false;
    }
    BlobChunkMsg m{info, p.blob_next_send.offset, data, 0};
    if (!Send(p, Encode(header_, m), false)) return false;  // blob chunks have their own credit
    ++p.blob_sent;
    if (paced) p.blob_tokens.tokens -= static_cast<double>(data.size());
    if (pacer_) pacer_->OnMoved(data.size());
    {
      std::lock_guard lock(stats_mu_);
      ++stats_.blob_chunks_sent;
      stats_.blob_bytes_sent += data.size();
    }
    p.blob_next_send.offset += data.size();
    if (p.blob_next_send.offset >= info.size) p.blob_next_send = {info.seq + 1, 0};
    return true;
  }

  void SendKeepalive(Peer& p) { Send(p, EncodeKeepalive(header_, journaled_.seq), false); }

  void CheckTimers(Clock::time_point now) {
    for (auto& [id, p] : peers_) {
      if (p.state != PeerStatus::State::kLost && now - p.last_heard > o_.peer_timeout) {
        MarkLost(p, "no word for " +
                        std::to_string(
                            std::chrono::duration_cast<milliseconds>(now - p.last_heard).count()) +
                        " ms");
      }
    }
    std::vector<std::string> alerts;
    std::vector<std::pair<DurableCallback, std::string>> failed;
    {
      std::lock_guard lock(waiters_mu_);
      for (auto it = waiters_.begin(); it != waiters_.end();) {
        Waiter& w = it->second;
        if (now < w.deadline || w.alerted) {
          ++it;
          continue;
        }
        const std::string text =
            "a sync write at seq " + std::to_string(it->first) + " has not been persisted by " +
            std::to_string(o_.min_acks) + " subordinate(s) within " +
            std::to_string(o_.sync_timeout.count()) + " ms" +
            (o_.on_sync_timeout == SyncFailure::kFail ? ": it fails" : ": it keeps waiting");
        alerts.push_back(text);
        if (o_.on_sync_timeout == SyncFailure::kFail) {
          failed.emplace_back(std::move(w.done), text);
          it = waiters_.erase(it);
        } else {
          w.alerted = true;
          ++it;
        }
      }
    }
    if (!alerts.empty()) {
      {
        std::lock_guard lock(stats_mu_);
        stats_.sync_timeouts += alerts.size();
      }
      spdlog::warn("{}: {} ({} such writes)", o_.node_id, alerts.front(), alerts.size());
      Emit(ReplicationEvent::Kind::kSyncTimeout, "", alerts.front());
    }
    // The alert is out before the writer learns of the failure.
    for (auto& [done, text] : failed) done(Status::Unavailable(text));
  }

  // The journal keeps what a snapshot in progress and a subordinate that is catching up still
  // need, so that a subordinate fed a snapshot under heavy writes does not fall out again at
  // once; but only up to twice the size limit: beyond it, a peer that cannot keep up gets a
  // snapshot again, and the disk stays bounded.
  void Trim() {
    Seq keep = UINT64_MAX;
    if (store_.journal().bytes <= 2 * o_.journal.max_bytes) {
      for (const auto& [id, p] : peers_) {
        if (p.state == PeerStatus::State::kSnapshot && p.snapshot) {
          keep = std::min(keep, p.snapshot_position.seq);
        } else if (p.state == PeerStatus::State::kContinue) {
          keep = std::min(keep, p.persisted.seq);
        }
      }
    }
    auto dropped = store_.Trim(o_.journal, detail::WallNow(), keep);
    if (!dropped.ok()) {
      spdlog::error("{}: trimming the journal: {}", o_.node_id, dropped.status().ToString());
    }
  }

  void PublishStatus(Clock::time_point now) {
    std::vector<PeerStatus> out;
    for (const auto& [id, p] : peers_) {
      PeerStatus s;
      s.node_id = id;
      s.state = p.state;
      s.persisted = p.persisted;
      s.sent_seq = p.sent_seq;
      s.snapshot_records_sent = p.snapshot_sent;
      s.snapshot_records_total = p.snapshot_total;
      s.blob_acked = p.blob_acked;
      s.since_heard = std::chrono::duration_cast<milliseconds>(now - p.last_heard);
      out.push_back(std::move(s));
    }
    const double blob_rate = BlobRate(now);
    auto published = std::make_shared<const std::vector<PeerStatus>>(std::move(out));
    {
      std::lock_guard lock(stats_mu_);
      peer_status_.swap(published);  // the previous one is freed outside the lock
      stats_.journaled = journaled_;
      stats_.recent_bytes = recent_bytes_;
      stats_.blob_bytes_per_second = std::isinf(blob_rate) ? 0 : blob_rate;
    }
  }

  void Emit(ReplicationEvent::Kind kind, const std::string& peer, const std::string& text) {
    if (o_.events) o_.events({kind, peer, text});
  }

  PrimaryOptions o_;
  Store& store_;
  const Epoch epoch_;
  std::string rid_;
  std::string endpoint_;
  EnvelopeHeader header_;
  detail::Waker waker_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex blob_jobs_mu_;
  std::condition_variable blob_jobs_cv_;
  std::deque<BlobJob*> blob_jobs_;  // each waited for by its PutBlob caller
  bool blob_jobs_stop_ = false;
  std::thread blob_store_thread_;
  std::optional<detail::BlobPacer> pacer_;  // none when blob_yield_delay is zero; the I/O thread's
  std::atomic<double> published_blob_rate_{0};
  std::atomic<std::uint64_t> stored_blob_bytes_{0};  // by ss-blob-store, not yet told the pacer

  // The open batch: filled by Pump on the table owner's thread, closed there or, once due, by
  // the I/O thread (CloseDueBatch).
  std::mutex builder_mu_;
  DeltaBatchBuilder builder_;
  std::atomic<Clock::rep> open_due_{0};     // when the open batch is due (0: none is open)
  std::atomic<Clock::rep> io_wakes_at_{0};  // when the I/O thread's poll returns at the latest
  bool close_blocked_ = false;              // the I/O thread's: a due batch found the outbox full

  mutable std::mutex outbox_mu_;
  std::condition_variable outbox_cv_;
  std::deque<Outgoing> outbox_;
  std::size_t outbox_bytes_ = 0;

  mutable std::mutex waiters_mu_;
  std::multimap<Seq, Waiter> waiters_;
  std::vector<DurableCallback> completed_;  // the I/O thread's, reused
  Position durable_;

  mutable std::mutex stats_mu_;
  PrimaryStats stats_;
  std::shared_ptr<const std::vector<PeerStatus>> peer_status_;  // replaced, never changed

  // The I/O thread's.
  int realtime_priority_ = 0;  // the I/O thread's SCHED_FIFO priority; 0: the normal class
  zmq::context_t ctx_{1};
  zmq::socket_t router_;
  Position journaled_;
  std::deque<Recent> recent_;
  std::size_t recent_bytes_ = 0;
  std::map<std::string, Peer> peers_;
  // When each journaled batch was closed, for the blob pacer's delay samples.
  static constexpr std::size_t kMaxClosedAt = 1 << 16;
  std::deque<std::pair<Seq, Clock::time_point>> closed_at_;
};

Primary::Primary(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Primary::~Primary() = default;

Result<std::unique_ptr<Primary>> Primary::Start(PrimaryOptions options, Store& store, Epoch epoch) {
  auto impl = std::make_unique<Impl>(std::move(options), store, epoch);
  if (Status st = impl->Start(); !st.ok()) return st;
  return std::unique_ptr<Primary>(new Primary(std::move(impl)));
}
std::size_t Primary::Pump(SessionTable& table) {
  return impl_->Pump(table, false);
}
std::size_t Primary::Flush(SessionTable& table) {
  return impl_->Pump(table, true);
}
std::future<Status> Primary::WhenDurable(TableId table, Position position) {
  // std::function needs a copyable target, hence the shared promise.
  auto p = std::make_shared<std::promise<Status>>();
  auto f = p->get_future();
  impl_->WhenDurable(table, position, [p](const Status& s) { p->set_value(s); });
  return f;
}

void Primary::WhenDurable(TableId table, Position position, DurableCallback done) {
  impl_->WhenDurable(table, position, std::move(done));
}
Position Primary::durable() const {
  return impl_->durable();
}
Result<BlobInfo> Primary::PutBlob(std::string_view blob_id, std::uint8_t kind,
                                  std::string_view name, std::string_view data) {
  return impl_->PutBlob(blob_id, kind, name, data);
}
const std::string& Primary::endpoint() const {
  return impl_->endpoint();
}
const std::string& Primary::replication_id() const {
  return impl_->replication_id();
}
Epoch Primary::epoch() const {
  return impl_->epoch();
}
PrimaryStats Primary::stats() const {
  return impl_->stats();
}
std::vector<PeerStatus> Primary::peers() const {
  return impl_->peers();
}
void Primary::Stop() {
  impl_->Stop();
}

}  // namespace statesync::replication
