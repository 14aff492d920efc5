#include "train/tcp_communicator.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <sstream>

#include "espresso/errors.h"

namespace espresso::train {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::uint32_t kHelloMagic = 0x45535052;  // "ESPR"
constexpr std::uint32_t kProtocolVersion = 1;
// How long a rank that lost a connection listens for the news of which rank died before blaming the
// neighbour it lost.
constexpr double kGraceSeconds = 3.0;

struct Header {
  std::uint32_t type;
  std::uint32_t reserved;
  std::uint64_t length;
};

std::string system_error(const std::string& what) { return what + ": " + std::strerror(errno); }

void set_nonblocking(int fd) {
  const int flags = fcntl(fd, F_GETFL, 0);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) throw DistributedError(system_error("fcntl"));
}

void tune(int fd) {
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  const int buffer = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
}

// A listening socket on `port` (0: any free one) of every interface.
int listen_on(int port, int backlog, const std::string& what) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw DistributedError(system_error("socket"));
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_ANY);
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) < 0 || listen(fd, backlog) < 0) {
    const std::string message = system_error(what + ": cannot listen on port " + std::to_string(port));
    close(fd);
    throw DistributedError(message);
  }
  return fd;
}

int bound_port(int fd) {
  sockaddr_in address{};
  socklen_t length = sizeof address;
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  return ntohs(address.sin_port);
}

// Accepts one connection before `deadline`, or returns -1.
int accept_until(int listener, Clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return -1;
    pollfd p{listener, POLLIN, 0};
    const int ready = poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000)));
    if (ready < 0 && errno != EINTR) throw DistributedError(system_error("poll"));
    if (ready <= 0) continue;
    const int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) {
      tune(fd);
      return fd;
    }
  }
}

// Connects to host:port, retrying until `deadline` (the other side may not be listening yet).
int connect_until(const std::string& host, int port, Clock::time_point deadline, std::string& last_error) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  for (;;) {
    addrinfo* found = nullptr;
    const int status = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
    if (status != 0) {
      last_error = "cannot resolve '" + host + "': " + gai_strerror(status);
    } else {
      const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      const int connected = fd >= 0 ? connect(fd, found->ai_addr, found->ai_addrlen) : -1;
      if (connected == 0) {
        freeaddrinfo(found);
        tune(fd);
        return fd;
      }
      last_error = std::strerror(errno);
      if (fd >= 0) close(fd);
      freeaddrinfo(found);
    }
    if (Clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

// Blocking exchange of small fixed records during the rendezvous, before the sockets go non-blocking.
bool write_all(int fd, const void* data, std::size_t length) {
  const char* bytes = static_cast<const char*>(data);
  while (length > 0) {
    const ssize_t n = send(fd, bytes, length, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes += n;
    length -= static_cast<std::size_t>(n);
  }
  return true;
}

bool read_all(int fd, void* data, std::size_t length, Clock::time_point deadline) {
  char* bytes = static_cast<char*>(data);
  while (length > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    const int ready = poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000)));
    if (ready < 0 && errno != EINTR) return false;
    if (ready <= 0) continue;
    const ssize_t n = recv(fd, bytes, length, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return false;
    bytes += n;
    length -= static_cast<std::size_t>(n);
  }
  return true;
}

struct Hello {
  std::uint32_t magic;
  std::uint32_t version;
  std::int32_t rank;
  std::int32_t world_size;
  std::int32_t ring_port;
};

std::string peer_address(int fd) {
  sockaddr_in address{};
  socklen_t length = sizeof address;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&address), &length) < 0) return "127.0.0.1";
  char text[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &address.sin_addr, text, sizeof text);
  return text;
}

std::string seconds(double value) {
  std::ostringstream text;
  text << value << " s";
  return text.str();
}

}  // namespace

TcpCommunicator::TcpCommunicator(const DistributedOptions& options) : options_(options) {
  if (options_.world_size < 1)
    throw DistributedError("the world size must be 1 or more, found " + std::to_string(options_.world_size));
  if (options_.rank < 0 || options_.rank >= options_.world_size) {
    throw DistributedError("rank " + std::to_string(options_.rank) + " is outside the world of " +
                           std::to_string(options_.world_size) + " ranks");
  }
  if (options_.world_size > 1) rendezvous();
  worker_ = std::thread([this] { run_worker(); });
}

