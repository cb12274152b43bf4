// tvm_arq: our own growable FIFO byte buffer used by the RPC endpoint ("support/ring_buffer.h").
// Stored bytes are kept contiguous (compacted on demand), which keeps the callbacks simple.
#ifndef TVM_ARQ_SUPPORT_RING_BUFFER_H_
#define TVM_ARQ_SUPPORT_RING_BUFFER_H_

#include <tvm/ffi/error.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace tvm {
namespace support {

class RingBuffer {
 public:
  RingBuffer() : buf_(kInitialCapacity) {}

  /*! \return number of bytes stored. */
  size_t bytes_available() const { return size_; }

  /*! \brief Make room for at least n stored bytes in total. */
  void Reserve(size_t n) {
    if (n > buf_.size()) Grow(n);
  }

  /*! \brief Remove size bytes from the front into data (size must be available). */
  void Read(void* data, size_t size) {
    TVM_FFI_ICHECK_LE(size, size_) << "RingBuffer: read past the stored bytes";
    if (size != 0) std::memcpy(data, buf_.data() + head_, size);
    Consume(size);
  }

  /*! \brief Append size bytes. */
  void Write(const void* data, size_t size) {
    MakeTailRoom(size);
    if (size != 0) std::memcpy(buf_.data() + head_ + size_, data, size);
    size_ += size;
  }

  /*!
   * \brief Pass up to max_nbytes stored bytes to frecv(const void*, size_t) -> size_t and drop as
   *        many as it reports consumed.
   */
  template <typename F>
  size_t ReadWithCallback(F frecv, size_t max_nbytes) {
    size_t n = std::min(max_nbytes, size_);
    if (n == 0) return 0;
    size_t used = frecv(static_cast<const void*>(buf_.data() + head_), n);
    TVM_FFI_ICHECK_LE(used, n);
    Consume(used);
    return used;
  }

  /*!
   * \brief Let fsend(void*, size_t) -> size_t fill up to max_nbytes at the back; keeps what it
   *        reports written.
   */
  template <typename F>
  size_t WriteWithCallback(F fsend, size_t max_nbytes) {
    MakeTailRoom(max_nbytes);
    size_t n = fsend(static_cast<void*>(buf_.data() + head_ + size_), max_nbytes);
    TVM_FFI_ICHECK_LE(n, max_nbytes);
    size_ += n;
    return n;
  }

 private:
  static constexpr size_t kInitialCapacity = 1024;

  void Consume(size_t n) {
    head_ += n;
    size_ -= n;
    if (size_ == 0) head_ = 0;
  }
  void MakeTailRoom(size_t n) {
    if (head_ + size_ + n <= buf_.size()) return;
    if (head_ != 0) {  // compact
      std::memmove(buf_.data(), buf_.data() + head_, size_);
      head_ = 0;
    }
    if (size_ + n > buf_.size()) Grow(size_ + n);
  }
  void Grow(size_t need) {
    size_t cap = std::max<size_t>(buf_.size(), kInitialCapacity);
    while (cap < need) cap *= 2;
    std::vector<char> next(cap);
    if (size_ != 0) std::memcpy(next.data(), buf_.data() + head_, size_);
    buf_.swap(next);
    head_ = 0;
  }

  std::vector<char> buf_;
  size_t head_{0};
  size_t size_{0};
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_ARQ_SUPPORT_RING_BUFFER_H_
