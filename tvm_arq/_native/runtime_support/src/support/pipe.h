// tvm_arq: our own minimal pipe-end wrapper ("support/pipe.h").
#ifndef TVM_ARQ_SUPPORT_PIPE_H_
#define TVM_ARQ_SUPPORT_PIPE_H_

#include <errno.h>
#include <tvm/ffi/error.h>
#include <unistd.h>

#include <cstring>

namespace tvm {
namespace support {

/*! \brief A file descriptor used as one end of a pipe. */
class Pipe {
 public:
  using PipeHandle = int;
  explicit Pipe(PipeHandle fd) : fd_(fd) {}
  size_t Read(void* data, size_t size) {
    ssize_t n;
    do {
      n = ::read(fd_, data, size);
    } while (n == -1 && errno == EINTR);
    TVM_FFI_ICHECK(n != -1) << "Pipe read failed: " << std::strerror(errno);
    return static_cast<size_t>(n);
  }
  size_t Write(const void* data, size_t size) {
    ssize_t n;
    do {
      n = ::write(fd_, data, size);
    } while (n == -1 && errno == EINTR);
    TVM_FFI_ICHECK(n != -1) << "Pipe write failed: " << std::strerror(errno);
    return static_cast<size_t>(n);
  }
  void Close() {
    if (fd_ != -1) ::close(fd_);
    fd_ = -1;
  }

 private:
  PipeHandle fd_;
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_ARQ_SUPPORT_PIPE_H_
