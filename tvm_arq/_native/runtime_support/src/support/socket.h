// tvm_arq: our own POSIX TCP socket wrapper ("support/socket.h"), used by the RPC client/server.
#ifndef TVM_ARQ_SUPPORT_SOCKET_H_
#define TVM_ARQ_SUPPORT_SOCKET_H_

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <tvm/ffi/error.h>
#include <unistd.h>

#include <cstring>
#include <string>

namespace tvm {
namespace support {

/*! \brief An IPv4 or IPv6 socket address resolved from a host name and a port. */
class SockAddr {
 public:
  SockAddr() { std::memset(&addr_, 0, sizeof(addr_)); }
  SockAddr(const char* host, int port) : SockAddr() { Set(host, port); }

  void Set(const char* host, int port) {
    addrinfo hints;
    std::memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    std::string service = std::to_string(port);
    int rc = getaddrinfo(host, service.c_str(), &hints, &res);
    TVM_FFI_ICHECK(rc == 0 && res != nullptr)
        << "cannot resolve address " << host << ":" << port << ": " << gai_strerror(rc);
    std::memcpy(&addr_, res->ai_addr, res->ai_addrlen);
    len_ = static_cast<socklen_t>(res->ai_addrlen);
    freeaddrinfo(res);
  }

  int ss_family() const { return addr_.ss_family; }
  const sockaddr* addr() const { return reinterpret_cast<const sockaddr*>(&addr_); }
  socklen_t addr_len() const { return len_; }

  std::string AsString() const {
    char host[INET6_ADDRSTRLEN] = {0};
    int port = 0;
    if (addr_.ss_family == AF_INET) {
      const auto* a = reinterpret_cast<const sockaddr_in*>(&addr_);
      inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
      port = ntohs(a->sin_port);
    } else if (addr_.ss_family == AF_INET6) {
      const auto* a = reinterpret_cast<const sockaddr_in6*>(&addr_);
      inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
      port = ntohs(a->sin6_port);
    }
    return std::string(host) + ":" + std::to_string(port);
  }

 private:
  sockaddr_storage addr_;
  socklen_t len_{0};
};

/*! \brief Base of socket wrappers: holds the descriptor (copies share it, nothing closes implicitly). */
class Socket {
 public:
  using SockType = int;
  static constexpr SockType kInvalid = -1;

  SockType sockfd;

  explicit Socket(SockType fd = kInvalid) : sockfd(fd) {}

  /*! \brief Throw an error naming the failed operation and errno. */
  [[noreturn]] static void Error(const char* what) {
    int err = errno;
    TVM_FFI_THROW(InternalError) << "Socket " << what << " error: " << std::strerror(err);
    __builtin_unreachable();
  }

  bool IsClosed() const { return sockfd == kInvalid; }
  /*! \return whether the last error on the socket is a real failure. */
  bool BadSocket() const {
    if (IsClosed()) return true;
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(sockfd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return true;
    return err != 0 && err != EINTR && err != EAGAIN && err != EWOULDBLOCK;
  }
  void Close() {
    if (sockfd != kInvalid) {
      ::close(sockfd);
      sockfd = kInvalid;
    }
  }
};

/*! \brief A blocking TCP stream socket. */
class TCPSocket : public Socket {
 public:
  TCPSocket() = default;
  explicit TCPSocket(SockType fd) : Socket(fd) {}

  void Create(int family = AF_INET) {
    sockfd = ::socket(family, SOCK_STREAM, 0);
    if (sockfd == kInvalid) Error("create");
  }
  bool Connect(const SockAddr& addr) {
    int rc;
    do {
      rc = ::connect(sockfd, addr.addr(), addr.addr_len());
    } while (rc != 0 && errno == EINTR);
    if (rc == 0) {
      int one = 1;
      setsockopt(sockfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return rc == 0;
  }
  /*! \return bytes sent, or -1 on error. */
  ssize_t Send(const void* data, size_t size) {
    ssize_t n;
    do {
      n = ::send(sockfd, data, size, MSG_NOSIGNAL);
    } while (n == -1 && errno == EINTR);
    return n;
  }
  /*! \return bytes received (0 at end of stream), or -1 on error. */
  ssize_t Recv(void* data, size_t size) {
    ssize_t n;
    do {
      n = ::recv(sockfd, data, size, 0);
    } while (n == -1 && errno == EINTR);
    return n;
  }
  /*! \brief Send everything; returns the number of bytes sent (less only if the peer closed). */
  size_t SendAll(const void* data, size_t size) {
    const char* p = static_cast<const char*>(data);
    size_t done = 0;
    while (done < size) {
      ssize_t n = Send(p + done, size - done);
      if (n == -1) Error("SendAll");
      if (n == 0) break;
      done += static_cast<size_t>(n);
    }
    return done;
  }
  /*! \brief Receive exactly size bytes unless the peer closes first. */
  size_t RecvAll(void* data, size_t size) {
    char* p = static_cast<char*>(data);
    size_t done = 0;
    while (done < size) {
      ssize_t n = Recv(p + done, size - done);
      if (n == -1) Error("RecvAll");
      if (n == 0) break;
      done += static_cast<size_t>(n);
    }
    return done;
  }
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_ARQ_SUPPORT_SOCKET_H_
