// tvm_arq: our own in-memory streams (the runtime sources include "support/bytes_io.h").
#ifndef TVM_ARQ_SUPPORT_BYTES_IO_H_
#define TVM_ARQ_SUPPORT_BYTES_IO_H_

#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace tvm {
namespace support {

/*! \brief Reads from a byte buffer that outlives the stream. */
class BytesInStream : public Stream {
 public:
  explicit BytesInStream(const std::string& data) : data_(data.data()), size_(data.size()) {}
  explicit BytesInStream(const ffi::Bytes& data) : keep_(data), data_(keep_.data()), size_(keep_.size()) {}
  BytesInStream(const char* data, size_t size) : data_(data), size_(size) {}

  using Stream::Read;
  using Stream::Write;

  size_t Read(void* ptr, size_t size) final {
    size_t n = std::min(size, size_ - pos_);
    if (n != 0) std::memcpy(ptr, data_ + pos_, n);
    pos_ += n;
    return n;
  }
  size_t Write(const void*, size_t) final { return 0; }

  size_t Tell() const { return pos_; }
  void Seek(size_t pos) { pos_ = std::min(pos, size_); }

 private:
  ffi::Bytes keep_;
  const char* data_;
  size_t size_;
  size_t pos_{0};
};

/*! \brief Appends everything written to a std::string. */
class BytesOutStream : public Stream {
 public:
  explicit BytesOutStream(std::string* out) : out_(out) {}

  using Stream::Read;
  using Stream::Write;

  size_t Write(const void* ptr, size_t size) final {
    out_->append(static_cast<const char*>(ptr), size);
    return size;
  }
  size_t Read(void*, size_t) final { return 0; }

 private:
  std::string* out_;
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_ARQ_SUPPORT_BYTES_IO_H_
