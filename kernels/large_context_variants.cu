// large_context_variants: large_context.cu (read its header first) with compile-time variants of
// its first pass and launch shape, so that one GPU run can compare them. With every define at
// its default this is large_context.cu's kernel (the same generated code); large_context.cu
// itself stays untouched so that the kernel_hash recorded with the committed results stays valid.
// When a variant wins, this file replaces large_context.cu with that variant as the default.
//
//   LC_HIST (pass A's 256-bin histogram of the fp16 key's high byte):
//     0  per-thread run-length counter, plain shared atomics on one histogram (large_context.cu);
//     1  warp-aggregated: lanes holding the same bin elect one lane (__match_any_sync) that adds
//        the group's count, so a warp's adds never collide on an address;
//     2  lane-private copies: 32 histograms interleaved bin-major (word bin*32 + lane), so every
//        lane of a warp hits its own bank and no two lanes share an address; the copies live in
//        the candidate buffer's space (unused until pass B) and one warp-reduce per bin folds
//        them into the histogram.
//   LC_MIN_BLOCKS: CTAs per SM that __launch_bounds__ asks registers for (with LC_BLOCK 512 and
//        2, two rows share an SM: 256 rows fit one wave on 132 SMs, and one CTA's serial phases
//        (bucket choice, refines) overlap the other's streaming).
#include "topk_common.cuh"

#ifndef LC_BLOCK
#define LC_BLOCK 1024
#endif
#ifndef LC_MIN_BLOCKS
#define LC_MIN_BLOCKS 1
#endif
#ifndef LC_HIST
#define LC_HIST 0
#endif
#ifndef LC_CAPACITY
#define LC_CAPACITY 4096
#endif
#ifndef LC_UNROLL
#define LC_UNROLL 4
#endif
#ifndef LC_BYTE_UNROLL
#define LC_BYTE_UNROLL 2
#endif
#ifndef LC_RESCAN_UNROLL
#define LC_RESCAN_UNROLL 2
#endif
#ifndef LC_REFINE_BITS
#define LC_REFINE_BITS 8
#endif
#ifndef LC_FALLBACK_BITS
#define LC_FALLBACK_BITS 11
#endif

namespace {

constexpr int kBlock = LC_BLOCK;
constexpr int kCapacity = LC_CAPACITY;
constexpr int kCoarseShift = 8;  // the fp16 key's high byte
constexpr int kCoarseBins = 256;
constexpr int kRefineBins = 1 << LC_REFINE_BITS;
constexpr int kFallbackBins = 1 << LC_FALLBACK_BITS;
constexpr int kHistBins = kFallbackBins > kRefineBins ? kFallbackBins : kRefineBins;
static_assert(kHistBins >= kCoarseBins, "histogram too small for the coarse pass");
static_assert(LC_HIST >= 0 && LC_HIST <= 2, "LC_HIST is 0, 1 or 2");
constexpr int kLaneHistWords = LC_HIST == 2 ? kCoarseBins * 32 : 1;

struct Shared {
    int hist[kHistBins];
    union {
        struct {
            uint32_t key[kCapacity];
            int idx[kCapacity];
        } cand;
        int lane_hist[kLaneHistWords];  // LC_HIST 2, pass A only
    };
    int scratch[32];
    topk::BucketChoice choice;
    int above;
    int ties;
    int candidates;
    uint32_t lo, hi;
};

// Calls f(p, byte) for the bytes of w[p0, p1) that equal (EQ) or are at least (!EQ) `b`; four
// bytes at a time are compared in SIMD so rows mostly below the threshold cost little. `stop`
// is polled once per batch: a final pass ends when the output is full. The bytes were written
// earlier in this kernel, so they are read through L2 (__ldcg), never the read-only path.
template <bool EQ, typename F, typename S>
__device__ __forceinline__ void for_each_byte(const uint8_t* w, int p0, int p1, uint32_t b, F&& f,
                                              S&& stop) {
    const int tid = threadIdx.x;
    const uint32_t b4 = b * 0x01010101u;
    int body0 = (p0 + 15) & ~15;
    if (body0 > p1) body0 = p1;
    const int body1 = body0 + ((p1 - body0) & ~15);
    auto one = [&](int p) {
        const uint32_t v = __ldcg(w + p);
        if (EQ ? v == b : v >= b) f(p, v);
    };
    if (p0 + tid < body0) one(p0 + tid);
    const uint4* vec = reinterpret_cast<const uint4*>(w + body0);
    const int nvec = (body1 - body0) >> 4;
    for (int v0 = tid; v0 < nvec; v0 += kBlock * LC_BYTE_UNROLL) {
        if (stop()) return;
        uint4 buf[LC_BYTE_UNROLL];
#pragma unroll
        for (int u = 0; u < LC_BYTE_UNROLL; ++u) {
            const int v = v0 + u * kBlock;
            if (v < nvec) buf[u] = __ldcg(vec + v);
        }
#pragma unroll
        for (int u = 0; u < LC_BYTE_UNROLL; ++u) {
            const int v = v0 + u * kBlock;
            if (v >= nvec) continue;
            const uint32_t words[4] = {buf[u].x, buf[u].y, buf[u].z, buf[u].w};
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                uint32_t hit = EQ ? __vcmpeq4(words[q], b4) : __vcmpgeu4(words[q], b4);
                while (hit) {
                    const int byte = (__ffs(hit) - 1) >> 3;
                    hit &= ~(0xFFu << (8 * byte));
                    f(body0 + 16 * v + 4 * q + byte, (words[q] >> (8 * byte)) & 0xFFu);
                }
            }
        }
    }
    if (body1 + tid < p1) one(body1 + tid);
}

