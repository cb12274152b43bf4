// tvm_arq: our own IEEE-754 binary floating point narrowing/widening conversions, the interface
// src/runtime/builtin_fp16.cc expects (<builtin_fp16.h>):
//   __truncXfYf2__<SrcT, SrcRepT, SrcSigBits, DstT, DstRepT, DstSigBits>(a)   (wide -> narrow)
//   __extendXfYf2__<SrcT, SrcRepT, SrcSigBits, DstT, DstRepT, DstSigBits>(a)  (narrow -> wide)
// *T is the value type (a float type or an integer holding the bits), *RepT the unsigned integer
// of the same width, *SigBits the number of stored significand bits. Rounding is to nearest,
// ties to even; NaN payloads keep their top bits and become quiet; overflow gives infinity.
#ifndef TVM_ARQ_BUILTIN_FP16_H_
#define TVM_ARQ_BUILTIN_FP16_H_

#include <cstdint>
#include <cstring>

namespace tvm_arq_fp_detail {

template <typename To, typename From>
inline To BitCast(From v) {
  static_assert(sizeof(To) == sizeof(From), "size mismatch");
  To out;
  std::memcpy(&out, &v, sizeof(To));
  return out;
}

template <typename RepT, int SigBits>
struct Format {
  static constexpr int kBits = static_cast<int>(sizeof(RepT) * 8);
  static constexpr int kExpBits = kBits - SigBits - 1;
  static constexpr int kBias = (1 << (kExpBits - 1)) - 1;
  static constexpr int kMaxExp = (1 << kExpBits) - 1;  // infinity / NaN
  static constexpr RepT kSigMask = (RepT(1) << SigBits) - 1;
  static constexpr RepT kImplicit = RepT(1) << SigBits;
  static constexpr RepT kSignBit = RepT(1) << (kBits - 1);
};

}  // namespace tvm_arq_fp_detail

template <typename SrcT, typename SrcRepT, int SrcSigBits, typename DstT, typename DstRepT,
          int DstSigBits>
inline DstT __truncXfYf2__(SrcT a) {
  using S = tvm_arq_fp_detail::Format<SrcRepT, SrcSigBits>;
  using D = tvm_arq_fp_detail::Format<DstRepT, DstSigBits>;
  static_assert(SrcSigBits > DstSigBits, "truncation narrows the significand");
  const SrcRepT bits = tvm_arq_fp_detail::BitCast<SrcRepT>(a);
  const DstRepT sign = (bits & S::kSignBit) ? D::kSignBit : DstRepT(0);
  const int exp = static_cast<int>((bits >> SrcSigBits) & SrcRepT(S::kMaxExp));
  const SrcRepT sig = bits & S::kSigMask;
  constexpr int kDrop = SrcSigBits - DstSigBits;
  DstRepT out;
  if (exp == S::kMaxExp) {  // infinity or NaN
    out = DstRepT(D::kMaxExp) << DstSigBits;
    if (sig != 0) {
      out |= DstRepT(sig >> kDrop) & D::kSigMask;
      out |= DstRepT(1) << (DstSigBits - 1);  // quiet
    }
    return tvm_arq_fp_detail::BitCast<DstT>(DstRepT(out | sign));
  }
  // value = full * 2^(e - SrcSigBits) with full holding the implicit bit for normal numbers
  SrcRepT full = exp == 0 ? sig : (sig | S::kImplicit);
  int e = (exp == 0 ? 1 : exp) - S::kBias;  // unbiased exponent of the implicit-bit position
  if (full == 0) return tvm_arq_fp_detail::BitCast<DstT>(sign);
  int dexp = e + D::kBias;  // biased destination exponent if the result is normal
  int shift = kDrop;        // how many low bits of full to drop
  if (dexp <= 0) {          // subnormal result: fewer significand bits survive
    shift += 1 - dexp;
    dexp = 0;
  }
  if (dexp >= D::kMaxExp) {
    return tvm_arq_fp_detail::BitCast<DstT>(DstRepT(sign | (DstRepT(D::kMaxExp) << DstSigBits)));
  }
  SrcRepT kept;
  if (shift >= S::kBits) {
    kept = 0;  // far below the smallest subnormal: rounds to zero
  } else {
    kept = full >> shift;
    const SrcRepT rem = full & ((SrcRepT(1) << shift) - 1);
    const SrcRepT half = SrcRepT(1) << (shift - 1);
    if (rem > half || (rem == half && (kept & 1))) ++kept;
  }
  // For a normal result, kept includes the implicit bit; adding the biased exponent field minus
  // one implicit bit lets a rounding carry propagate into the exponent (up to infinity).
  if (dexp == 0) {
    out = DstRepT(kept);  // subnormal (a carry into bit DstSigBits yields the smallest normal)
  } else {
    out = (DstRepT(dexp - 1) << DstSigBits) + DstRepT(kept);
  }
  if ((out >> DstSigBits) >= DstRepT(D::kMaxExp)) out = DstRepT(D::kMaxExp) << DstSigBits;
  return tvm_arq_fp_detail::BitCast<DstT>(DstRepT(out | sign));
}

template <typename SrcT, typename SrcRepT, int SrcSigBits, typename DstT, typename DstRepT,
          int DstSigBits>
inline DstT __extendXfYf2__(SrcT a) {
  using S = tvm_arq_fp_detail::Format<SrcRepT, SrcSigBits>;
  using D = tvm_arq_fp_detail::Format<DstRepT, DstSigBits>;
  static_assert(DstSigBits > SrcSigBits, "extension widens the significand");
  const SrcRepT bits = tvm_arq_fp_detail::BitCast<SrcRepT>(a);
  const DstRepT sign = (bits & S::kSignBit) ? D::kSignBit : DstRepT(0);
  const int exp = static_cast<int>((bits >> SrcSigBits) & SrcRepT(S::kMaxExp));
  DstRepT sig = DstRepT(bits & S::kSigMask);
  constexpr int kWiden = DstSigBits - SrcSigBits;
  DstRepT out;
  if (exp == S::kMaxExp) {
    out = (DstRepT(D::kMaxExp) << DstSigBits) | (sig << kWiden);
    if (sig != 0) out |= DstRepT(1) << (DstSigBits - 1);
  } else if (exp == 0) {
    if (sig == 0) {
      out = 0;
    } else {  // subnormal source: normalize
      int e = 1 - S::kBias;
      while ((sig & (DstRepT(1) << SrcSigBits)) == 0) {
        sig <<= 1;
        --e;
      }
      sig &= DstRepT(S::kSigMask);
      out = (DstRepT(e + D::kBias) << DstSigBits) | (sig << kWiden);
    }
  } else {
    out = (DstRepT(exp - S::kBias + D::kBias) << DstSigBits) | (sig << kWiden);
  }
  return tvm_arq_fp_detail::BitCast<DstT>(DstRepT(out | sign));
}

#endif  // TVM_ARQ_BUILTIN_FP16_H_
