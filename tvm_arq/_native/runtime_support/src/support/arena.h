// tvm_arq: our own bump allocator for short-lived trivially-destructible objects ("support/arena.h").
#ifndef TVM_ARQ_SUPPORT_ARENA_H_
#define TVM_ARQ_SUPPORT_ARENA_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

namespace tvm {
namespace support {

/*! \brief Header at the start of every arena page. */
struct ArenaPageHeader {
  ArenaPageHeader* next;
  size_t size;
  size_t offset;
};

/*! \brief Allocates from pages obtained from malloc; RecycleAll() reuses them, FreeAll() frees. */
class Arena {
 public:
  Arena() = default;
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  ~Arena() { FreeAll(); }

  void* Alloc(size_t nbytes, size_t align = alignof(std::max_align_t)) {
    while (true) {
      if (current_ < pages_.size()) {
        Page& p = pages_[current_];
        size_t start = (p.used + align - 1) / align * align;
        if (start + nbytes <= p.size) {
          p.used = start + nbytes;
          return p.data.get() + start;
        }
        ++current_;
        continue;
      }
      size_t size = std::max(kPageSize, nbytes + align);
      pages_.push_back(Page{std::unique_ptr<char[]>(new char[size]), size, 0});
      // new pages come last: the loop picks it up
    }
  }

  template <typename T>
  T* allocate_(int count = 1) {
    static_assert(std::is_trivially_destructible<T>::value, "arena objects are never destroyed");
    return static_cast<T*>(Alloc(sizeof(T) * static_cast<size_t>(std::max(count, 0)), alignof(T)));
  }

  template <typename T, typename... Args>
  T* make(Args&&... args) {
    return new (Alloc(sizeof(T), alignof(T))) T(std::forward<Args>(args)...);
  }

  /*! \brief Forget all allocations, keep the pages. */
  void RecycleAll() {
    for (auto& p : pages_) p.used = 0;
    current_ = 0;
  }
  /*! \brief Release every page. */
  void FreeAll() {
    pages_.clear();
    current_ = 0;
  }

 private:
  static constexpr size_t kPageSize = 16 * 1024;
  struct Page {
    std::unique_ptr<char[]> data;
    size_t size;
    size_t used;
  };
  std::vector<Page> pages_;
  size_t current_{0};
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_ARQ_SUPPORT_ARENA_H_