TcpCommunicator::~TcpCommunicator() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  // A bucket still on its way (this rank is leaving on an error) ends at once instead of waiting for
  // peers; they see this rank leave.
  for (int fd : control_) {
    if (fd >= 0) shutdown(fd, SHUT_RDWR);
  }
  if (left_ >= 0) shutdown(left_, SHUT_RDWR);
  if (right_ >= 0) shutdown(right_, SHUT_RDWR);
  if (worker_.joinable()) worker_.join();
  for (int fd : control_) {
    if (fd >= 0) close(fd);
  }
  if (left_ >= 0) close(left_);
  if (right_ >= 0 && right_ != left_) close(right_);
}

std::string TcpCommunicator::who() const { return "rank " + std::to_string(options_.rank); }

int TcpCommunicator::control_fd(int peer) const {
  return options_.rank == 0 ? control_[static_cast<std::size_t>(peer)] : control_[0];
}

void TcpCommunicator::rendezvous() {
  const int world = options_.world_size;
  const Clock::time_point deadline =
      Clock::now() + std::chrono::milliseconds(static_cast<long long>(options_.timeout_seconds * 1000));
  const int ring_listener = listen_on(0, 4, who() + " (ring)");
  std::vector<std::string> addresses(static_cast<std::size_t>(world));
  std::vector<int> ports(static_cast<std::size_t>(world));
  try {
    if (options_.rank == 0) {
      const int master = listen_on(options_.master_port, world, who() + " (rendezvous)");
      control_.assign(static_cast<std::size_t>(world), -1);
      addresses[0] = options_.master_addr;
      ports[0] = bound_port(ring_listener);
      std::string problem;
      for (int arrived = 1; arrived < world;) {
        const int fd = accept_until(master, deadline);
        if (fd < 0) {
          close(master);
          std::string missing;
          for (int r = 1; r < world; ++r) {
            if (control_[static_cast<std::size_t>(r)] < 0)
              missing += (missing.empty() ? "" : ", ") + std::to_string(r);
          }
          throw DistributedError(who() + ": rank" + (missing.find(',') == std::string::npos ? " " : "s ") +
                                 missing + " did not connect to port " +
                                 std::to_string(options_.master_port) + " within " +
                                 seconds(options_.timeout_seconds));
        }
        Hello hello{};
        if (!read_all(fd, &hello, sizeof hello, deadline) || hello.magic != kHelloMagic) {
          close(fd);  // not one of ours (a port scan, a stale client): keep waiting
          continue;
        }
        if (hello.version != kProtocolVersion) {
          problem = "a rank speaks protocol " + std::to_string(hello.version) + ", rank 0 speaks " +
                    std::to_string(kProtocolVersion) + " (mixed espresso versions?)";
        } else if (hello.world_size != world) {
          problem = "rank " + std::to_string(hello.rank) + " was started with a world size of " +
                    std::to_string(hello.world_size) + ", rank 0 with " + std::to_string(world);
        } else if (hello.rank <= 0 || hello.rank >= world ||
                   control_[static_cast<std::size_t>(hello.rank)] >= 0) {
          problem = "two processes claim rank " + std::to_string(hello.rank) + " (or it is out of range)";
        }
        if (!problem.empty()) {
          close(fd);
          close(master);
          throw DistributedError(who() + ": " + problem);
        }
        control_[static_cast<std::size_t>(hello.rank)] = fd;
        addresses[static_cast<std::size_t>(hello.rank)] = peer_address(fd);
        ports[static_cast<std::size_t>(hello.rank)] = hello.ring_port;
        ++arrived;
      }
      close(master);
      std::string table;
      for (int r = 0; r < world; ++r)
        table += addresses[static_cast<std::size_t>(r)] + " " +
                 std::to_string(ports[static_cast<std::size_t>(r)]) + "\n";
      for (int r = 1; r < world; ++r) {
        set_nonblocking(control_[static_cast<std::size_t>(r)]);
        send_message(r, table);
      }
    } else {
      std::string error;
      const int fd = connect_until(options_.master_addr, options_.master_port, deadline, error);
      if (fd < 0) {
        throw DistributedError(who() + ": cannot reach rank 0 at " + options_.master_addr + ":" +
                               std::to_string(options_.master_port) + " within " +
                               seconds(options_.timeout_seconds) + " (" + error + ")");
      }
      control_.assign(1, fd);
      const Hello hello{kHelloMagic, kProtocolVersion, options_.rank, world, bound_port(ring_listener)};
      if (!write_all(fd, &hello, sizeof hello))
        throw DistributedError(who() + ": rank 0 closed the connection");
      set_nonblocking(fd);
      std::istringstream table(receive_message(0));
      for (int r = 0; r < world; ++r)
        table >> addresses[static_cast<std::size_t>(r)] >> ports[static_cast<std::size_t>(r)];
      addresses[0] = options_.master_addr;
    }
    connect_ring(addresses, ports, ring_listener);
  } catch (...) {
    close(ring_listener);
    throw;
  }
  close(ring_listener);
}

