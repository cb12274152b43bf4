// tvm_arq: our own implementation of the binary stream interface that the runtime sources shipped
// in the apache-tvm wheel include as <tvm/support/io.h> (the header itself is not shipped).
//
// Interface (as used by the shipped sources):
//   - virtual size_t Read(void*, size_t) / Write(const void*, size_t)
//   - template Read(T*) -> bool, Write(const T&), ReadArray(T*, n) -> bool, WriteArray(const T*, n)
// Typed reads and writes dispatch to tvm::support::Serializer<T> (see serializer.h).
#ifndef TVM_ARQ_SUPPORT_IO_H_
#define TVM_ARQ_SUPPORT_IO_H_

#include <cstddef>
#include <cstdint>

namespace tvm {
namespace support {

template <typename T, typename Enable = void>
struct Serializer;

/*! \brief A byte stream: the only primitive operations are raw reads and writes. */
class Stream {
 public:
  virtual ~Stream() = default;
  /*! \return number of bytes actually read (less than size only at the end of the stream). */
  virtual size_t Read(void* ptr, size_t size) = 0;
  /*! \return number of bytes written. */
  virtual size_t Write(const void* ptr, size_t size) = 0;

  template <typename T>
  void Write(const T& value) {
    Serializer<T>::Write(this, value);
  }
  template <typename T>
  bool Read(T* out) {
    return Serializer<T>::Read(this, out);
  }
  template <typename T>
  void WriteArray(const T* data, size_t count) {
    for (size_t i = 0; i < count; ++i) Serializer<T>::Write(this, data[i]);
  }
  template <typename T>
  bool ReadArray(T* data, size_t count) {
    for (size_t i = 0; i < count; ++i) {
      if (!Serializer<T>::Read(this, data + i)) return false;
    }
    return true;
  }
};

}  // namespace support
}  // namespace tvm

#include <tvm/support/serializer.h>

#endif  // TVM_ARQ_SUPPORT_IO_H_