// Pass A's histogram adds (LC_HIST, see the header). add() may be called from divergent code
// (the scalar head and tail, the last partial batch); add4() takes four neighbours.
#if LC_HIST == 0
struct CoarseCounter {
    int* hist;
    topk::RunCounter run;
    __device__ __forceinline__ void add(uint32_t b) { run.add(hist, b); }
    __device__ __forceinline__ void add4(uint32_t b0, uint32_t b1, uint32_t b2, uint32_t b3) {
        run.add4(hist, b0, b1, b2, b3);
    }
    __device__ __forceinline__ void flush() { run.flush(hist); }
};
#elif LC_HIST == 1
struct CoarseCounter {
    int* hist;
    // The lanes that arrived together and hold bin b elect their lowest lane, which adds for all.
    __device__ __forceinline__ void add(uint32_t b) {
        const unsigned peers = __match_any_sync(__activemask(), b);
        if ((threadIdx.x & 31u) == static_cast<unsigned>(__ffs(peers) - 1)) atomicAdd(hist + b, __popc(peers));
    }
    __device__ __forceinline__ void add4(uint32_t b0, uint32_t b1, uint32_t b2, uint32_t b3) {
        add(b0);
        add(b1);
        add(b2);
        add(b3);
    }
    __device__ __forceinline__ void flush() {}
};
#else
struct CoarseCounter {
    int* hist;  // this lane's copy: word bin * 32 of it is bin's count
    __device__ __forceinline__ void add(uint32_t b) { atomicAdd(hist + 32 * b, 1); }
    __device__ __forceinline__ void add4(uint32_t b0, uint32_t b1, uint32_t b2, uint32_t b3) {
        if (b0 == b1 && b1 == b2 && b2 == b3) {  // plateaus: one add
            atomicAdd(hist + 32 * b0, 4);
        } else {
            add(b0);
            add(b1);
            add(b2);
            add(b3);
        }
    }
    __device__ __forceinline__ void flush() {}
};
#endif

}  // namespace