void TcpCommunicator::connect_ring(const std::vector<std::string>& addresses, const std::vector<int>& ports,
                                   int listener) {
  const int world = options_.world_size;
  const int next = (options_.rank + 1) % world;
  const int previous = (options_.rank + world - 1) % world;
  const Clock::time_point deadline =
      Clock::now() + std::chrono::milliseconds(static_cast<long long>(options_.timeout_seconds * 1000));
  std::string error;
  right_ = connect_until(addresses[static_cast<std::size_t>(next)], ports[static_cast<std::size_t>(next)],
                         deadline, error);
  if (right_ < 0) {
    throw DistributedError(who() + ": cannot connect to rank " + std::to_string(next) + " at " +
                           addresses[static_cast<std::size_t>(next)] + ":" +
                           std::to_string(ports[static_cast<std::size_t>(next)]) + " (" + error + ")");
  }
  const std::int32_t mine = options_.rank;
  if (!write_all(right_, &mine, sizeof mine))
    throw DistributedError(who() + ": rank " + std::to_string(next) + " closed the ring connection");
  left_ = accept_until(listener, deadline);
  std::int32_t theirs = -1;
  if (left_ < 0 || !read_all(left_, &theirs, sizeof theirs, deadline) || theirs != previous) {
    throw DistributedError(who() + ": rank " + std::to_string(previous) + " did not join the ring within " +
                           seconds(options_.timeout_seconds));
  }
  set_nonblocking(left_);
  set_nonblocking(right_);
}

void TcpCommunicator::notify(int culprit, const std::string& message, int except) {
  std::string payload(sizeof(std::int32_t), '\0');
  const std::int32_t who_failed = culprit;
  std::memcpy(payload.data(), &who_failed, sizeof who_failed);
  payload += message;
  const Header header{static_cast<std::uint32_t>(Message::abort), 0, payload.size()};
  std::string frame(reinterpret_cast<const char*>(&header), sizeof header);
  frame += payload;
  for (int r = 0; r < options_.world_size; ++r) {
    if (r == options_.rank || r == except || (options_.rank != 0 && r != 0)) continue;
    const int fd = control_fd(r);
    if (fd >= 0) (void)!send(fd, frame.data(), frame.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  }
}

void TcpCommunicator::peer_died(int peer, const std::string& how) {
  const std::string message = "rank " + std::to_string(peer) + " " + how;
  // Rank 0 tells the others which rank it was, so that they name it rather than a neighbour that
  // stopped too.
  if (options_.rank == 0) notify(peer, message, peer);
  throw DistributedError(who() + ": " + message);
}

void TcpCommunicator::inspect_control(int peer, std::set<int>& pending_data) {
  const int fd = control_fd(peer);
  Header header{};
  const ssize_t n = recv(fd, &header, sizeof header, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) peer_died(peer, "exited or closed its connection");
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
    peer_died(peer, "lost its connection (" + std::string(std::strerror(errno)) + ")");
  }
  if (static_cast<std::size_t>(n) < sizeof header) return;  // the rest is on its way
  if (header.type == static_cast<std::uint32_t>(Message::abort)) {
    std::string payload(header.length, '\0');
    std::vector<char> frame(sizeof header + header.length);
    const Clock::time_point deadline = Clock::now() + std::chrono::seconds(1);
    if (read_all(fd, frame.data(), frame.size(), deadline) && header.length > sizeof(std::int32_t)) {
      std::int32_t culprit = -1;
      std::memcpy(&culprit, frame.data() + sizeof header, sizeof culprit);
      const std::string message(frame.data() + sizeof header + sizeof(std::int32_t),
                                header.length - sizeof(std::int32_t));
      if (options_.rank == 0) notify(culprit, message, culprit);  // pass a rank's report on to everyone
      throw DistributedError(who() + ": stopping, " + message);
    }
    peer_died(peer, "sent a broken notice");
  }
  pending_data.insert(peer);  // data for a later operation: not ours to read now
}

