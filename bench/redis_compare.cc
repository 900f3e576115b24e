// Redis master -> replica with the records statesync replicates, for issue 6's comparison: the
// same firewall sessions, as the same key and value bytes that statesync's batches carry
// (FirewallKey, EncodeFirewallSession). The Redis servers are started by bench/redis_compare.sh;
// this program only talks to them (hiredis). Prints one JSON object.
//
//   redis_compare replicate --master PORT --replica PORT [--records N] [--pipeline N]
//       SETs N sessions into the master, pipelined (one thread writes every command, another
//       reads the replies; --pipeline N sets the chunk written at once, N x 256 bytes), and times
//       from the first write until the replica's processed offset has reached the master's offset
//       after the last write: replicated records/s.
//   redis_compare fullsync --master PORT --replica PORT [--records N]
//       The master already holds the N sessions (from `replicate`); the replica, empty, is told
//       REPLICAOF the master and timed until its link is up and it holds N keys.
#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "statesync/workload/workload.h"

namespace statesync::bench {
namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void Fail(const std::string& why) {
  std::fprintf(stderr, "redis_compare: %s\n", why.c_str());
  std::exit(1);
}

struct ContextFree {
  void operator()(redisContext* c) const { redisFree(c); }
};
using Connection = std::unique_ptr<redisContext, ContextFree>;

Connection Connect(int port) {
  Connection c(redisConnect("127.0.0.1", port));
  if (!c || c->err) {
    Fail("cannot connect to 127.0.0.1:" + std::to_string(port) + ": " +
         (c ? c->errstr : "out of memory"));
  }
  return c;
}

struct ReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyFree>;

Reply Command(redisContext* c, const char* format, const std::string& arg = "") {
  Reply r(static_cast<redisReply*>(arg.empty() ? redisCommand(c, format)
                                               : redisCommand(c, format, arg.c_str())));
  if (!r) Fail(std::string("command failed: ") + c->errstr);
  if (r->type == REDIS_REPLY_ERROR) Fail(std::string("error reply: ") + r->str);
  return r;
}

// A numeric field of INFO's text ("name:value"), or -1.
long long InfoField(redisContext* c, const char* section, const std::string& name) {
  const Reply r = Command(c, "INFO %s", section);
  const std::string text(r->str, r->len);
  const auto at = text.find(name + ":");
  if (at == std::string::npos) return -1;
  return std::atoll(text.c_str() + at + name.size() + 1);
}

std::string InfoText(redisContext* c, const std::string& name) {
  const Reply r = Command(c, "INFO replication");
  const std::string text(r->str, r->len);
  const auto at = text.find(name + ":");
  if (at == std::string::npos) return "";
  const auto end = text.find('\r', at);
  return text.substr(at + name.size() + 1, end - at - name.size() - 1);
}

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

int Replicate(int master_port, int replica_port, std::uint64_t records, std::uint64_t pipeline) {
  const Connection master = Connect(master_port);
  const Connection replica = Connect(replica_port);
  if (InfoText(replica.get(), "master_link_status") != "up") Fail("the replica's link is not up");
  const TimePoint now =
      std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
  // The commands are made before the clock starts, as the protocol's bytes: what is timed is
  // Redis taking them and replicating them, not this program encoding sessions.
  std::uint64_t key_bytes = 0;
  std::uint64_t value_bytes = 0;
  std::vector<std::string> commands;
  commands.reserve(records);
  for (std::uint64_t j = 0; j < records; ++j) {
    const FirewallSession s = workload::Ipv4Session(j, now);
    const std::string key = FirewallKey(s.orig, s.zone);
    const std::string value = EncodeFirewallSession(s);
    key_bytes += key.size();
    value_bytes += value.size();
    const char* argv[] = {"SET", key.data(), value.data()};
    const std::size_t lengths[] = {3, key.size(), value.size()};
    char* formatted = nullptr;
    const long long n = redisFormatCommandArgv(&formatted, 3, argv, lengths);
    if (n < 0) Fail("cannot format a SET");
    commands.emplace_back(formatted, static_cast<std::size_t>(n));
    redisFreeCommand(formatted);
  }
  // The fastest client: the commands' bytes written on a plain socket by one thread while
  // another reads the replies (each "+OK\r\n"), so that the client never waits on a window.
  std::string stream;
  for (const std::string& c : commands) stream += c;
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(master_port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    Fail("cannot connect a socket to the master");
  }
  const auto start = Clock::now();
  std::thread writer([&] {
    std::size_t sent = 0;
    while (sent < stream.size()) {
      const std::size_t chunk = std::min<std::size_t>(stream.size() - sent, pipeline * 256);
      const ssize_t n = ::send(fd, stream.data() + sent, chunk, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) Fail(std::string("cannot send to the master: ") + std::strerror(errno));
      sent += static_cast<std::size_t>(n);
    }
  });
  constexpr char kOk[] = "+OK\r\n";
  const std::size_t expected = records * 5;
  std::string replies;
  replies.reserve(expected);
  char buffer[1 << 16];
  while (replies.size() < expected) {
    const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      Fail("the master closed the connection after " + std::to_string(replies.size() / 5) +
           " replies");
    replies.append(buffer, static_cast<std::size_t>(n));
  }
  writer.join();
  ::close(fd);
  for (std::size_t at = 0; at < replies.size(); at += 5) {
    if (replies.compare(at, 5, kOk) != 0) Fail("a SET was refused: " + replies.substr(at, 60));
  }
  const auto written = Clock::now();
  const long long target = InfoField(master.get(), "replication", "master_repl_offset");
  while (InfoField(replica.get(), "replication", "slave_repl_offset") < target) {
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  const auto replicated = Clock::now();
  std::printf(
      "{\"records\": %llu, \"key_bytes\": %.1f, \"value_bytes\": %.1f, \"pipeline\": %llu, "
      "\"write_s\": %.3f, \"replicated_s\": %.3f, \"records_per_s\": %.0f, "
      "\"master_offset\": %lld}\n",
      static_cast<unsigned long long>(records), double(key_bytes) / double(records),
      double(value_bytes) / double(records), static_cast<unsigned long long>(pipeline),
      Seconds(written - start), Seconds(replicated - start),
      double(records) / Seconds(replicated - start), target);
  return 0;
}

int FullSync(int master_port, int replica_port, std::uint64_t records) {
  const Connection master = Connect(master_port);
  const Connection replica = Connect(replica_port);
  const Reply size = Command(master.get(), "DBSIZE");
  if (static_cast<std::uint64_t>(size->integer) != records) {
    Fail("the master holds " + std::to_string(size->integer) + " keys, not " +
         std::to_string(records));
  }
  const auto start = Clock::now();
  Command(replica.get(), "REPLICAOF 127.0.0.1 %s", std::to_string(master_port));
  while (true) {
    if (InfoText(replica.get(), "master_link_status") == "up") {
      const Reply held = Command(replica.get(), "DBSIZE");
      if (static_cast<std::uint64_t>(held->integer) >= records) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const double took = Seconds(Clock::now() - start);
  std::printf("{\"records\": %llu, \"full_sync_s\": %.3f, \"records_per_s\": %.0f}\n",
              static_cast<unsigned long long>(records), took, double(records) / took);
  return 0;
}

int Main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::printf(
        "usage: redis_compare replicate|fullsync --master PORT --replica PORT [--records N] "
        "[--pipeline N]\n(started by bench/redis_compare.sh, which starts the servers)\n");
    return argc < 2 ? 2 : 0;
  }
  const std::string mode = argv[1];
  int master = 0;
  int replica = 0;
  std::uint64_t records = 1'000'000;
  std::uint64_t pipeline = 1000;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const std::uint64_t value = std::strtoull(argv[i + 1], nullptr, 10);
    if (flag == "--master") {
      master = static_cast<int>(value);
    } else if (flag == "--replica") {
      replica = static_cast<int>(value);
    } else if (flag == "--records") {
      records = value;
    } else if (flag == "--pipeline") {
      pipeline = value;
    } else {
      Fail("unknown option '" + flag + "' (try --help)");
    }
  }
  if (master == 0 || replica == 0) Fail("--master and --replica are needed");
  if (records == 0 || pipeline == 0) Fail("--records and --pipeline must be above 0");
  if (mode == "replicate") return Replicate(master, replica, records, pipeline);
  if (mode == "fullsync") return FullSync(master, replica, records);
  Fail("unknown mode '" + mode + "': replicate or fullsync");
}

}  // namespace
}  // namespace statesync::bench

int main(int argc, char** argv) {
  return statesync::bench::Main(argc, argv);
}
