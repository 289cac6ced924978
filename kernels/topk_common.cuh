// Shared helpers for topkbench's top-k kernels: ordered keys and row bounds.
// Included by every kernel translation unit; the Python loader inlines it into the source string
// (so CuPy's cache, which keys on the source text, recompiles when this header changes).
#pragma once

#include <cuda_fp16.h>
#include <stdint.h>

namespace topk {

// Unsigned key whose order is the float order: flip every bit of negatives, the sign bit of
// positives. -0.0 and +0.0 map to one key; every NaN maps to the top key, because the contract
// (like torch.topk) ranks NaN above +inf.
__device__ __forceinline__ uint32_t float_key(float value) {
    if (value != value) return 0xFFFFFFFFu;
    uint32_t bits = __float_as_uint(value + 0.0f);
    return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// The same key for the fp16-rounded value: 16 bits, monotone (non-strictly) in the float order,
// so its high bits make a coarse first digit that spreads typical score ranges over more buckets
// than the fp32 key's top bits do.
__device__ __forceinline__ uint16_t half_key(float value) {
    if (value != value) return 0xFFFFu;
    uint16_t bits = __half_as_ushort(__float2half_rn(value + 0.0f));
    return (bits & 0x8000u) ? static_cast<uint16_t>(~bits) : static_cast<uint16_t>(bits | 0x8000u);
}

// Valid length of row `row`: the lengths array may be null (every row full width); values are
// clamped to [0, width] so that a bad length can never make a kernel read or write out of bounds.
__device__ __forceinline__ int row_length(const int* lengths, int row, int width) {
    if (lengths == nullptr) return width;
    int n = lengths[row];
    return n < 0 ? 0 : (n > width ? width : n);
}

}  // namespace topk
