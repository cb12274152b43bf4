// tvm_arq: CPU-only stand-in for the NVTX profiling range the VM sources use (no-op).
#ifndef TVM_ARQ_SUPPORT_CUDA_NVTX_H_
#define TVM_ARQ_SUPPORT_CUDA_NVTX_H_

#include <string>

namespace tvm {
namespace support {

/*! \brief Marks a profiling range on CUDA builds; does nothing in a CPU runtime. */
class NVTXScopedRange {
 public:
  explicit NVTXScopedRange(const char*) {}
  explicit NVTXScopedRange(const std::string&) {}
  NVTXScopedRange(const NVTXScopedRange&) = delete;
  NVTXScopedRange& operator=(const NVTXScopedRange&) = delete;
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_ARQ_SUPPORT_CUDA_NVTX_H_
