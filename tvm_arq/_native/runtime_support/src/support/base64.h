// tvm_arq: our own base64 streams (RFC 4648 alphabet, '=' padding) layered on another Stream.
#ifndef TVM_ARQ_SUPPORT_BASE64_H_
#define TVM_ARQ_SUPPORT_BASE64_H_

#include <tvm/ffi/error.h>
#include <tvm/support/io.h>

#include <cctype>
#include <cstdint>
#include <string>

namespace tvm {
namespace support {

namespace base64_detail {
inline const char* Alphabet() {
  return "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}
inline int Value(int c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}
}  // namespace base64_detail

/*! \brief Encodes bytes written to it as base64 text into `sink`; call Finish() at the end. */
class Base64OutStream : public Stream {
 public:
  explicit Base64OutStream(Stream* sink) : sink_(sink) {}

  using Stream::Read;
  using Stream::Write;

  size_t Write(const void* ptr, size_t size) final {
    const auto* p = static_cast<const uint8_t*>(ptr);
    for (size_t i = 0; i < size; ++i) {
      group_[ngroup_++] = p[i];
      if (ngroup_ == 3) EmitGroup();
    }
    return size;
  }
  size_t Read(void*, size_t) final { return 0; }

  /*! \brief Write the final partial group with padding. */
  void Finish() {
    if (ngroup_ != 0) EmitGroup();
  }

 private:
  void EmitGroup() {
    const char* abc = base64_detail::Alphabet();
    uint32_t v = (uint32_t(group_[0]) << 16) | (ngroup_ > 1 ? uint32_t(group_[1]) << 8 : 0u) |
                 (ngroup_ > 2 ? uint32_t(group_[2]) : 0u);
    char out[4] = {abc[(v >> 18) & 63], abc[(v >> 12) & 63],
                   ngroup_ > 1 ? abc[(v >> 6) & 63] : '=', ngroup_ > 2 ? abc[v & 63] : '='};
    sink_->Write(static_cast<const void*>(out), 4);
    ngroup_ = 0;
  }

  Stream* sink_;
  uint8_t group_[3] = {0, 0, 0};
  int ngroup_{0};
};

/*! \brief Decodes base64 text read from `source`; call InitPosition() before reading. */
class Base64InStream : public Stream {
 public:
  explicit Base64InStream(Stream* source) : source_(source) {}

  using Stream::Read;
  using Stream::Write;

  /*! \brief Skip leading white space. */
  void InitPosition() {
    lookahead_ = NextNonSpace();
  }

  size_t Read(void* ptr, size_t size) final {
    auto* out = static_cast<uint8_t*>(ptr);
    size_t n = 0;
    while (n < size) {
      if (navail_ == 0 && !DecodeGroup()) break;
      out[n++] = decoded_[3 - navail_--];
    }
    return n;
  }
  size_t Write(const void*, size_t) final { return 0; }

 private:
  int NextChar() {
    char c;
    return source_->Read(static_cast<void*>(&c), 1) == 1 ? static_cast<unsigned char>(c) : -1;
  }
  int NextNonSpace() {
    int c = NextChar();
    while (c != -1 && std::isspace(c)) c = NextChar();
    return c;
  }
  bool DecodeGroup() {
    if (ended_) return false;
    int chars[4];
    for (int i = 0; i < 4; ++i) {
      if (lookahead_ != -2) {
        chars[i] = lookahead_;
        lookahead_ = -2;
      } else {
        chars[i] = NextChar();
      }
      if (chars[i] == -1 || std::isspace(chars[i])) {
        TVM_FFI_ICHECK(i == 0) << "Base64InStream: truncated base64 input";
        ended_ = true;
        return false;
      }
    }
    int v0 = base64_detail::Value(chars[0]), v1 = base64_detail::Value(chars[1]);
    TVM_FFI_ICHECK(v0 >= 0 && v1 >= 0) << "Base64InStream: invalid base64 character";
    uint32_t v = (uint32_t(v0) << 18) | (uint32_t(v1) << 12);
    int nbytes = 1;
    if (chars[2] != '=') {
      int v2 = base64_detail::Value(chars[2]);
      TVM_FFI_ICHECK(v2 >= 0) << "Base64InStream: invalid base64 character";
      v |= uint32_t(v2) << 6;
      nbytes = 2;
      if (chars[3] != '=') {
        int v3 = base64_detail::Value(chars[3]);
        TVM_FFI_ICHECK(v3 >= 0) << "Base64InStream: invalid base64 character";
        v |= uint32_t(v3);
        nbytes = 3;
      }
    }
    if (nbytes < 3) ended_ = true;
    // decoded_ is consumed from index (3 - navail_)
    uint8_t bytes[3] = {uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)};
    for (int i = 0; i < 3; ++i) decoded_[i] = 0;
    for (int i = 0; i < nbytes; ++i) decoded_[3 - nbytes + i] = bytes[i];
    navail_ = nbytes;
    return true;
  }

  Stream* source_;
  int lookahead_{-2};  // -2: none
  uint8_t decoded_[3] = {0, 0, 0};
  int navail_{0};
  bool ended_{false};
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_ARQ_SUPPORT_BASE64_H_
