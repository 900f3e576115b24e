// statesyncctl load: synthetic firewall sessions, calls, CDRs and voice-data blobs through a
// primary's ingest socket, at a chosen rate, with a progress display; a JSON summary at the end.
#include <unistd.h>

#include <xxhash.h>
#include <boost/json.hpp>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <thread>
#include <zmq.hpp>

#include "ctl.h"
#include "ctl_util.h"
#include "statesync/node/control.h"
#include "statesync/replication/messages.h"
#include "statesync/workload/workload.h"

namespace statesync::ctl {

namespace json = boost::json;
namespace po = boost::program_options;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

struct LoadOptions {
  std::uint64_t sessions = 0;
  std::uint64_t calls = 0;
  std::uint64_t cdrs = 0;
  std::uint64_t blobs = 0;
  std::size_t blob_size = 64 << 10;
  std::size_t blob_window = 4;  // blobs awaiting their answer
  std::uint64_t start = 0;      // the first record index (a later run with another start adds)
  double rate = 0;              // records/s; 0: as fast as the node acknowledges
  std::size_t batch = 500;
  std::size_t window = 32;  // batches awaiting their answer
  bool wait_acked = false;
  std::string acked_keys;  // a file: one line per acknowledged record
  bool quiet = false;
  double give_up_after_s = 30;  // no answer for this long while some are due: the node is gone
};

struct Pending {
  std::size_t records = 0;
  std::size_t blobs = 0;          // 1 for a blob request
  std::size_t bytes = 0;          // the blob's
  std::vector<std::string> keys;  // "table key-hex", kept only for --acked-keys
  std::string frame;              // sent again when the node answers "busy"
};

std::string Hex(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

// The record with overall index `n` of the mix: sessions, calls and CDRs interleaved in
// proportion, each family numbered from `start`.
class Generator {
 public:
  explicit Generator(const LoadOptions& o) : o_(o), total_(o.sessions + o.calls + o.cdrs) {}
  std::uint64_t total() const { return total_; }
  // Fills table, key and value of record `n`.
  void Make(std::uint64_t n, TableId* table, std::string* key, std::string* value) {
    // Bresenham-like interleaving: family f is due when its share of n is ahead of its count.
    const std::uint64_t counts[3] = {o_.sessions, o_.calls, o_.cdrs};
    int pick = 0;
    double best = -1;
    for (int f = 0; f < 3; ++f) {
      if (done_[f] >= counts[f]) continue;
      const double behind = static_cast<double>(n + 1) * static_cast<double>(counts[f]) /
                                static_cast<double>(total_) -
                            static_cast<double>(done_[f]);
      if (behind > best) {
        best = behind;
        pick = f;
      }
    }
    const std::uint64_t i = o_.start + done_[pick]++;
    const TimePoint now =
        std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
    if (pick == 0) {
      const FirewallSession s = workload::Ipv4Session(i, now, std::chrono::hours(24));
      *table = TableId::kFwSessions;
      *key = FirewallKey(s.orig, s.zone);
      *value = EncodeFirewallSession(s);
    } else if (pick == 1) {
      const CallSession c = workload::Call(i, now);
      *table = TableId::kCalls;
      *key = c.call_id;
      *value = EncodeCallSession(c);
    } else {
      const Cdr c = workload::CallRecord(i, now);
      *table = TableId::kCdrs;
      *key = c.id;
      *value = EncodeCdr(c);
    }
  }

 private:
  const LoadOptions& o_;
  const std::uint64_t total_;
  std::uint64_t done_[3] = {0, 0, 0};
};

}  // namespace

int Load(const Globals& g, const Args& args) {
  po::options_description options(
      "statesyncctl load [--sessions N] [--calls N] [--cdrs N] [--blobs N --blob-size B]\n"
      "                  [--rate R] [--wait-acked]:\n"
      "synthetic traffic through the primary's ingest socket (--socket names the primary's "
      "control socket); prints a JSON summary with the highest acknowledged seq");
  LoadOptions o;
  options.add_options()("help,h", "this text")("sessions", po::value(&o.sessions)->value_name("N"),
                                               "firewall sessions")(
      "calls", po::value(&o.calls)->value_name("N"), "call sessions")(
      "cdrs", po::value(&o.cdrs)->value_name("N"), "CDRs")(
      "blobs", po::value(&o.blobs)->value_name("N"),
      "voice-data blobs (voicemail, recordings, prompts, fax, directory exports in turn), sent "
      "among the records in proportion")("blob-size", po::value(&o.blob_size)->value_name("B"),
                                         "bytes per blob (default 65536; at most 33554432)")(
      "blob-window", po::value(&o.blob_window)->value_name("N"),
      "blobs awaiting their answer (default 4)")(
      "start", po::value(&o.start)->value_name("I"),
      "the first record number (default 0; the same numbers update the same records)")(
      "rate", po::value(&o.rate)->value_name("R"), "records per second (default: unlimited)")(
      "batch", po::value(&o.batch)->value_name("N"), "records per ingest request (default 500)")(
      "window", po::value(&o.window)->value_name("N"),
      "requests awaiting their answer (default 32)")(
      "wait-acked", po::bool_switch(&o.wait_acked),
      "wait until every record is acknowledged (in sync mode: persisted by min_acks "
      "subordinates)")("acked-keys", po::value(&o.acked_keys)->value_name("FILE"),
                       "write each acknowledged record's table and key (hex) to FILE")(
      "quiet", po::bool_switch(&o.quiet), "no progress display")(
      "give-up-after", po::value(&o.give_up_after_s)->value_name("S"),
      "stop when no answer came for S seconds while some are due (default 30): the primary "
      "is gone; what it acknowledged is reported");
  po::variables_map vm;
  if (int r = ParseOptions("load", options, args, vm); r >= 0) return r;
  if (o.batch == 0 || o.batch > 100000 || o.window == 0 || o.rate < 0 || o.blob_window == 0 ||
      o.blob_size == 0 || o.blob_size > (32u << 20)) {
    std::cerr << "statesyncctl load: --batch 1..100000, --window and --blob-window at least 1, "
                 "--rate 0 or more, --blob-size 1..33554432\n";
    return 2;
  }
  if (o.sessions + o.calls + o.cdrs + o.blobs == 0) o.sessions = 10000;
  Generator gen(o);

  auto answer = node::ControlRequest(g.socket, R"({"command":"status"})");
  if (!answer.ok()) {
    std::cerr << "statesyncctl load: " << answer.status().message() << "\n";
    return 1;
  }
  json::object status;
  try {
    status = json::parse(answer.value()).as_object();
    (void)status.at("ready").as_bool();
    (void)status.at("ingest").as_string();
    (void)status.at("cluster_id");
  } catch (const std::exception&) {
    std::cerr << "statesyncctl load: the node's status is not what this statesyncctl expects: "
              << answer.value() << "\n";
    return 1;
  }
  if (!status.at("ready").as_bool()) {
    std::cerr << "statesyncctl load: node " << status.at("node_id").as_string().c_str()
              << " is not a ready primary (it is "
              << status.at("effective_role").as_string().c_str() << "; the primary is '"
              << status.at("primary").as_string().c_str() << "'): give the primary's --socket\n";
    return 1;
  }
  const std::string endpoint(status.at("ingest").as_string());
  const std::uint64_t cluster_id = status.at("cluster_id").to_number<std::uint64_t>();

  std::ofstream acked_out;
  if (!o.acked_keys.empty()) {
    acked_out.open(o.acked_keys, std::ios::trunc);
    if (!acked_out) {
      std::cerr << "statesyncctl load: cannot write " << o.acked_keys << "\n";
      return 1;
    }
  }

  zmq::context_t ctx(1);
  zmq::socket_t socket(ctx, zmq::socket_type::dealer);
  socket.set(zmq::sockopt::linger, 0);
  socket.connect(endpoint);

  std::map<std::uint64_t, Pending> pending;
  std::uint64_t next_request = 1;
  std::uint64_t sent = 0;
  std::uint64_t acked = 0;
  std::uint64_t refused = 0;
  std::uint64_t batches = 0;
  std::uint64_t acked_seq = 0;
  std::uint64_t busy = 0;
  std::uint64_t epoch = 0;
  std::uint64_t blobs_sent = 0;
  std::uint64_t blobs_acked = 0;
  std::uint64_t blobs_refused = 0;
  std::uint64_t blobs_pending = 0;
  std::uint64_t blob_bytes_acked = 0;
  std::string first_error;
  const auto started = Clock::now();
  auto next_progress = started;
  const bool tty = ::isatty(2) != 0;

  auto last_answer = Clock::now();
  bool gave_up = false;
  const auto receive = [&](std::chrono::milliseconds timeout) {
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    // Never negative: ZeroMQ waits forever on -1, and with every answer in, nothing would wake
    // it (a deadline computed from a clock read twice made a `load` hang for minutes).
    zmq::poll(&item, 1, std::max(timeout, std::chrono::milliseconds{0}));
    if (!pending.empty() &&
        Clock::now() - last_answer > std::chrono::duration<double>(o.give_up_after_s)) {
      gave_up = true;
    }
    while (true) {
      zmq::message_t id;
      zmq::message_t body;
      if (!socket.recv(id, zmq::recv_flags::dontwait)) break;
      if (!id.more() || !socket.recv(body, zmq::recv_flags::dontwait)) continue;
      std::uint64_t request = 0;
      if (id.size() == sizeof request) std::memcpy(&request, id.data(), sizeof request);
      auto it = pending.find(request);
      if (it == pending.end()) continue;
      last_answer = Clock::now();
      json::object a;
      try {
        a = json::parse(body.to_string()).as_object();
      } catch (const std::exception&) {
        a = json::object{{"ok", false}, {"error", "an answer that is not JSON"}};
      }
      const auto flag = [&](const char* key) {
        const auto* v = a.if_contains(key);
        return v != nullptr && v->is_bool() && v->as_bool();
      };
      if (flag("busy")) {
        // The node's stream is behind: the same batch again, a moment later.
        ++busy;
        Pending again = std::move(it->second);
        pending.erase(it);
        std::this_thread::sleep_for(again.blobs > 0 ? 50ms : 5ms);
        const std::uint64_t retry = next_request++;
        socket.send(zmq::buffer(&retry, sizeof retry), zmq::send_flags::sndmore);
        socket.send(zmq::buffer(again.frame), zmq::send_flags::none);
        pending.emplace(retry, std::move(again));
        continue;
      }
      const bool ok = flag("ok") && flag("acked");
      blobs_pending -= it->second.blobs;
      if (ok) {
        acked += it->second.records;
        blobs_acked += it->second.blobs;
        blob_bytes_acked += it->second.bytes;
        if (const auto* v = a.if_contains("last_seq")) {
          acked_seq = std::max(acked_seq, v->to_number<std::uint64_t>());
        }
        if (const auto* v = a.if_contains("epoch")) {
          epoch = std::max(epoch, v->to_number<std::uint64_t>());
        }
        for (const auto& k : it->second.keys) acked_out << k << "\n";
      } else {
        refused += it->second.records;
        blobs_refused += it->second.blobs;
        if (const auto* e = a.if_contains("error"); first_error.empty() && e && e->is_string()) {
          first_error = std::string(e->as_string());
        }
      }
      pending.erase(it);
    }
  };
  const auto progress = [&](bool final) {
    if (o.quiet || (g.json && !tty)) return;
    const double secs = std::chrono::duration<double>(Clock::now() - started).count();
    const double done =
        static_cast<double>(sent + blobs_sent) / static_cast<double>(gen.total() + o.blobs);
    char blob_part[96] = "";
    if (o.blobs > 0) {
      std::snprintf(blob_part, sizeof blob_part, "  blobs %llu/%llu acked (%.1f MB)",
                    static_cast<unsigned long long>(blobs_acked),
                    static_cast<unsigned long long>(o.blobs),
                    static_cast<double>(blob_bytes_acked) / 1e6);
    }
    char line[260];
    std::snprintf(
        line, sizeof line, "load %s %5.1f%%  sent %llu  acked %llu  refused %llu  %.0f records/s%s",
        ProgressBar(done, 24).c_str(), 100.0 * done, static_cast<unsigned long long>(sent),
        static_cast<unsigned long long>(acked), static_cast<unsigned long long>(refused),
        secs > 0 ? static_cast<double>(acked) / secs : 0.0, blob_part);
    if (tty) {
      std::fprintf(stderr, "\r%s%s", line, final ? "\n" : "");
    } else {
      std::fprintf(stderr, "%s\n", line);
    }
  };

  replication::DeltaBatchBuilder builder;
  TableId table;
  std::string key;
  std::string value;
  const auto send = [&](Pending p) {
    const std::uint64_t request = next_request++;
    socket.send(zmq::buffer(&request, sizeof request), zmq::send_flags::sndmore);
    socket.send(zmq::buffer(p.frame), zmq::send_flags::none);
    pending.emplace(request, std::move(p));
  };
  while ((sent < gen.total() || blobs_sent < o.blobs) && !gave_up) {
    // A blob is due when the blobs' share of what was sent lags the records'.
    const bool blob_due =
        blobs_sent < o.blobs && (sent >= gen.total() || blobs_sent * gen.total() <= sent * o.blobs);
    if (blob_due && blobs_pending < o.blob_window) {
      const workload::VoiceBlob blob = workload::Blob(o.start + blobs_sent, o.blob_size);
      replication::BlobChunkMsg m;
      m.info.blob_id = blob.id;
      m.info.kind = blob.kind;
      m.info.name = blob.name;
      m.info.size = blob.data.size();
      m.info.xxh64 = XXH3_64bits(blob.data.data(), blob.data.size());
      m.data = blob.data;
      Pending p;
      p.blobs = 1;
      p.bytes = blob.data.size();
      p.frame = replication::Encode({cluster_id, "statesyncctl", 0}, m);
      if (acked_out.is_open()) p.keys.push_back("blobs " + Hex(blob.id));
      send(std::move(p));
      ++blobs_sent;
      ++blobs_pending;
      receive(0ms);
      continue;
    }
    if (sent >= gen.total() || (blob_due && blobs_pending >= o.blob_window)) {
      receive(100ms);  // only blobs are due, and their window is full
      if (gave_up) break;
      continue;
    }
    while (pending.size() - blobs_pending >= o.window && !gave_up) receive(100ms);
    if (gave_up) break;
    if (o.rate > 0) {
      const auto due =
          started + std::chrono::duration_cast<Clock::duration>(
                        std::chrono::duration<double>(static_cast<double>(sent) / o.rate));
      if (const auto now = Clock::now(); due > now) {
        receive(std::chrono::ceil<std::chrono::milliseconds>(due - now));
        continue;
      }
    }
    Pending p;
    const std::uint64_t n = std::min<std::uint64_t>(o.batch, gen.total() - sent);
    for (std::uint64_t k = 0; k < n; ++k) {
      gen.Make(sent + k, &table, &key, &value);
      builder.Add(DeltaView{Position{0, sent + k + 1}, table, DeltaKind::kUpsert, key, value});
      if (acked_out.is_open()) p.keys.push_back(TableName(table) + " " + Hex(key));
    }
    p.records = n;
    p.frame = builder.Finish({cluster_id, "statesyncctl", 0}, "");
    send(std::move(p));
    sent += n;
    ++batches;
    receive(0ms);
    if (Clock::now() >= next_progress) {
      progress(false);
      next_progress = Clock::now() + (tty ? 250ms : 2s);
    }
  }
  // The answers still due: all of them with --wait-acked, else what comes within a moment.
  const auto limit = Clock::now() + (o.wait_acked ? 300s : 1s);
  while (!pending.empty() && Clock::now() < limit && !gave_up) {
    receive(100ms);
    if (Clock::now() >= next_progress) {
      progress(false);
      next_progress = Clock::now() + (tty ? 250ms : 2s);
    }
  }
  progress(true);
  const double secs = std::chrono::duration<double>(Clock::now() - started).count();
  json::object summary{{"records_sent", sent},
                       {"records_acked", acked},
                       {"records_refused", refused},
                       {"records_unanswered", sent - acked - refused},
                       {"batches", batches},
                       {"busy_retries", busy},
                       {"elapsed_s", secs},
                       {"records_per_second", secs > 0 ? static_cast<double>(acked) / secs : 0.0},
                       {"epoch", epoch},
                       {"acked_seq", acked_seq}};
  if (o.blobs > 0) {
    summary["blobs_sent"] = blobs_sent;
    summary["blobs_acked"] = blobs_acked;
    summary["blobs_refused"] = blobs_refused;
    summary["blob_bytes_acked"] = blob_bytes_acked;
  }
  if (!first_error.empty()) summary["first_error"] = first_error;
  if (gave_up) {
    summary["gave_up"] = true;
    summary["first_error"] =
        "no answer for " + std::to_string(o.give_up_after_s) + " s: the primary is gone";
  }
  std::cout << json::serialize(summary) << "\n";
  if (refused > 0 || blobs_refused > 0 || gave_up ||
      (o.wait_acked && (acked != sent || blobs_acked != blobs_sent))) {
    return 1;
  }
  return 0;
}

}  // namespace statesync::ctl
