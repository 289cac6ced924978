// per_row: exact top-k with one CTA per row, for short rows and many rows (DESIGN.md section 4).
//
// Radix select with 2048-bin shared-memory histograms, rescanning the row from global memory
// (L1/L2-resident for the short rows this kernel is for) on every pass:
//   pass 0: top 11 bits of the fp16-rounded key over the whole row. Buckets above the chosen one
//           are selected; the chosen bucket's elements are the candidates.
//   passes 1..: 11-bit digits of the fp32 key of the candidates (elements whose fp16 bucket is
//           the chosen one and whose fp32 key matches the prefix chosen so far). The fp16 bucket
//           does not nest into fp32 digits, so the candidate test keeps both conditions; the
//           fp32 key range of one fp16 bucket is bounded up front (KeyPrefix::set_half_range) and
//           the bounds' common prefix skips digits every candidate shares.
//   last:   one pass writes everything above the threshold and fills the ties up to k.
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
                run.add(sh.hist, topk::half_key(v.x) >> kHalfShift);
                run.add(sh.hist, topk::half_key(v.y) >> kHalfShift);
                run.add(sh.hist, topk::half_key(v.z) >> kHalfShift);
                run.add(sh.hist, topk::half_key(v.w) >> kHalfShift);
            });
        run.flush(sh.hist);
    }
    __syncthreads();
    topk::choose_bucket<kBins, kBlock>(sh.hist, k, sh.scratch, &sh.choice);
    const uint32_t b0 = sh.choice.bucket;
    int needed = k - sh.choice.above;

    topk::KeyPrefix key;
    if (sh.choice.count == needed) {
        key.prefix = 0;  // the whole fp16 bucket is selected
        key.bits = 32;
    } else {
        key.set_half_range(b0 << kHalfShift, (b0 << kHalfShift) | ((1u << kHalfShift) - 1u));
        while (key.bits > 0) {
            const int dbits = key.digit_bits(kDigitBits);
            const int shift = key.bits - dbits;
            const uint32_t mask = (1u << dbits) - 1u;
            for (int b = tid; b < kBins; b += kBlock) sh.hist[b] = 0;
            if (tid == 0) {
                sh.lo = 0xFFFFFFFFu;
                sh.hi = 0u;
            }
            __syncthreads();
            uint32_t lo = 0xFFFFFFFFu, hi = 0u;
            topk::RunCounter run;
            auto visit = [&](float v) {
                if ((topk::half_key(v) >> kHalfShift) != b0) return;
                const uint32_t fk = topk::float_key(v);
                if (!key.matches(fk)) return;
                run.add(sh.hist, static_cast<int>((fk >> shift) & mask));
                lo = min(lo, fk);
                hi = max(hi, fk);
            };
            topk::for_each_float<kBlock, PER_ROW_UNROLL, false>(
                x, n, [&](int, float v) { visit(v); },
                [&](int, float4 v) {
                    visit(v.x);
                    visit(v.y);
                    visit(v.z);
                    visit(v.w);
                });
            run.flush(sh.hist);
            topk::block_minmax(lo, hi, &sh.lo, &sh.hi);
            __syncthreads();
            topk::choose_bucket<kBins, kBlock>(sh.hist, needed, sh.scratch, &sh.choice);
            needed -= sh.choice.above;
            const bool exact = sh.choice.count == needed;
            key.descend(dbits, sh.choice.bucket, sh.lo, sh.hi);
            __syncthreads();  // everyone has read sh.lo/hi before the next pass resets them
            if (exact) break;
        }
    }

    // Final pass. Every slot is accounted for in advance (k - needed above, needed ties), so a
    // thread may stop as soon as all k are written: plateau rows fill their ties early.
    const int above_total = k - needed;
    volatile int* above_count = &sh.above;
    volatile int* tie_count = &sh.ties;
    auto select = [&](int i, float v) {
        const uint32_t hb = topk::half_key(v) >> kHalfShift;
        if (hb < b0) return;
        int cmp = 1;
        if (hb == b0) cmp = key.compare(topk::float_key(v));
        if (cmp > 0) {
            const int slot = topk::reserve_slot(&sh.above);
            if (slot < above_total) o[slot] = i;
        } else if (cmp == 0 && *tie_count < needed) {
            const int slot = topk::reserve_slot(&sh.ties);
            if (slot < needed) o[above_total + slot] = i;
        }
    };
    const int head = topk::vector_head(x, n);
    if (tid < head) select(tid, __ldg(x + tid));
    const float4* vec = reinterpret_cast<const float4*>(x + head);
    const int nvec = (n - head) >> 2;
    for (int v = tid; v < nvec; v += kBlock) {
        if (*above_count >= above_total && *tie_count >= needed) break;
        const float4 q = __ldg(vec + v);
        const int i = head + 4 * v;
        select(i, q.x);
        select(i + 1, q.y);
        select(i + 2, q.z);
        select(i + 3, q.w);
    }
    const int tail = head + 4 * nvec + tid;
    if (tail < n) select(tail, __ldg(x + tail));
}