void TcpCommunicator::fail(int suspect, const std::string& what) {
  // A rank that loses a neighbour waits briefly for rank 0's word on who died (or sees the control
  // connection of the dead rank close, on rank 0), so the error names the rank that died first.
  const Clock::time_point until =
      Clock::now() + std::chrono::milliseconds(
                         static_cast<long long>(std::min(kGraceSeconds, options_.timeout_seconds) * 1000));
  std::set<int> pending;
  while (Clock::now() < until) {
    std::vector<pollfd> watched;
    std::vector<int> peers;
    for (int r = 0; r < options_.world_size; ++r) {
      if (r == options_.rank || (options_.rank != 0 && r != 0) || pending.count(r)) continue;
      watched.push_back({control_fd(r), POLLIN, 0});
      peers.push_back(r);
    }
    if (watched.empty()) break;
    const int ready = poll(watched.data(), watched.size(), 100);
    if (ready <= 0) continue;
    for (std::size_t i = 0; i < watched.size(); ++i) {
      if (watched[i].revents != 0) inspect_control(peers[i], pending);
    }
  }
  const std::string message = "rank " + std::to_string(suspect) + " " + what;
  if (options_.rank == 0) notify(suspect, message + ", said rank 0", suspect);
  throw DistributedError(who() + ": " + message);
}

void TcpCommunicator::transfer(int out_fd, int out_peer, const char* send_data, std::size_t send_len,
                               int in_fd, int in_peer, char* recv_data, std::size_t recv_len) {
  const auto timeout = std::chrono::milliseconds(static_cast<long long>(options_.timeout_seconds * 1000));
  Clock::time_point last_progress = Clock::now();
  std::set<int> pending;  // control connections holding data for a later operation
  // Only while waiting for data: a pure send (rank 0 releasing the ranks from a barrier) must not mistake
  // a rank that was released and left for a dead one.
  const bool watch_others = recv_len > 0;
  while (send_len > 0 || recv_len > 0) {
    std::vector<pollfd> watched;
    std::vector<int> peers;  // -1: the transfer's own sockets
    if (send_len > 0) {
      watched.push_back({out_fd, POLLOUT, 0});
      peers.push_back(-1);
    }
    if (recv_len > 0) {
      watched.push_back({in_fd, POLLIN, 0});
      peers.push_back(-1);
    }
    for (int r = 0; r < options_.world_size && watch_others; ++r) {
      if (r == options_.rank || (options_.rank != 0 && r != 0) || pending.count(r)) continue;
      const int fd = control_fd(r);
      if (fd == out_fd || fd == in_fd) continue;
      watched.push_back({fd, POLLIN, 0});
      peers.push_back(r);
    }
    const int ready = poll(watched.data(), watched.size(), 200);
    if (ready < 0 && errno != EINTR) throw DistributedError(system_error(who() + ": poll"));
    if (ready <= 0) {
      if (Clock::now() - last_progress > timeout) {
        const int late = recv_len > 0 ? in_peer : out_peer;
        const std::string what = "did not answer within " + seconds(options_.timeout_seconds) +
                                 " (hung, or far behind; ESPRESSO_DIST_TIMEOUT sets the limit)";
        // The first rank to wait too long knows the culprit; the ranks waiting on it only know it stopped.
        // The rank that waited longest knows the culprit; the ones waiting on it only see it stop. Each
        // tells rank 0, which passes on the first report it gets, and listens for that before blaming.
        if (options_.rank != 0)
          notify(late,
                 "rank " + std::to_string(late) + " " + what + ", said rank " + std::to_string(options_.rank),
                 late);
        fail(late, what);
      }
      continue;
    }
    std::size_t index = 0;
    if (send_len > 0) {
      if (watched[index].revents & (POLLOUT | POLLERR | POLLHUP)) {
        const ssize_t n = send(out_fd, send_data, send_len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
          send_data += n;
          send_len -= static_cast<std::size_t>(n);
          last_progress = Clock::now();
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
          fail(out_peer, "closed its connection (" + std::string(std::strerror(errno)) + ")");
        }
      }
      ++index;
    }
    if (recv_len > 0) {
      if (watched[index].revents & (POLLIN | POLLERR | POLLHUP)) {
        const ssize_t n = recv(in_fd, recv_data, recv_len, MSG_DONTWAIT);
        if (n > 0) {
          recv_data += n;
          recv_len -= static_cast<std::size_t>(n);
          last_progress = Clock::now();
        } else if (n == 0) {
          fail(in_peer, "exited or closed its connection");
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
          fail(in_peer, "lost its connection (" + std::string(std::strerror(errno)) + ")");
        }
      }
      ++index;
    }
    for (; index < watched.size(); ++index) {
      if (watched[index].revents != 0) inspect_control(peers[index], pending);
    }
  }
}

