#include "statesync/node/control.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <list>
#include <mutex>
#include <thread>

namespace statesync::node {

namespace {

std::string Errno(const char* what) {
  return std::string(what) + ": " + std::strerror(errno);
}

Result<sockaddr_un> AddressOf(const std::filesystem::path& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string p = path.string();
  if (p.size() >= sizeof addr.sun_path) {
    return Status::InvalidArgument("control socket path too long (" + std::to_string(p.size()) +
                                   " bytes, at most " + std::to_string(sizeof addr.sun_path - 1) +
                                   "): " + p);
  }
  std::memcpy(addr.sun_path, p.c_str(), p.size() + 1);
  return addr;
}

bool WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// Reads until a newline (not kept), the peer closes, or `limit` bytes.
Result<std::string> ReadLine(int fd, std::size_t limit, int timeout_ms) {
  std::string line;
  char buf[4096];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, timeout_ms);
    if (r == 0)
      return Status::Unavailable("no answer within " + std::to_string(timeout_ms) + " ms");
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::IOError(Errno("poll"));
    }
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::IOError(Errno("recv"));
    if (n == 0) {
      if (line.empty()) return Status::Unavailable("the node closed the connection");
      return line;
    }
    line.append(buf, static_cast<std::size_t>(n));
    if (const auto nl = line.find('\n'); nl != std::string::npos) {
      line.resize(nl);
      return line;
    }
    if (line.size() > limit) {
      return Status::InvalidArgument("a line longer than " + std::to_string(limit) + " bytes");
    }
  }
}

Result<int> Connect(const std::filesystem::path& socket) {
  auto addr = AddressOf(socket);
  if (!addr.ok()) return addr.status();
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::IOError(Errno("socket"));
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr.value()), sizeof(sockaddr_un)) != 0) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    return Status::Unavailable("no node answers on " + socket.string() + " (" + why +
                               "); is statesyncd running, and is this its control socket?");
  }
  return fd;
}

}  // namespace

class ControlServer::Impl {
 public:
  explicit Impl(Handler handler) : handler_(std::move(handler)) {}

