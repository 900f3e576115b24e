#include "statesync/node/monitors.h"

#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <array>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <memory>
#include <random>

#include "limited_command.h"

namespace statesync::node {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using boost::system::error_code;
using failover::ServiceState;

// ---- LinkMonitor ----

LinkMonitor::LinkMonitor(std::vector<std::string> links)
    : links_(std::move(links)), last_(links_.size()) {
  if (links_.empty()) return;
  fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    spdlog::error(
        "monitored links: cannot open a socket to read them ({}): every link counts as "
        "down",
        std::strerror(errno));
  }
  for (const std::string& name : links_) {
    if (::if_nametoindex(name.c_str()) == 0) {
      spdlog::warn("monitored link {}: no such interface here; it counts as down until it exists",
                   name);
    }
  }
}

LinkMonitor::~LinkMonitor() {
  if (fd_ >= 0) ::close(fd_);
}

bool LinkMonitor::IsUp(const std::string& name) const {
  ifreq request{};
  std::strncpy(request.ifr_name, name.c_str(), IFNAMSIZ - 1);
  if (fd_ < 0 || ::ioctl(fd_, SIOCGIFFLAGS, &request) != 0) return false;
  // IFF_RUNNING is the carrier: a cable pulled, or a veth whose peer went down, is not running.
  const auto flags = static_cast<unsigned>(request.ifr_flags);
  return (flags & IFF_UP) != 0 && (flags & IFF_RUNNING) != 0;
}

std::vector<LinkState> LinkMonitor::Poll() {
  std::vector<LinkState> changed;
  for (std::size_t i = 0; i < links_.size(); ++i) {
    const bool up = IsUp(links_[i]);
    if (last_[i] == up) continue;
    last_[i] = up;
    changed.push_back({links_[i], up});
  }
  return changed;
}

std::vector<LinkState> LinkMonitor::Current() const {
  std::vector<LinkState> all;
  for (std::size_t i = 0; i < links_.size(); ++i)
    all.push_back({links_[i], last_[i].value_or(false)});
  return all;
}

// ---- ProbeServices ----