void TcpCommunicator::send_message(int peer, const std::string& payload) {
  const Header header{static_cast<std::uint32_t>(Message::data), 0, payload.size()};
  std::string frame(reinterpret_cast<const char*>(&header), sizeof header);
  frame += payload;
  transfer(control_fd(peer), peer, frame.data(), frame.size(), -1, -1, nullptr, 0);
}

std::string TcpCommunicator::receive_message(int peer) {
  Header header{};
  const int fd = control_fd(peer);
  transfer(-1, -1, nullptr, 0, fd, peer, reinterpret_cast<char*>(&header), sizeof header);
  if (header.type != static_cast<std::uint32_t>(Message::data) &&
      header.type != static_cast<std::uint32_t>(Message::abort))
    throw DistributedError(who() + ": rank " + std::to_string(peer) +
                           " sent something unexpected (protocol error)");
  if (header.length > (std::uint64_t{1} << 34))
    throw DistributedError(who() + ": rank " + std::to_string(peer) + " announced a message of " +
                           std::to_string(header.length) + " bytes");
  std::string payload(header.length, '\0');
  transfer(-1, -1, nullptr, 0, fd, peer, payload.data(), payload.size());
  if (header.type == static_cast<std::uint32_t>(Message::abort)) {
    throw DistributedError(
        who() + ": stopping, " +
        (payload.size() > sizeof(std::int32_t) ? payload.substr(sizeof(std::int32_t)) : payload));
  }
  return payload;
}

void TcpCommunicator::ring_all_reduce(float* data, std::size_t count) {
  const std::size_t world = static_cast<std::size_t>(options_.world_size);
  const std::size_t me = static_cast<std::size_t>(options_.rank);
  const int next = static_cast<int>((me + 1) % world);
  const int previous = static_cast<int>((me + world - 1) % world);
  auto begin = [&](std::size_t chunk) { return chunk * count / world; };
  auto size = [&](std::size_t chunk) { return begin(chunk + 1) - begin(chunk); };
  std::vector<float> incoming(count / world + 1);
  // Reduce-scatter: after world-1 steps rank r holds the full sum of chunk r+1.
  for (std::size_t step = 0; step + 1 < world; ++step) {
    const std::size_t out = (me + world - step) % world;
    const std::size_t in = (me + world - step - 1) % world;
    transfer(right_, next, reinterpret_cast<const char*>(data + begin(out)), size(out) * sizeof(float), left_,
             previous, reinterpret_cast<char*>(incoming.data()), size(in) * sizeof(float));
    float* target = data + begin(in);
    for (std::size_t i = 0; i < size(in); ++i) target[i] += incoming[i];
  }
  // All-gather: pass the finished chunks around.
  for (std::size_t step = 0; step + 1 < world; ++step) {
    const std::size_t out = (me + 1 + world - step) % world;
    const std::size_t in = (me + world - step) % world;
    transfer(right_, next, reinterpret_cast<const char*>(data + begin(out)), size(out) * sizeof(float), left_,
             previous, reinterpret_cast<char*>(data + begin(in)), size(in) * sizeof(float));
  }
}

void TcpCommunicator::throw_if_failed() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (failure_) std::rethrow_exception(failure_);
}

void TcpCommunicator::all_reduce(float* data, std::size_t count, bool average) {
  finish();
  if (options_.world_size == 1) return;
  try {
    ring_all_reduce(data, count);
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    failure_ = std::current_exception();
    throw;
  }
  if (average) {
    const float world = static_cast<float>(options_.world_size);
    for (std::size_t i = 0; i < count; ++i) data[i] /= world;
  }
}

