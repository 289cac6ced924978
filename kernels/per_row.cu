// per_row: exact top-k with one CTA per row, for short rows and many rows (docs/design.md section 4).
//
// Radix select with 2048-bin shared-memory histograms, rescanning the row from global memory
// (L1/L2-resident for the short rows this kernel is for) on every pass:
//   pass 0: top 11 bits of the coarse key (topk::coarse_key: sign, 5 exponent and 5 mantissa
//           bits) over the whole row. Buckets above the chosen one are selected; the chosen
//           bucket is an exact fp32 key range (topk::coarse_key_range).
//   then:   topk::rescan_select: 11-bit digits of the fp32 keys inside that range, each pass
//           stopping early when the chosen bucket holds exactly the k still needed, and one final
//           pass that writes everything above the threshold and the ties up to k.
//
// PER_ROW_DETERMINISTIC=1 (the default, implementation `per_row`): among the entries equal to the
// k-th largest value the lowest indices win, and the output is the selected set in ascending index
// order (a block-wide scan per tile of the final pass, topk::ordered_select_row; no atomic decides
// a slot).
// PER_ROW_DETERMINISTIC=0 (`per_row-nondet`): slots from shared atomic counters, so the tie set
// and the order depend on scheduling.
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
// float4 loads per thread in flight per tile of the deterministic final pass.
#ifndef PER_ROW_FINAL_UNROLL
#define PER_ROW_FINAL_UNROLL 4
#endif
#ifndef PER_ROW_DETERMINISTIC
#define PER_ROW_DETERMINISTIC 1
#endif
// Deterministic plateau rows: the final pass stops once the needed ties are found (see
// topk::rescan_select); 0 always walks until every slot is written.
#ifndef PER_ROW_EARLY_TIES
#define PER_ROW_EARLY_TIES 1
#endif

namespace {

constexpr int kBlock = PER_ROW_BLOCK;
constexpr int kFirstBits = 11;                   // pass 0: the top 11 of the 16 coarse-key bits
constexpr int kCoarseShift = 16 - kFirstBits;
constexpr int kDigitBits = 11;                   // later passes: 11-bit fp32 digits
constexpr int kBins = 1 << (kFirstBits > kDigitBits ? kFirstBits : kDigitBits);
constexpr int kFinalUnroll = PER_ROW_FINAL_UNROLL;
using Scan = topk::TileScan<kBlock, kFinalUnroll>;

struct Shared {
    int hist[kBins];
    int scratch[kBlock / 32];
    uint32_t scan_totals[Scan::kWords];
    topk::BucketChoice choice;
    int above;  // slots taken by elements above the threshold (non-deterministic final pass)
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
            x, n, [&](int, float v) { run.add(sh.hist, topk::coarse_key(v) >> kCoarseShift); },
            [&](int, float4 v) {
                run.add(sh.hist, topk::coarse_key(v.x) >> kCoarseShift);
                run.add(sh.hist, topk::coarse_key(v.y) >> kCoarseShift);
                run.add(sh.hist, topk::coarse_key(v.z) >> kCoarseShift);
                run.add(sh.hist, topk::coarse_key(v.w) >> kCoarseShift);
            });
        run.flush(sh.hist);
    }
    __syncthreads();
    topk::choose_bucket<1 << kFirstBits, kBlock>(sh.hist, k, sh.scratch, &sh.choice);
    const uint32_t b0 = sh.choice.bucket;
    const int needed = k - sh.choice.above;
    const bool take_all = sh.choice.count == needed;  // the whole coarse bucket is selected
    const topk::KeyRange range =
        topk::coarse_key_range(b0 << kCoarseShift, (b0 << kCoarseShift) | ((1u << kCoarseShift) - 1u));

    const topk::RescanShared rs{{sh.hist, sh.scratch, &sh.choice, &sh.lo, &sh.hi}, &sh.above, &sh.ties,
                                sh.scan_totals};
    topk::rescan_select<kBlock, PER_ROW_UNROLL, kDigitBits, PER_ROW_DETERMINISTIC != 0, kFinalUnroll,
                        PER_ROW_EARLY_TIES != 0>(x, n, o, k, range, sh.choice.count, needed, take_all, rs);
}