namespace {

void Settle(ProbeResult& r, bool ok, std::string detail) {
  r.state = ok ? ServiceState::kOk : ServiceState::kFailed;
  r.detail = std::move(detail);
}

std::string Where(const asio::ip::address& address, std::uint16_t port) {
  return (address.is_v6() ? "[" + address.to_string() + "]" : address.to_string()) + ":" +
         std::to_string(port);
}

void ProbeTcp(asio::io_context& io, const asio::ip::address& address, std::uint16_t port,
              ProbeResult& r) {
  auto socket = std::make_shared<asio::ip::tcp::socket>(io);
  socket->async_connect({address, port}, [socket, &r, where = Where(address, port)](error_code ec) {
    Settle(r, !ec, ec ? "connect to " + where + ": " + ec.message() : "connected to " + where);
  });
}

// A GET whose answer's status line and header are read; 2xx and 3xx pass.
void ProbeHttp(asio::io_context& io, const asio::ip::address& address, const std::string& host,
               const RemoteCheckConfig& check, ProbeResult& r) {
  struct Exchange {
    explicit Exchange(asio::io_context& io) : socket(io) {}
    asio::ip::tcp::socket socket;
    http::request<http::empty_body> request;
    boost::beast::flat_buffer buffer;
    http::response_parser<http::empty_body> parser;
  };
  auto x = std::make_shared<Exchange>(io);
  x->request.method(http::verb::get);
  x->request.target(check.path);
  x->request.version(11);
  x->request.set(http::field::host, host);
  x->request.set(http::field::user_agent, "statesync remote check");
  x->request.set(http::field::connection, "close");
  const std::string where = Where(address, check.port);
  x->socket.async_connect({address, check.port}, [x, &r, where](error_code ec) {
    if (ec) return Settle(r, false, "connect to " + where + ": " + ec.message());
    http::async_write(x->socket, x->request, [x, &r, where](error_code ec, std::size_t) {
      if (ec) return Settle(r, false, "send to " + where + ": " + ec.message());
      http::async_read_header(
          x->socket, x->buffer, x->parser, [x, &r, where](error_code ec, std::size_t) {
            if (ec) return Settle(r, false, "answer from " + where + ": " + ec.message());
            const unsigned status = x->parser.get().result_int();
            Settle(r, status >= 200 && status < 400, "HTTP " + std::to_string(status));
          });
    });
  });
}

// A SIP OPTIONS request over UDP: any SIP answer passes (the server is there and parses SIP,
// whatever it thinks of an OPTIONS from us); an ICMP port-unreachable fails at once.
void ProbeSip(asio::io_context& io, const asio::ip::address& address, std::uint16_t port,
              ProbeResult& r) {
  struct Exchange {
    explicit Exchange(asio::io_context& io) : socket(io) {}
    asio::ip::udp::socket socket;
    std::string request;
    std::array<char, 2048> answer{};
  };
  auto x = std::make_shared<Exchange>(io);
  const std::string where = Where(address, port);
  error_code ec;
  x->socket.connect({address, port}, ec);  // a connected socket hears ICMP errors
  if (ec) return Settle(r, false, "connect to " + where + ": " + ec.message());
  const auto local = x->socket.local_endpoint(ec);
  const std::string me = Where(local.address(), local.port());
  std::random_device random;
  const std::string tag = std::to_string(random()) + std::to_string(random());
  x->request = "OPTIONS sip:" + where + " SIP/2.0\r\n" + "Via: SIP/2.0/UDP " + me +
               ";branch=z9hG4bK" + tag + "\r\n" + "Max-Forwards: 70\r\n" + "From: <sip:statesync@" +
               me + ">;tag=" + tag + "\r\n" + "To: <sip:" + where + ">\r\n" + "Call-ID: " + tag +
               "@statesync\r\n" + "CSeq: 1 OPTIONS\r\n" + "Accept: application/sdp\r\n" +
               "User-Agent: statesync remote check\r\n" + "Content-Length: 0\r\n\r\n";
  x->socket.async_send(asio::buffer(x->request), [x, &r, where](error_code ec, std::size_t) {
    if (ec) return Settle(r, false, "send to " + where + ": " + ec.message());
    x->socket.async_receive(asio::buffer(x->answer), [x, &r, where](error_code ec, std::size_t n) {
      if (ec) return Settle(r, false, "answer from " + where + ": " + ec.message());
      const std::string_view answer(x->answer.data(), n);
      const std::string_view line = answer.substr(0, std::min(answer.find('\r'), answer.size()));
      const bool sip = answer.rfind("SIP/2.0 ", 0) == 0;
      std::string detail = std::string(line.substr(0, 80));
      if (!sip) {
        detail = line.empty() ? "an empty answer from " + where
                              : "not a SIP answer from " + where + ": " + detail;
      }
      Settle(r, sip, detail);
    });
  });
}

}  // namespace