void TcpCommunicator::broadcast(void* data, std::size_t bytes, int root) {
  finish();
  if (options_.world_size == 1) return;
  if (root != 0) throw UnsupportedError("the TCP communicator broadcasts from rank 0 only");
  try {
    if (options_.rank == 0) {
      const std::string payload(static_cast<const char*>(data), bytes);
      for (int r = 1; r < options_.world_size; ++r) send_message(r, payload);
    } else {
      const std::string payload = receive_message(0);
      if (payload.size() != bytes) {
        throw DistributedError(who() + ": rank 0 broadcast " + std::to_string(payload.size()) + " bytes, " +
                               std::to_string(bytes) + " expected (different models?)");
      }
      std::memcpy(data, payload.data(), bytes);
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    failure_ = std::current_exception();
    throw;
  }
}

std::vector<std::string> TcpCommunicator::gather_text(const std::string& text) {
  finish();
  if (options_.world_size == 1) return {text};
  std::vector<std::string> texts;
  try {
    if (options_.rank == 0) {
      texts.push_back(text);
      for (int r = 1; r < options_.world_size; ++r) texts.push_back(receive_message(r));
    } else {
      send_message(0, text);
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    failure_ = std::current_exception();
    throw;
  }
  return texts;
}

std::string TcpCommunicator::broadcast_text(const std::string& text) {
  finish();
  if (options_.world_size == 1) return text;
  try {
    if (options_.rank == 0) {
      for (int r = 1; r < options_.world_size; ++r) send_message(r, text);
      return text;
    }
    return receive_message(0);
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    failure_ = std::current_exception();
    throw;
  }
}

void TcpCommunicator::barrier() {
  gather_text("");
  broadcast_text("");
}

void TcpCommunicator::check_peers() {
  throw_if_failed();
  if (options_.world_size == 1) return;
  std::set<int> pending;
  try {
    for (int r = 0; r < options_.world_size; ++r) {
      if (r == options_.rank || (options_.rank != 0 && r != 0)) continue;
      pollfd p{control_fd(r), POLLIN, 0};
      if (poll(&p, 1, 0) > 0) inspect_control(r, pending);
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    failure_ = std::current_exception();
    throw;
  }
}

void TcpCommunicator::start_average(std::vector<Tensor> tensors) {
  for (const Tensor& t : tensors) {
    if (!t.device().is_cpu() || t.dtype() != DType::f32)
      throw UnsupportedError("the TCP communicator averages f32 CPU tensors; use NCCL for " +
                             t.device().str());
  }
  if (options_.world_size == 1) return;
  std::lock_guard<std::mutex> lock(mutex_);
  if (failure_) std::rethrow_exception(failure_);
  queue_.push_back(std::move(tensors));
  changed_.notify_all();
}

void TcpCommunicator::finish() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [&] { return (queue_.empty() && !busy_) || failure_; });
  if (failure_) std::rethrow_exception(failure_);
}

void TcpCommunicator::run_worker() {
  for (;;) {
    std::vector<Tensor> tensors;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      tensors = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    try {
      std::size_t total = 0;
      for (const Tensor& t : tensors) total += static_cast<std::size_t>(t.numel());
      float* data = nullptr;
      if (tensors.size() == 1) {
        data = tensors[0].data<float>();
      } else {
        flat_.resize(total);
        std::size_t at = 0;
        for (Tensor& t : tensors) {
          std::copy_n(t.data<float>(), t.numel(), flat_.data() + at);
          at += static_cast<std::size_t>(t.numel());
        }
        data = flat_.data();
      }
      ring_all_reduce(data, total);
      const float world = static_cast<float>(options_.world_size);
      for (std::size_t i = 0; i < total; ++i) data[i] /= world;
      if (tensors.size() > 1) {
        std::size_t at = 0;
        for (Tensor& t : tensors) {
          std::copy_n(flat_.data() + at, t.numel(), t.data<float>());
          at += static_cast<std::size_t>(t.numel());
        }
      }
      std::lock_guard<std::mutex> lock(mutex_);
      busy_ = false;
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      failure_ = std::current_exception();
      busy_ = false;
      queue_.clear();
    }
    changed_.notify_all();
  }
}

std::unique_ptr<Communicator> connect_tcp(const DistributedOptions& options) {
  return std::make_unique<TcpCommunicator>(options);
}

}  // namespace espresso::train