extern "C" __global__ void __launch_bounds__(LC_BLOCK, LC_MIN_BLOCKS)
large_context_topk(const float* __restrict__ logits, long long stride, const int* __restrict__ lengths,
                   int width, int k, int* __restrict__ out, uint8_t* __restrict__ work, long long work_stride) {
    __shared__ Shared sh;
    const int tid = threadIdx.x;
    const int row = blockIdx.x;
    const float* x = logits + static_cast<long long>(row) * stride;
    int* o = out + static_cast<long long>(row) * k;
    uint8_t* w = work + static_cast<long long>(row) * work_stride;
    const int n = topk::row_length(lengths, row, width);
    if (n <= k) {
        topk::write_short_row<kBlock>(o, n, k);
        return;
    }
    // Byte p = i + off holds element i's bucket, with off chosen so that the 16-byte float loads
    // write 4-byte-aligned words (the workspace row is width + 3 bytes or more).
    const int head = topk::vector_head(x, n);
    const int off = (4 - (head & 3)) & 3;

#if LC_HIST == 2
    for (int j = tid; j < kLaneHistWords; j += kBlock) sh.lane_hist[j] = 0;
#else
    for (int b = tid; b < kCoarseBins; b += kBlock) sh.hist[b] = 0;
#endif
    if (tid == 0) {
        sh.above = 0;
        sh.ties = 0;
        sh.candidates = 0;
        sh.lo = 0xFFFFFFFFu;
        sh.hi = 0u;
    }
    __syncthreads();
    {
#if LC_HIST == 2
        CoarseCounter run{sh.lane_hist + (tid & 31)};
#else
        CoarseCounter run{sh.hist};
#endif
        topk::for_each_float<kBlock, LC_UNROLL, true>(
            x, n,
            [&](int i, float v) {
                const uint32_t b = topk::half_key(v) >> kCoarseShift;
                run.add(b);
                w[i + off] = static_cast<uint8_t>(b);
            },
            [&](int i, float4 v) {
                const uint32_t b0 = topk::half_key(v.x) >> kCoarseShift;
                const uint32_t b1 = topk::half_key(v.y) >> kCoarseShift;
                const uint32_t b2 = topk::half_key(v.z) >> kCoarseShift;
                const uint32_t b3 = topk::half_key(v.w) >> kCoarseShift;
                run.add4(b0, b1, b2, b3);
                *reinterpret_cast<uint32_t*>(w + i + off) = b0 | (b1 << 8) | (b2 << 16) | (b3 << 24);
            });
        run.flush();
    }
    __syncthreads();
#if LC_HIST == 2
    // Fold the 32 copies: one warp per bin, lane l reading copy l (conflict-free).
    for (int b = tid >> 5; b < kCoarseBins; b += kBlock / 32) {
        const int c = __reduce_add_sync(topk::kFullMask, sh.lane_hist[32 * b + (tid & 31)]);
        if ((tid & 31) == 0) sh.hist[b] = c;
    }
    __syncthreads();
#endif
    topk::choose_bucket<kCoarseBins, kBlock>(sh.hist, k, sh.scratch, &sh.choice);
    const uint32_t b0 = sh.choice.bucket;
    const int bucket_count = sh.choice.count;
    int needed = k - sh.choice.above;
    const bool take_all = bucket_count == needed;
    const bool fits = bucket_count <= kCapacity;

    if (!fits && !take_all) {
        // Overflow (plateaus): refine by rescanning the scores, which also writes what lies
        // above the bucket; the bytes are not needed.
        const topk::HalfBucketBounds range =
            topk::half_bucket_bounds(b0 << kCoarseShift, (b0 << kCoarseShift) | 0xFFu);
        const topk::RescanShared rs{sh.hist, sh.scratch, &sh.choice, &sh.lo, &sh.hi, &sh.above, &sh.ties};
        topk::rescan_select<kBlock, LC_RESCAN_UNROLL, LC_FALLBACK_BITS>(x, n, o, k, range.first, range.last, needed,
                                                                       false, false, rs);
        return;
    }

    auto never = [] { return false; };
    {
        uint32_t lo = 0xFFFFFFFFu, hi = 0u;
        for_each_byte<false>(
            w, off, off + n, b0,
            [&](int p, uint32_t bv) {
                const int i = p - off;
                if (bv > b0 || take_all) {
                    const int slot = topk::reserve_slot(&sh.above);
                    if (slot < k) o[slot] = i;
                    return;
                }
                const uint32_t fk = topk::float_key(__ldg(x + i));
                lo = min(lo, fk);
                hi = max(hi, fk);
                const int j = topk::reserve_slot(&sh.candidates);
                if (j < kCapacity) {
                    sh.cand.key[j] = fk;
                    sh.cand.idx[j] = i;
                }
            },
            never);
        topk::block_minmax(lo, hi, &sh.lo, &sh.hi);
    }
    __syncthreads();
    if (take_all) return;

    topk::KeyPrefix key;
    {
        const int m = bucket_count;
        key.set_range(sh.lo, sh.hi);
        __syncthreads();
        while (key.bits > 0) {
            const int dbits = key.digit_bits(LC_REFINE_BITS);
            const int shift = key.bits - dbits;
            const uint32_t mask = (1u << dbits) - 1u;
            for (int b = tid; b < kRefineBins; b += kBlock) sh.hist[b] = 0;
            if (tid == 0) {
                sh.lo = 0xFFFFFFFFu;
                sh.hi = 0u;
            }
            __syncthreads();
            uint32_t lo = 0xFFFFFFFFu, hi = 0u;
            topk::RunCounter run;
            for (int j = tid; j < m; j += kBlock) {
                const uint32_t fk = sh.cand.key[j];
                if (!key.matches(fk)) continue;
                run.add(sh.hist, static_cast<int>((fk >> shift) & mask));
                lo = min(lo, fk);
                hi = max(hi, fk);
            }
            run.flush(sh.hist);
            topk::block_minmax(lo, hi, &sh.lo, &sh.hi);
            __syncthreads();
            topk::choose_bucket<kRefineBins, kBlock>(sh.hist, needed, sh.scratch, &sh.choice);
            needed -= sh.choice.above;
            const bool exact = sh.choice.count == needed;
            key.descend(dbits, sh.choice.bucket, sh.lo, sh.hi);
            __syncthreads();
            if (exact) break;
        }
        const int above_total = k - needed;
        for (int j = tid; j < m; j += kBlock) {
            const int cmp = key.compare(sh.cand.key[j]);
            if (cmp > 0) {
                const int slot = topk::reserve_slot(&sh.above);
                if (slot < above_total) o[slot] = sh.cand.idx[j];
            } else if (cmp == 0) {
                const int slot = topk::reserve_slot(&sh.ties);
                if (slot < needed) o[above_total + slot] = sh.cand.idx[j];
            }
        }
        return;
    }
}
