// per_row: exact top-k with one CTA per row, for short rows and many rows (DESIGN.md section 4).
//
// Radix select with 2048-bin shared-memory histograms, rescanning the row from global memory
// (L1/L2-resident for the short rows this kernel is for) on every pass:
//   pass 0: top 11 bits of the fp16-rounded key over the whole row. Buckets above the chosen one
//           are selected; the chosen bucket's elements are the candidates.
//   passes 1..: 11-bit digits of the fp32 key of the candidates. The fp16 bucket does not nest
//           into fp32 digits, but it is exactly the fp32 key range [first, last] found by binary
//           search (topk::half_bucket_bounds), so candidates are "key in range and matching the
//           prefix chosen so far", and the range's common prefix skips digits they all share.
//           The first of these passes also writes out everything above the range.
//   last:   one pass writes the range's elements above the threshold and fills the ties up to k,
//           stopping once all k slots are taken (topk::rescan_select, shared with large_context).
// A pass stops the descent early when the chosen bucket holds exactly the k still needed.
#include "topk_common.cuh"

#ifndef PER_ROW_BLOCK
#define PER_ROW_BLOCK 512
#endif
#ifndef PER_ROW_MIN_BLOCKS
#define PER_ROW_MIN_BLOCKS 2
#endif
#ifndef PER_ROW_UNROLL
#define PER_ROW_UNROLL 2
#endif

namespace {

constexpr int kBlock = PER_ROW_BLOCK;
constexpr int kHalfBits = 11;
constexpr int kHalfShift = 16 - kHalfBits;
constexpr int kDigitBits = 11;
constexpr int kBins = 1 << 11;

struct Shared {
    int hist[kBins];
    int scratch[32];
    topk::BucketChoice choice;
    int above;  // slots taken by elements above the threshold
    int ties;   // slots taken by elements at the threshold
    uint32_t lo, hi;
};

}  // namespace

extern "C" __global__ void __launch_bounds__(PER_ROW_BLOCK, PER_ROW_MIN_BLOCKS)
per_row_topk(const float* __restrict__ logits, long long stride, const int* __restrict__ lengths,
             int width, int k, int* __restrict__ out) {
    __shared__ Shared sh;
    const int tid = threadIdx.x;
    const int row = blockIdx.x;
    const float* x = logits + static_cast<long long>(row) * stride;
    int* o = out + static_cast<long long>(row) * k;
    const int n = topk::row_length(lengths, row, width);
    if (n <= k) {
        topk::write_short_row<kBlock>(o, n, k);
        return;
    }

    for (int b = tid; b < kBins; b += kBlock) sh.hist[b] = 0;
    if (tid == 0) {
        sh.above = 0;
        sh.ties = 0;
    }
    __syncthreads();
    {
        topk::RunCounter run;
        topk::for_each_float<kBlock, PER_ROW_UNROLL, false>(
            x, n, [&](int, float v) { run.add(sh.hist, topk::half_key(v) >> kHalfShift); },
            [&](int, float4 v) {
                run.add4(sh.hist, topk::half_key(v.x) >> kHalfShift, topk::half_key(v.y) >> kHalfShift,
                         topk::half_key(v.z) >> kHalfShift, topk::half_key(v.w) >> kHalfShift);
            });
        run.flush(sh.hist);
    }
    __syncthreads();
    topk::choose_bucket<kBins, kBlock>(sh.hist, k, sh.scratch, &sh.choice);
    const uint32_t b0 = sh.choice.bucket;
    const int needed = k - sh.choice.above;
    const bool take_all = sh.choice.count == needed;
    // From here on the fp16 bucket is the fp32 key range [first, last]: no more conversions.
    const topk::HalfBucketBounds range =
        topk::half_bucket_bounds(b0 << kHalfShift, (b0 << kHalfShift) | ((1u << kHalfShift) - 1u));
    const topk::RescanShared rs{sh.hist, sh.scratch, &sh.choice, &sh.lo, &sh.hi, &sh.above, &sh.ties};
    topk::rescan_select<kBlock, PER_ROW_UNROLL, kDigitBits>(x, n, o, k, range.first, range.last, needed, take_all,
                                                           false, rs);
}