  Status Bind(const std::filesystem::path& path) {
    auto addr = AddressOf(path);
    if (!addr.ok()) return addr.status();
    path_ = path;
    std::error_code ec;
    std::filesystem::remove(path, ec);
    listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd_ < 0) return Status::IOError(Errno("socket"));
    // Created 0600 from the start: no moment where another user could connect.
    const mode_t old = ::umask(0177);
    const int r =
        ::bind(listen_fd_, reinterpret_cast<const sockaddr*>(&addr.value()), sizeof(sockaddr_un));
    ::umask(old);
    if (r != 0) return Status::IOError(Errno(("bind " + path.string()).c_str()));
    ::chmod(path.c_str(), 0600);
    if (::listen(listen_fd_, 64) != 0) return Status::IOError(Errno("listen"));
    if (::pipe2(wake_, O_CLOEXEC) != 0) return Status::IOError(Errno("pipe"));
    accept_thread_ = std::thread([this] { AcceptLoop(); });
    return Status::Ok();
  }

  ~Impl() {
    stopping_ = true;
    if (wake_[1] >= 0) {
      const char c = 0;
      [[maybe_unused]] auto n = ::write(wake_[1], &c, 1);
    }
    if (accept_thread_.joinable()) accept_thread_.join();
    {
      std::lock_guard lock(mu_);
      for (auto& c : connections_) ::shutdown(c.fd, SHUT_RDWR);
    }
    for (;;) {
      std::unique_lock lock(mu_);
      if (connections_.empty()) break;
      auto it = connections_.begin();
      std::thread t = std::move(it->thread);
      lock.unlock();
      if (t.joinable()) t.join();
      lock.lock();
      ::close(connections_.begin()->fd);
      connections_.erase(connections_.begin());
    }
    for (int fd : {listen_fd_, wake_[0], wake_[1]}) {
      if (fd >= 0) ::close(fd);
    }
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove(path_, ec);
  }

 private:
  struct Connection final : ControlConnection {
    Connection(int fd, const std::atomic<bool>& stopping) : fd(fd), stopping(stopping) {}
    bool Send(const std::string& line) override {
      if (stopping) return false;
      std::string out = line;
      out += '\n';
      return WriteAll(fd, out);
    }
    bool Closed() override {
      if (stopping) return true;
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 0) <= 0) return false;
      if (p.revents & (POLLHUP | POLLERR)) return true;
      char c;
      return ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
    }
    int fd;
    const std::atomic<bool>& stopping;
    std::thread thread;
    std::atomic<bool> done{false};
  };

  void AcceptLoop() {
    pthread_setname_np(pthread_self(), "ss-control");
    while (!stopping_) {
      pollfd p[2] = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      if (::poll(p, 2, 1000) < 0 && errno != EINTR) break;
      Reap();
      if (stopping_) break;
      if (!(p[0].revents & POLLIN)) continue;
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        // Out of descriptors (EMFILE): the listener stays readable, so pause, not spin.
        if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        continue;
      }
      std::lock_guard lock(mu_);
      if (static_cast<int>(connections_.size()) >= kMaxConnections) {
        WriteAll(fd, R"({"ok":false,"error":"too many control connections; try again"})"
                     "\n");
        ::close(fd);
        continue;
      }
      Connection& c = connections_.emplace_back(fd, stopping_);
      c.thread = std::thread([this, &c] { Serve(c); });
    }
  }

  void Serve(Connection& c) {
    auto request = ReadLine(c.fd, kMaxRequestBytes, 10'000);
    if (request.ok()) {
      try {
        handler_(request.value(), c);
      } catch (const std::exception& e) {
        c.Send(std::string(R"({"ok":false,"error":"internal error: )") + e.what() + "\"}");
      }
    } else {
      c.Send(R"({"ok":false,"error":"a request is one JSON object on one line"})");
    }
    // Closed after the join (Reap, the destructor): until then the destructor may shut it down.
    ::shutdown(c.fd, SHUT_RDWR);
    c.done = true;
  }

  // Joins the threads of finished connections (on the accept thread).
  void Reap() {
    std::lock_guard lock(mu_);
    for (auto it = connections_.begin(); it != connections_.end();) {
      if (it->done) {
        it->thread.join();
        ::close(it->fd);
        it = connections_.erase(it);
      } else {
        ++it;
      }
    }
  }

  const Handler handler_;
  std::filesystem::path path_;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;
  std::mutex mu_;
  std::list<Connection> connections_;
};

Result<std::unique_ptr<ControlServer>> ControlServer::Start(const std::filesystem::path& path,
                                                            Handler handler) {
  auto impl = std::make_unique<Impl>(std::move(handler));
  if (Status st = impl->Bind(path); !st.ok()) return st;
  return std::unique_ptr<ControlServer>(new ControlServer(std::move(impl)));
}

ControlServer::ControlServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ControlServer::~ControlServer() = default;

Result<std::string> ControlRequest(const std::filesystem::path& socket, const std::string& request,
                                   std::chrono::milliseconds timeout) {
  auto fd = Connect(socket);
  if (!fd.ok()) return fd.status();
  std::string line = request;
  line += '\n';
  if (!WriteAll(fd.value(), line)) {
    ::close(fd.value());
    return Status::Unavailable("the node at " + socket.string() + " closed the connection");
  }
  auto answer = ReadLine(fd.value(), 64 << 20, static_cast<int>(timeout.count()));
  ::close(fd.value());
  return answer;
}

Status ControlStream(const std::filesystem::path& socket, const std::string& request,
                     const std::function<bool(const std::string&)>& line) {
  auto fd = Connect(socket);
  if (!fd.ok()) return fd.status();
  std::string out = request;
  out += '\n';
  if (!WriteAll(fd.value(), out)) {
    ::close(fd.value());
    return Status::Unavailable("the node at " + socket.string() + " closed the connection");
  }
  std::string pending;
  char buf[4096];
  Status result = Status::Ok();
  for (bool go = true; go;) {
    const ssize_t n = ::recv(fd.value(), buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    pending.append(buf, static_cast<std::size_t>(n));
    for (auto nl = pending.find('\n'); nl != std::string::npos; nl = pending.find('\n')) {
      if (!line(pending.substr(0, nl))) {
        go = false;
        break;
      }
      pending.erase(0, nl + 1);
    }
  }
  ::close(fd.value());
  return result;
}

}  // namespace statesync::node
