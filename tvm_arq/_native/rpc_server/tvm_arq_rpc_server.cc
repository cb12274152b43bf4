// tvm_arq_rpc_server: a TVM RPC server for boards, written for tvm_arq.
//
// It links the board's TVM runtime (libtvm_runtime.so + libtvm_ffi.so) and serves TVM's RPC
// protocol, so that a host can upload a compiled model, load it and run it in the Relax VM:
//
//   tvm_arq_rpc_server [--host 0.0.0.0] [--port 9090] [--port-end 9199]
//                      [--tracker HOST:PORT --key KEY] [--custom-addr ADDR] [--work-dir DIR]
//   tvm_arq_rpc_server --pipe READ_FD WRITE_FD     (one session over two pipe ends)
//
// Socket mode listens on HOST:PORT (the first free port below --port-end) and prints one line
// "tvm_arq_rpc_server listening on HOST:PORT" to stdout when it is ready. With --tracker it
// registers itself at a TVM RPC tracker under KEY and re-registers after every session. Each
// session runs in a forked child with its own temporary work directory, so a crashing model
// (e.g. SIGILL) ends the session, not the server.
//
// Functions registered for the client (besides those libtvm_runtime registers itself):
//   tvm.rpc.server.workpath(name) -> path in the session's work directory
//   tvm.rpc.server.load_module(name) -> Module loaded from the work directory (.so)
//   tvm.rpc.server.listdir(dir) -> comma separated file names
//   tvm.contrib.random.random_fill_for_measure(tensor) (for MetaSchedule's RPC runner)
//
// Wire formats implemented here (all integers little-endian int32):
//   session handshake: client sends MAGIC, len, "client:<key> [-timeout=S]"; the server answers
//     MAGIC (accepted) or MAGIC+2 (key mismatch); when accepted it sends len, "server:<key>".
//   tracker: after TRACKER_MAGIC is echoed, messages are len + JSON arrays [code, ...].
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/json.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace tvm_arq {
namespace {

namespace ffi = tvm::ffi;

constexpr int32_t kRPCMagic = 0xff271;
constexpr int32_t kRPCMismatch = kRPCMagic + 2;
constexpr int32_t kTrackerMagic = 0x2f271;
// tracker message codes
constexpr int kTrackerSuccess = 0;
constexpr int kTrackerPut = 3;
constexpr int kTrackerUpdateInfo = 5;
constexpr int kTrackerGetPendingMatchKeys = 7;

volatile sig_atomic_t g_stop = 0;
pid_t g_child = -1;
bool g_quiet = false;

void Log(const std::string& msg) {
  if (!g_quiet) {
    std::fprintf(stderr, "[tvm_arq_rpc_server %d] %s\n", static_cast<int>(getpid()), msg.c_str());
    std::fflush(stderr);
  }
}

[[noreturn]] void Die(const std::string& msg) {
  std::fprintf(stderr, "tvm_arq_rpc_server: error: %s\n", msg.c_str());
  std::exit(2);
}

// ------------------------------------------------------------------------------------------------
// session environment

std::string g_work_dir;  // work directory of the current session

std::string WorkPath(const std::string& name) {
  if (g_work_dir.empty()) throw std::runtime_error("tvm_arq_rpc_server: no session work directory");
  if (!name.empty() && name[0] == '/') return name;
  return g_work_dir + "/" + name;
}

void RemoveTree(const std::string& path) {
  DIR* dir = opendir(path.c_str());
  if (dir != nullptr) {
    while (dirent* ent = readdir(dir)) {
      std::string n = ent->d_name;
      if (n == "." || n == "..") continue;
      std::string child = path + "/" + n;
      struct stat st;
      if (lstat(child.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
        RemoveTree(child);
      } else {
        unlink(child.c_str());
      }
    }
    closedir(dir);
  }
  rmdir(path.c_str());
}

template <typename T>
void FillUniform(T* data, int64_t n, std::mt19937_64* gen, double lo, double hi) {
  if constexpr (std::is_floating_point_v<T>) {
    std::uniform_real_distribution<double> dist(lo, hi);
    for (int64_t i = 0; i < n; ++i) data[i] = static_cast<T>(dist(*gen));
  } else {
    std::uniform_int_distribution<int64_t> dist(static_cast<int64_t>(lo), static_cast<int64_t>(hi));
    for (int64_t i = 0; i < n; ++i) data[i] = static_cast<T>(dist(*gen));
  }
}

void RandomFill(DLTensor* t) {
  static std::mt19937_64 gen(0x7f4a7c15);
  if (t->device.device_type != kDLCPU) {
    throw std::runtime_error("random_fill_for_measure: only CPU tensors are supported");
  }
  int64_t n = 1;
  for (int i = 0; i < t->ndim; ++i) n *= t->shape[i];
  n *= t->dtype.lanes;
  char* base = static_cast<char*>(t->data) + t->byte_offset;
  const DLDataType dt = t->dtype;
  if (dt.code == kDLFloat && dt.bits == 32) {
    FillUniform(reinterpret_cast<float*>(base), n, &gen, -1.0, 1.0);
  } else if (dt.code == kDLFloat && dt.bits == 64) {
    FillUniform(reinterpret_cast<double*>(base), n, &gen, -1.0, 1.0);
  } else if (dt.code == kDLInt && dt.bits == 8) {
    FillUniform(reinterpret_cast<int8_t*>(base), n, &gen, -128, 127);
  } else if (dt.code == kDLUInt && dt.bits == 8) {
    FillUniform(reinterpret_cast<uint8_t*>(base), n, &gen, 0, 255);
  } else if (dt.code == kDLInt && dt.bits == 16) {
    FillUniform(reinterpret_cast<int16_t*>(base), n, &gen, -1024, 1024);
  } else if (dt.code == kDLInt && dt.bits == 32) {
    FillUniform(reinterpret_cast<int32_t*>(base), n, &gen, -1024, 1024);
  } else if (dt.code == kDLInt && dt.bits == 64) {
    FillUniform(reinterpret_cast<int64_t*>(base), n, &gen, -1024, 1024);
  } else {
    // any other type: random bytes (values are irrelevant for timing)
    int64_t nbytes = n * ((dt.bits + 7) / 8);
    std::uniform_int_distribution<int> dist(0, 255);
    for (int64_t i = 0; i < nbytes; ++i) base[i] = static_cast<char>(dist(gen));
  }
}

void RegisterServerFunctions() {
  ffi::Function::SetGlobal(
      "tvm.rpc.server.workpath",
      ffi::Function::FromTyped([](ffi::String name) -> ffi::String { return WorkPath(name); }),
      /*can_override=*/true);
  ffi::Function::SetGlobal(
      "tvm.rpc.server.load_module",
      ffi::Function::FromTyped([](ffi::String name) -> ffi::Module {
        std::string path = WorkPath(name);
        auto ends_with = [&](const char* suf) {
          size_t n = std::strlen(suf);
          return path.size() >= n && path.compare(path.size() - n, n, suf) == 0;
        };
        if (ends_with(".tar") || ends_with(".o")) {
          throw std::runtime_error("tvm_arq_rpc_server cannot link " + path +
                                   " (no compiler on the board): export a shared object (.so) "
                                   "with the target's cross toolchain instead");
        }
        Log("load_module " + path);
        return ffi::Module::LoadFromFile(path);
      }),
      true);
  ffi::Function::SetGlobal(
      "tvm.rpc.server.listdir",
      ffi::Function::FromTyped([](ffi::String name) -> ffi::String {
        std::string path = WorkPath(name);
        DIR* dir = opendir(path.c_str());
        if (dir == nullptr) throw std::runtime_error("cannot list directory " + path);
        std::string out;
        while (dirent* ent = readdir(dir)) {
          std::string n = ent->d_name;
          if (n == "." || n == "..") continue;
          if (!out.empty()) out += ",";
          out += path + "/" + n;
        }
        closedir(dir);
        return out;
      }),
      true);
  if (!ffi::Function::GetGlobal("tvm.contrib.random.random_fill_for_measure").has_value()) {
    ffi::Function::SetGlobal("tvm.contrib.random.random_fill_for_measure",
                             ffi::Function::FromTyped([](DLTensor* t) { RandomFill(t); }), true);
  }
}

// ------------------------------------------------------------------------------------------------
// sockets

bool SendAll(int fd, const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size != 0) {
    ssize_t n = send(fd, p, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool RecvAll(int fd, void* data, size_t size) {
  char* p = static_cast<char*>(data);
  while (size != 0) {
    ssize_t n = recv(fd, p, size, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool SendInt(int fd, int32_t v) { return SendAll(fd, &v, sizeof(v)); }

bool RecvInt(int fd, int32_t* v) { return RecvAll(fd, v, sizeof(*v)); }

bool SendString(int fd, const std::string& s) {
  return SendInt(fd, static_cast<int32_t>(s.size())) && SendAll(fd, s.data(), s.size());
}

bool RecvString(int fd, std::string* s, int32_t max_len = 1 << 20) {
  int32_t n;
  if (!RecvInt(fd, &n) || n < 0 || n > max_len) return false;
  s->assign(static_cast<size_t>(n), '\0');
  return n == 0 || RecvAll(fd, &(*s)[0], static_cast<size_t>(n));
}

void SetRecvTimeout(int fd, int seconds) {
  timeval tv{seconds, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

int ConnectTo(const std::string& host, int port) {
  addrinfo hints;
  std::memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0) return -1;
  int fd = -1;
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) continue;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  return fd;
}

/*! \brief Bind a listening socket to the first free port in [port, port_end). */
int Listen(const std::string& host, int port, int port_end, int* bound_port) {
  addrinfo hints;
  std::memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  for (int p = port; p < std::max(port + 1, port_end); ++p) {
    addrinfo* res = nullptr;
    if (getaddrinfo(host.c_str(), std::to_string(p).c_str(), &hints, &res) != 0) {
      Die("cannot resolve listen address " + host);
    }
    int fd = socket(res->ai_family, res->ai_socktype, res->ai_protocol);
    if (fd < 0) Die(std::string("socket: ") + std::strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    int rc = bind(fd, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    if (rc == 0 && listen(fd, 8) == 0) {
      if (p == 0) {  // port 0: the kernel picked one
        sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
        p = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                           : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
      }
      *bound_port = p;
      return fd;
    }
    close(fd);
    if (errno != EADDRINUSE) Die("cannot listen on " + host + ":" + std::to_string(p) + ": " +
                                 std::strerror(errno));
  }
  Die("no free port in [" + std::to_string(port) + ", " + std::to_string(port_end) + ")");
}

// ------------------------------------------------------------------------------------------------
// tracker client

class TrackerLink {
 public:
  TrackerLink(std::string host, int port, std::string key, int server_port, std::string custom_addr)
      : host_(std::move(host)),
        port_(port),
        key_(std::move(key)),
        server_port_(server_port),
        custom_addr_(std::move(custom_addr)) {}

  ~TrackerLink() { Close(); }

  bool connected() const { return fd_ >= 0; }
  int fd() const { return fd_; }

  /*! \brief Connect, say hello and report our key; returns false (and stays closed) on failure. */
  bool Connect() {
    Close();
    fd_ = ConnectTo(host_, port_);
    if (fd_ < 0) return false;
    SetRecvTimeout(fd_, 30);
    int32_t magic = 0;
    if (!SendInt(fd_, kTrackerMagic) || !RecvInt(fd_, &magic) || magic != kTrackerMagic) {
      Log("peer " + host_ + ":" + std::to_string(port_) + " is not a TVM RPC tracker");
      Close();
      return false;
    }
    ffi::Map<ffi::String, ffi::Any> info;
    info.Set("key", ffi::String("server:" + key_));
    info.Set("addr", ffi::Array<ffi::Any>{Addr(), static_cast<int64_t>(server_port_)});
    if (!Call(ffi::Array<ffi::Any>{static_cast<int64_t>(kTrackerUpdateInfo), info}, nullptr, true)) {
      Close();
      return false;
    }
    return true;
  }

  /*! \brief Offer this server under a fresh match key; returns the key or "" on failure. */
  std::string Put() {
    std::string matchkey = key_ + ":" + RandomSuffix();
    ffi::Array<ffi::Any> value{static_cast<int64_t>(server_port_), ffi::String(matchkey)};
    ffi::Array<ffi::Any> msg{static_cast<int64_t>(kTrackerPut), ffi::String(key_), value, Addr()};
    if (!Call(msg, nullptr, true)) return "";
    return matchkey;
  }

  /*! \brief Ask the tracker which match keys are still waiting for a client. */
  bool PendingKeys(std::vector<std::string>* keys) {
    ffi::Any reply;
    if (!Call(ffi::Array<ffi::Any>{static_cast<int64_t>(kTrackerGetPendingMatchKeys)}, &reply,
              false)) {
      return false;
    }
    keys->clear();
    if (auto arr = reply.try_cast<ffi::Array<ffi::Any>>()) {
      for (const ffi::Any& k : *arr) {
        if (auto s = k.try_cast<ffi::String>()) keys->push_back(std::string(*s));
      }
    }
    return true;
  }

  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  ffi::Any Addr() const {
    if (custom_addr_.empty()) return ffi::Any(nullptr);
    return ffi::Any(ffi::String(custom_addr_));
  }

  static std::string RandomSuffix() {
    static std::mt19937_64 gen(std::random_device{}() ^
                               static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
    std::uniform_real_distribution<double> dist(0.0, 1.0);
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.16f", dist(gen));
    return buf;
  }

  bool Call(const ffi::Array<ffi::Any>& msg, ffi::Any* reply, bool expect_success) {
    if (fd_ < 0) return false;
    std::string text(ffi::json::Stringify(msg));
    std::string answer;
    if (!SendString(fd_, text) || !RecvString(fd_, &answer)) {
      Log("lost the tracker connection");
      Close();
      return false;
    }
    ffi::String err;
    ffi::json::Value value = ffi::json::Parse(answer, &err);
    if (!err.empty()) {
      Log("bad tracker reply: " + answer);
      Close();
      return false;
    }
    if (expect_success) {
      auto code = value.try_cast<int64_t>();
      if (!code.has_value() || *code != kTrackerSuccess) {
        Log("tracker refused " + text + ": " + answer);
        Close();
        return false;
      }
    }
    if (reply != nullptr) *reply = value;
    return true;
  }

  std::string host_;
  int port_;
  std::string key_;
  int server_port_;
  std::string custom_addr_;
  int fd_{-1};
};

// ------------------------------------------------------------------------------------------------
// serving

struct Options {
  std::string host = "0.0.0.0";
  int port = 9090;
  int port_end = 9199;
  std::string tracker;
  std::string key;
  std::string custom_addr;
  std::string work_dir;
  bool fork_sessions = true;
  int pipe_read = -1;
  int pipe_write = -1;
};

std::string MakeSessionDir(const Options& opt) {
  std::string base = opt.work_dir;
  if (base.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    base = (tmp != nullptr && *tmp != '\0') ? tmp : "/tmp";
  }
  std::string templ = base + "/tvm_arq_rpc_XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) Die("mkdtemp in " + base + ": " + std::strerror(errno));
  return std::string(buf.data());
}

/*! \brief Serve one RPC session on a connected socket (in the calling process). */
void ServeSocketSession(int fd, const Options& opt) {
  g_work_dir = MakeSessionDir(opt);
  Log("session in " + g_work_dir);
  auto server_loop = ffi::Function::GetGlobal("rpc.ServerLoop");
  if (!server_loop.has_value()) Die("libtvm_runtime has no rpc.ServerLoop");
  try {
    (*server_loop)(static_cast<int64_t>(fd));
  } catch (const std::exception& e) {
    Log(std::string("session ended with an error: ") + e.what());
  }
  RemoveTree(g_work_dir);
  g_work_dir.clear();
}

/*! \brief Serve one session over two pipe ends (used with rpc.CreatePipeClient). */
int ServePipe(const Options& opt) {
  g_work_dir = MakeSessionDir(opt);
  int rfd = opt.pipe_read, wfd = opt.pipe_write;
  ffi::Function fsend = ffi::Function::FromPacked([wfd](ffi::PackedArgs args, ffi::Any* rv) {
    const TVMFFIByteArray* bytes = args[0].cast<TVMFFIByteArray*>();
    ssize_t n;
    do {
      n = write(wfd, bytes->data, bytes->size);
    } while (n < 0 && errno == EINTR);
    *rv = static_cast<int64_t>(n);
  });
  ffi::Function frecv = ffi::Function::FromPacked([rfd](ffi::PackedArgs args, ffi::Any* rv) {
    int64_t size = args[0].cast<int64_t>();
    std::string buf(static_cast<size_t>(size), '\0');
    ssize_t n;
    do {
      n = read(rfd, &buf[0], buf.size());
    } while (n < 0 && errno == EINTR);
    buf.resize(n > 0 ? static_cast<size_t>(n) : 0);
    *rv = ffi::Bytes(std::move(buf));
  });
  auto server_loop = ffi::Function::GetGlobal("rpc.ServerLoop");
  if (!server_loop.has_value()) Die("libtvm_runtime has no rpc.ServerLoop");
  int rc = 0;
  try {
    (*server_loop)(fsend, frecv);
  } catch (const std::exception& e) {
    Log(std::string("pipe session ended with an error: ") + e.what());
    rc = 1;
  }
  RemoveTree(g_work_dir);
  return rc;
}

struct Accepted {
  int fd = -1;
  double timeout_sec = 0;  // 0: none
};

/*! \brief Handshake with a new connection; returns false if it is not our client. */
bool Handshake(int fd, const std::string& expected_client_key, const std::string& server_key,
               double* timeout_sec) {
  SetRecvTimeout(fd, 10);
  int32_t magic = 0;
  std::string key;
  if (!RecvInt(fd, &magic) || magic != kRPCMagic || !RecvString(fd, &key, 4096)) return false;
  // key: "client:<matchkey> [-timeout=S] ..."
  std::string head = key.substr(0, key.find(' '));
  if (head != "client:" + expected_client_key) {
    SendInt(fd, kRPCMismatch);
    Log("rejected a client with key '" + head + "'");
    return false;
  }
  *timeout_sec = 0;
  size_t pos = key.find("-timeout=");
  if (pos != std::string::npos) *timeout_sec = std::atof(key.c_str() + pos + 9);
  if (!SendInt(fd, kRPCMagic) || !SendString(fd, server_key)) return false;
  SetRecvTimeout(fd, 0);
  return true;
}

/*! \brief Run a session in a child process and wait for it (killing it after its time-out). */
void RunSession(int conn, const Options& opt, double timeout_sec, int listen_fd, int tracker_fd) {
  if (!opt.fork_sessions) {
    ServeSocketSession(conn, opt);
    close(conn);
    return;
  }
  pid_t pid = fork();
  if (pid < 0) {
    Log(std::string("fork failed: ") + std::strerror(errno));
    close(conn);
    return;
  }
  if (pid == 0) {
    close(listen_fd);
    if (tracker_fd >= 0) close(tracker_fd);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    ServeSocketSession(conn, opt);
    close(conn);
    std::fflush(nullptr);
    _exit(0);
  }
  close(conn);
  g_child = pid;
  auto start = std::chrono::steady_clock::now();
  int status = 0;
  while (true) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) break;
    if (g_stop) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      break;
    }
    double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (timeout_sec > 0 && elapsed > timeout_sec) {
      Log("session exceeded its " + std::to_string(timeout_sec) + " s time-out; killing it");
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      break;
    }
    usleep(20000);
  }
  g_child = -1;
  if (WIFSIGNALED(status)) {
    Log("session process died with signal " + std::to_string(WTERMSIG(status)) +
        std::string(WTERMSIG(status) == SIGILL ? " (illegal instruction: the model uses an ISA "
                                                 "extension this board lacks)"
                                               : ""));
  }
}

int ServeSocket(const Options& opt) {
  int port = 0;
  int listen_fd = Listen(opt.host, opt.port, opt.port_end, &port);
  std::printf("tvm_arq_rpc_server listening on %s:%d\n", opt.host.c_str(), port);
  std::fflush(stdout);

  std::unique_ptr<TrackerLink> tracker;
  std::string tracker_host;
  int tracker_port = 0;
  if (!opt.tracker.empty()) {
    size_t colon = opt.tracker.rfind(':');
    if (colon == std::string::npos) Die("--tracker expects HOST:PORT");
    tracker_host = opt.tracker.substr(0, colon);
    tracker_port = std::atoi(opt.tracker.c_str() + colon + 1);
    tracker = std::make_unique<TrackerLink>(tracker_host, tracker_port, opt.key, port, opt.custom_addr);
  }
  const std::string server_key = "server:" + opt.key;
  constexpr int kPingMs = 2000;
  constexpr int kUnusedKeyPeriods = 3;  // re-offer a key taken but not used for ~6 s

  while (!g_stop) {
    std::string matchkey = opt.key;
    if (tracker) {
      if (!tracker->connected() && !tracker->Connect()) {
        Log("cannot reach the tracker at " + opt.tracker + "; retrying");
        for (int i = 0; i < 20 && !g_stop; ++i) usleep(100000);
        continue;
      }
      matchkey = tracker->Put();
      if (matchkey.empty()) continue;
      Log("registered at tracker " + opt.tracker + " as '" + opt.key + "'");
    }
    int unused_periods = 0;
    bool reregister = false;
    while (!g_stop && !reregister) {
      pollfd pfd{listen_fd, POLLIN, 0};
      int ready = poll(&pfd, 1, tracker ? kPingMs : 500);
      if (ready < 0 && errno != EINTR) Die(std::string("poll: ") + std::strerror(errno));
      if (ready <= 0) {
        if (tracker) {
          std::vector<std::string> pending;
          if (!tracker->PendingKeys(&pending)) {
            reregister = true;  // connection lost: reconnect
            break;
          }
          bool waiting = std::find(pending.begin(), pending.end(), matchkey) != pending.end();
          unused_periods = waiting ? 0 : unused_periods + 1;
          if (unused_periods > kUnusedKeyPeriods) {
            Log("match key was handed out but never used; offering a new one");
            reregister = true;
          }
        }
        continue;
      }
      sockaddr_storage peer;
      socklen_t plen = sizeof(peer);
      int conn = accept(listen_fd, reinterpret_cast<sockaddr*>(&peer), &plen);
      if (conn < 0) continue;
      int one = 1;
      setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      double timeout_sec = 0;
      if (!Handshake(conn, matchkey, server_key, &timeout_sec)) {
        close(conn);
        continue;
      }
      Log("session started");
      RunSession(conn, opt, timeout_sec, listen_fd, tracker ? tracker->fd() : -1);
      Log("session finished");
      reregister = true;  // a used match key is gone: offer a new one
    }
  }
  close(listen_fd);
  Log("stopped");
  return 0;
}

void OnSignal(int) {
  g_stop = 1;
  if (g_child > 0) kill(g_child, SIGKILL);
}

void Usage() {
  std::fprintf(stderr,
               "usage: tvm_arq_rpc_server [--host H] [--port P] [--port-end E]\n"
               "                          [--tracker HOST:PORT --key KEY] [--custom-addr A]\n"
               "                          [--work-dir DIR] [--no-fork] [--quiet]\n"
               "       tvm_arq_rpc_server --pipe READ_FD WRITE_FD\n");
}

Options ParseArgs(int argc, char** argv) {
  Options opt;
  bool pipe_mode = false;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const char* name) -> std::string {
      if (i + 1 >= argc) {
        Usage();
        Die(std::string("missing value for ") + name);
      }
      return argv[++i];
    };
    if (a == "--host") {
      opt.host = value("--host");
    } else if (a == "--port") {
      opt.port = std::atoi(value("--port").c_str());
    } else if (a == "--port-end") {
      opt.port_end = std::atoi(value("--port-end").c_str());
    } else if (a == "--tracker") {
      opt.tracker = value("--tracker");
    } else if (a == "--key") {
      opt.key = value("--key");
    } else if (a == "--custom-addr") {
      opt.custom_addr = value("--custom-addr");
    } else if (a == "--work-dir") {
      opt.work_dir = value("--work-dir");
    } else if (a == "--no-fork") {
      opt.fork_sessions = false;
    } else if (a == "--quiet") {
      g_quiet = true;
    } else if (a == "--pipe") {
      pipe_mode = true;
    } else if (a == "-h" || a == "--help") {
      Usage();
      std::exit(0);
    } else if (!a.empty() && a[0] != '-') {
      positional.push_back(a);
    } else {
      Usage();
      Die("unknown option " + a);
    }
  }
  if (pipe_mode) {
    if (positional.size() < 2) Die("--pipe needs READ_FD WRITE_FD");
    opt.pipe_read = std::atoi(positional[positional.size() - 2].c_str());
    opt.pipe_write = std::atoi(positional[positional.size() - 1].c_str());
  } else if (!positional.empty()) {
    Usage();
    Die("unexpected argument " + positional[0]);
  }
  if (!opt.tracker.empty() && opt.key.empty()) Die("--tracker needs --key");
  if (opt.port_end <= opt.port) opt.port_end = opt.port + 1;
  return opt;
}

}  // namespace
}  // namespace tvm_arq

int main(int argc, char** argv) {
  using namespace tvm_arq;
  Options opt = ParseArgs(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = OnSignal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  try {
    RegisterServerFunctions();
    if (opt.pipe_read >= 0) return ServePipe(opt);
    return ServeSocket(opt);
  } catch (const std::exception& e) {
    Die(e.what());
  }
}
