// tvm_arq: our own implementation of tvm::support::Serializer<T>, the type-directed binary
// encoding behind Stream::Read/Write. The byte layout must match what the host TVM writes into
// exported libraries (little-endian only):
//   - trivially copyable values (integers, floats, enums, DLDataType, DLDevice, ...): their bytes;
//   - strings (std::string, ffi::String, ffi::Bytes): uint64 length, then the bytes;
//   - sequences (std::vector<T>, ffi::Array<T>): uint64 count, then each element;
//   - std::pair: first then second; maps: uint64 count, then key/value pairs.
#ifndef TVM_ARQ_SUPPORT_SERIALIZER_H_
#define TVM_ARQ_SUPPORT_SERIALIZER_H_

#include <tvm/ffi/container/array.h>
#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <cstdint>
#include <map>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tvm {
namespace support {

namespace serializer_detail {

template <typename T>
inline constexpr bool kRawBytes = std::is_trivially_copyable_v<T> && !std::is_pointer_v<T>;

inline void WriteLength(Stream* strm, size_t n) {
  uint64_t len = static_cast<uint64_t>(n);
  strm->Write(static_cast<const void*>(&len), sizeof(len));
}

inline bool ReadLength(Stream* strm, uint64_t* n) {
  return strm->Read(static_cast<void*>(n), sizeof(*n)) == sizeof(*n);
}

}  // namespace serializer_detail

/*! \brief Raw-bytes encoding of trivially copyable values. */
template <typename T, typename Enable>
struct Serializer {
  static_assert(serializer_detail::kRawBytes<T>,
                "tvm::support::Serializer: no encoding for this type");
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const T& value) {
    strm->Write(static_cast<const void*>(&value), sizeof(T));
  }
  static bool Read(Stream* strm, T* out) {
    return strm->Read(static_cast<void*>(out), sizeof(T)) == sizeof(T);
  }
};

template <>
struct Serializer<std::string> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::string& s) {
    serializer_detail::WriteLength(strm, s.size());
    if (!s.empty()) strm->Write(static_cast<const void*>(s.data()), s.size());
  }
  static bool Read(Stream* strm, std::string* out) {
    uint64_t n;
    if (!serializer_detail::ReadLength(strm, &n)) return false;
    out->resize(static_cast<size_t>(n));
    if (n == 0) return true;
    return strm->Read(static_cast<void*>(&(*out)[0]), out->size()) == out->size();
  }
};

template <>
struct Serializer<ffi::String> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::String& s) {
    serializer_detail::WriteLength(strm, s.size());
    if (s.size() != 0) strm->Write(static_cast<const void*>(s.data()), s.size());
  }
  static bool Read(Stream* strm, ffi::String* out) {
    std::string tmp;
    if (!Serializer<std::string>::Read(strm, &tmp)) return false;
    *out = ffi::String(std::move(tmp));
    return true;
  }
};

template <typename T, typename Alloc>
struct Serializer<std::vector<T, Alloc>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::vector<T, Alloc>& vec) {
    serializer_detail::WriteLength(strm, vec.size());
    if constexpr (serializer_detail::kRawBytes<T> && !std::is_same_v<T, bool>) {
      if (!vec.empty()) strm->Write(static_cast<const void*>(vec.data()), vec.size() * sizeof(T));
    } else {
      for (const auto& item : vec) Serializer<T>::Write(strm, item);
    }
  }
  static bool Read(Stream* strm, std::vector<T, Alloc>* out) {
    uint64_t n;
    if (!serializer_detail::ReadLength(strm, &n)) return false;
    out->resize(static_cast<size_t>(n));
    if constexpr (serializer_detail::kRawBytes<T> && !std::is_same_v<T, bool>) {
      if (n == 0) return true;
      size_t nbytes = static_cast<size_t>(n) * sizeof(T);
      return strm->Read(static_cast<void*>(out->data()), nbytes) == nbytes;
    } else {
      for (auto& item : *out) {
        if (!Serializer<T>::Read(strm, &item)) return false;
      }
      return true;
    }
  }
};

template <typename T>
struct Serializer<ffi::Array<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::Array<T>& arr) {
    serializer_detail::WriteLength(strm, arr.size());
    for (const auto& item : arr) Serializer<T>::Write(strm, item);
  }
  static bool Read(Stream* strm, ffi::Array<T>* out) {
    uint64_t n;
    if (!serializer_detail::ReadLength(strm, &n)) return false;
    ffi::Array<T> result;
    for (uint64_t i = 0; i < n; ++i) {
      T item;
      if (!Serializer<T>::Read(strm, &item)) return false;
      result.push_back(std::move(item));
    }
    *out = std::move(result);
    return true;
  }
};

template <typename A, typename B>
struct Serializer<std::pair<A, B>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::pair<A, B>& p) {
    Serializer<A>::Write(strm, p.first);
    Serializer<B>::Write(strm, p.second);
  }
  static bool Read(Stream* strm, std::pair<A, B>* out) {
    return Serializer<A>::Read(strm, &out->first) && Serializer<B>::Read(strm, &out->second);
  }
};

namespace serializer_detail {
template <typename MapT>
struct MapSerializer {
  static constexpr bool enabled = true;
  using K = typename MapT::key_type;
  using V = typename MapT::mapped_type;
  static void Write(Stream* strm, const MapT& m) {
    WriteLength(strm, m.size());
    for (const auto& kv : m) {
      Serializer<K>::Write(strm, kv.first);
      Serializer<V>::Write(strm, kv.second);
    }
  }
  static bool Read(Stream* strm, MapT* out) {
    uint64_t n;
    if (!ReadLength(strm, &n)) return false;
    out->clear();
    for (uint64_t i = 0; i < n; ++i) {
      K key;
      V value;
      if (!Serializer<K>::Read(strm, &key) || !Serializer<V>::Read(strm, &value)) return false;
      out->emplace(std::move(key), std::move(value));
    }
    return true;
  }
};
}  // namespace serializer_detail

template <typename K, typename V, typename C, typename A>
struct Serializer<std::map<K, V, C, A>> : serializer_detail::MapSerializer<std::map<K, V, C, A>> {};

template <typename K, typename V, typename H, typename E, typename A>
struct Serializer<std::unordered_map<K, V, H, E, A>>
    : serializer_detail::MapSerializer<std::unordered_map<K, V, H, E, A>> {};

}  // namespace support
}  // namespace tvm

#endif  // TVM_ARQ_SUPPORT_SERIALIZER_H_
