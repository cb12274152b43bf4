// tvm_arq: our own small string/environment helpers ("support/utils.h").
#ifndef TVM_ARQ_SUPPORT_UTILS_H_
#define TVM_ARQ_SUPPORT_UTILS_H_

#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

namespace tvm {
namespace support {

/*! \return whether s is a non-empty string of decimal digits (optionally signed). */
inline bool IsNumber(const std::string& s) {
  size_t i = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
  if (i >= s.size()) return false;
  for (; i < s.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return true;
}

inline bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

inline bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

inline std::vector<std::string> Split(const std::string& s, char delim) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream is(s);
  while (std::getline(is, item, delim)) out.push_back(item);
  return out;
}

/*! \brief Mix the hash `value` into `seed`. */
template <typename T>
inline void HashCombine(T& seed, T value) {
  seed ^= value + static_cast<T>(0x9e3779b97f4a7c15ULL) + (seed << 6) + (seed >> 2);
}

/*! \return the environment variable `key` parsed as T, or `default_value` when unset. */
template <typename T>
inline T GetEnv(const char* key, T default_value) {
  const char* v = std::getenv(key);
  if (v == nullptr || *v == '\0') return default_value;
  std::istringstream is(v);
  T out = default_value;
  is >> out;
  return out;
}

inline std::string GetEnv(const char* key, const char* default_value) {
  const char* v = std::getenv(key);
  return (v == nullptr) ? std::string(default_value) : std::string(v);
}

}  // namespace support
}  // namespace tvm

#endif  // TVM_ARQ_SUPPORT_UTILS_H_