std::vector<ProbeResult> ProbeServices(const std::vector<RemoteCheckConfig>& checks,
                                       const std::string& host, std::chrono::milliseconds timeout) {
  std::vector<ProbeResult> results(checks.size());
  const std::string no_answer = "no answer within " + std::to_string(timeout.count()) + " ms";
  std::vector<std::thread> commands;
  {
    asio::io_context io;
    // The address once for every check. A name is resolved first, with a time limit of its own
    // (so a round with a name can take twice the timeout, and longer when the resolver itself
    // hangs: give service addresses as addresses).
    std::optional<asio::ip::address> address;
    std::string unresolved;
    error_code ec;
    address = asio::ip::make_address(host, ec);
    if (ec) {
      address.reset();
      asio::ip::tcp::resolver resolver(io);
      resolver.async_resolve(host, "", [&](error_code ec, auto found) {
        if (ec || found.empty()) {
          unresolved = "cannot resolve '" + host + "': " + (ec ? ec.message() : "no address");
        } else {
          address = found.begin()->endpoint().address();
        }
      });
      io.run_for(timeout);
      io.restart();
      if (!address && unresolved.empty())
        unresolved = "cannot resolve '" + host + "': " + no_answer;
    }
    for (std::size_t i = 0; i < checks.size(); ++i) {
      const RemoteCheckConfig& c = checks[i];
      ProbeResult& r = results[i];
      r.name = c.name;
      r.detail = no_answer;
      if (!c.enabled) {
        r.state = ServiceState::kDisabled;
        r.detail = "disabled";
      } else if (c.kind == CheckKind::kCommand) {
        commands.emplace_back([&c, &r, &host, timeout] {
          const CommandRun run = RunLimitedCommand(c.command, "statesync-check", {host},
                                                   {{"STATESYNC_PEER_HOST", host}}, timeout);
          std::string output = run.output;
          while (!output.empty() && std::isspace(static_cast<unsigned char>(output.back()))) {
            output.pop_back();
          }
          if (const auto nl = output.rfind('\n'); nl != std::string::npos) output.erase(0, nl + 1);
          std::string detail = !run.error.empty() ? run.error
                               : run.timed_out
                                   ? "stopped after " + std::to_string(timeout.count()) + " ms"
                                   : "exit " + std::to_string(run.exit_code);
          if (!output.empty()) detail += ": " + output;
          Settle(r, run.ok(), detail);
        });
      } else if (!address) {
        Settle(r, false, unresolved);
      } else if (c.kind == CheckKind::kTcp) {
        ProbeTcp(io, *address, c.port, r);
      } else if (c.kind == CheckKind::kHttp) {
        ProbeHttp(io, *address, host, c, r);
      } else {
        ProbeSip(io, *address, c.port, r);
      }
    }
    io.run_for(timeout);
  }  // the io_context's end drops the exchanges still waiting: they fail with no_answer
  for (std::thread& t : commands) t.join();
  return results;
}

// ---- RemoteMonitor ----

RemoteMonitor::RemoteMonitor(const NodeConfig& config, Report report)
    : checks_(config.remote_checks),
      interval_(config.check_interval),
      timeout_(config.check_timeout),
      fail_after_(config.check_fail_after),
      report_(std::move(report)) {
  if (!checks_.empty()) thread_ = std::thread([this] { Loop(); });
}

RemoteMonitor::~RemoteMonitor() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void RemoteMonitor::SetTarget(const std::string& peer, const std::string& host) {
  {
    std::lock_guard lock(mu_);
    if (peer == peer_ && host == host_) return;
    peer_ = peer;
    host_ = host;
    ++target_version_;
  }
  cv_.notify_all();
}

void RemoteMonitor::Loop() {
  pthread_setname_np(pthread_self(), "ss-checks");
  std::uint64_t version = 0;
  // Per check: failed rounds in a row, and the state once known.
  std::vector<int> failures(checks_.size());
  std::vector<std::optional<ServiceState>> states(checks_.size());
  auto next_round = std::chrono::steady_clock::now();
  for (;;) {
    std::string peer;
    std::string host;
    {
      std::unique_lock lock(mu_);
      cv_.wait_until(lock, next_round,
                     [&] { return stop_ || (target_version_ != version && !peer_.empty()); });
      if (stop_) return;
      if (target_version_ != version) {
        version = target_version_;
        std::fill(failures.begin(), failures.end(), 0);
        std::fill(states.begin(), states.end(), std::nullopt);
      }
      peer = peer_;
      host = host_;
    }
    next_round = std::chrono::steady_clock::now() + interval_;
    if (peer.empty()) {
      next_round += std::chrono::hours(1);  // until SetTarget wakes it
      continue;
    }
    Round round;
    round.peer = peer;
    round.host = host;
    round.probes = ProbeServices(checks_, host, timeout_);
    bool known = true;
    for (std::size_t i = 0; i < checks_.size(); ++i) {
      const ProbeResult& p = round.probes[i];
      if (p.state == ServiceState::kFailed) {
        if (++failures[i] >= fail_after_) states[i] = ServiceState::kFailed;
      } else {
        failures[i] = 0;
        states[i] = p.state;
      }
      known = known && states[i].has_value();
      round.checks.push_back({p.name, states[i].value_or(ServiceState::kOk)});
    }
    {
      std::lock_guard lock(mu_);
      if (version != target_version_) continue;  // the target moved while this round ran
    }
    if (known && report_) report_(std::move(round));
  }
}

}  // namespace statesync::node
