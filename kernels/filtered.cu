// filtered: exact top-k that reads each score once, for serving batch sizes (many long rows).
// One CTA per row, on a persistent grid (the CTA loops over rows blockIdx.x, + gridDim.x, ...).
// docs/design.md section 4 describes the family.
//
//   sample:  a few thousand scores in groups of 32 consecutive ones, spread evenly over the row
//            (one 128-byte line per group, about 128 expected above the k-th value). A
//            histogram of their coarse keys gives a threshold key t: the sample says some
//            1.2-1.9 k elements of the row are at or above it. When the chosen coarse bucket is
//            heavy and every sampled key in it is one value P (a plateau: ReLU zeros, constant
//            rows, few distinct values), t = P + 1 and the plateau's ties are only counted.
//   stream:  one streaming pass (16-byte evict-first loads, FILTERED_UNROLL in flight per
//            thread): every key >= t goes to a shared-memory buffer of (key, index), slots from
//            a warp-aggregated atomic; the elements with key t - 1 are counted.
//   select:  with C elements >= t and M at t - 1:
//            C in [k, capacity]: an 11-bit radix refinement over the buffer finds the k-th key;
//              when more ties share it than are needed, a second refinement over the ties'
//              indices finds the lowest `needed` of them;
//            C < k <= C + M: the k-th value is t - 1: the whole buffer is selected, and the first
//              k - C ties in index order come from a walk over the row from its start (a plateau's
//              ties are dense: the walk is short);
//            otherwise (the buffer overflowed, or the sample aimed too high and fewer than k
//              remain): the exact rescanning selection of per_row (topk::rescan_select) over the
//              key range the counts leave open. Exactness never depends on the sample, only the
//              time does.
//   output:  the selected set in ascending index order: windows of 32 x 2 x FILTERED_BLOCK
//            indices; in each, the selected elements set bits in a shared bitmap, one block-wide
//            scan of the words gives each its slot.
// Deterministic: among the entries equal to the k-th largest value the lowest indices win, and
// the output depends only on the input (buffer slots depend on scheduling, but no result depends
// on the slot order).
#include "topk_common.cuh"

#ifndef FILTERED_BLOCK
#define FILTERED_BLOCK 512
#endif
#ifndef FILTERED_MIN_BLOCKS
#define FILTERED_MIN_BLOCKS 2
#endif
#ifndef FILTERED_CAPACITY
#define FILTERED_CAPACITY 8192
#endif
// float4 loads in flight per thread in the streaming pass.
#ifndef FILTERED_UNROLL
#define FILTERED_UNROLL 4
#endif
// Expected sample elements above the k-th value (the sample has 128 n / k scores, clamped to
// [FILTERED_MIN_SAMPLE, 32 x 16 x FILTERED_BLOCK / 32]): its precision, and its cost.
#ifndef FILTERED_SAMPLE_HITS
#define FILTERED_SAMPLE_HITS 128
#endif
// Sample groups (of 32 scores) per warp, at most: the sample is at most 32 x this x warps scores.
#ifndef FILTERED_GROUPS_PER_WARP
#define FILTERED_GROUPS_PER_WARP 8
#endif
#ifndef FILTERED_MIN_SAMPLE
#define FILTERED_MIN_SAMPLE 1024
#endif
// Rows shorter than this skip the sample: the rescanning selection is used directly.
#ifndef FILTERED_MIN_LENGTH
#define FILTERED_MIN_LENGTH 8192
#endif
// Digit width of the radix refinement over the buffer (a few thousand keys in shared memory:
// narrow digits make each pass's histogram and bucket scan cheap).
#ifndef FILTERED_REFINE_BITS
#define FILTERED_REFINE_BITS 8
#endif
#ifndef FILTERED_FINAL_UNROLL
#define FILTERED_FINAL_UNROLL 2
#endif
#ifndef FILTERED_EARLY_TIES
#define FILTERED_EARLY_TIES 1
#endif
// Diagnostics: 1 prints, for each row, the path taken, the counts and the cycles of each phase
// (timing experiments only: printf in every CTA).
#ifndef FILTERED_TRACE
#define FILTERED_TRACE 0
#endif

namespace {

constexpr int kBlock = FILTERED_BLOCK;
constexpr int kWarps = kBlock / 32;
constexpr int kCapacity = FILTERED_CAPACITY;
constexpr int kBins = 2048;              // sample bins (coarse key >> 5) and 11-bit refine digits
constexpr int kCoarseShift = 5;
constexpr int kDigitBits = 11;
constexpr int kGroupsPerWarp = FILTERED_GROUPS_PER_WARP;  // sample groups of 32 per warp, at most
constexpr int kMaxGroups = kGroupsPerWarp * kWarps;
static_assert(FILTERED_MIN_SAMPLE / 32 >= kWarps, "every warp needs a sample group");
constexpr int kWindowWordsPerThread = 2;
constexpr int kWindowWords = kWindowWordsPerThread * kBlock;
constexpr int kWindow = 32 * kWindowWords;  // indices per output window
constexpr int kMaxUnroll = FILTERED_FINAL_UNROLL > kWindowWordsPerThread ? FILTERED_FINAL_UNROLL : kWindowWordsPerThread;
using Scan = topk::TileScan<kBlock, kMaxUnroll>;
static_assert(kWindowWords <= kBins, "the bitmap shares the histogram's words");
static_assert(FILTERED_REFINE_BITS <= kDigitBits, "the refinement's histogram is the shared one");

// The candidate buffer (kCapacity keys, then kCapacity indices) is the kernel's dynamic shared
// memory, 8 bytes a slot: static shared memory stops at 48 KB.
constexpr int kBufferBytes = 8 * kCapacity;

extern __shared__ uint4 candidate_buffer[];
__device__ __forceinline__ uint32_t* cand_key() { return reinterpret_cast<uint32_t*>(candidate_buffer); }
__device__ __forceinline__ int* cand_idx() { return reinterpret_cast<int*>(candidate_buffer) + kCapacity; }

struct Shared {
    union {
        int hist[kBins];
        uint32_t bitmap[kWindowWords];
    };
    int scratch[kWarps];
    uint32_t scan_totals[Scan::kWords];
    topk::BucketChoice choice;
    int count;  // elements >= t (slots handed out, even past the capacity)
    int ties;   // elements == t - 1
    int above;  // the rescanning fallback's counters (unused by its deterministic build)
    int fallback_ties;
    int tie_end;  // row ties at the plateau below this index are selected
    uint32_t lo, hi;            // the sample's and the refinements' bounds
    int eq_lo, eq_hi;           // sampled keys equal to lo, to hi (plateau detection)
    uint32_t cand_lo, cand_hi;  // bounds of the buffered keys
};

// Views of the shared state for the helpers in topk_common.cuh (built where used: held across the
// row loop, their pointers would take registers).
__device__ __forceinline__ topk::RefineShared refine_view(Shared& sh) {
    return {sh.hist, sh.scratch, &sh.choice, &sh.lo, &sh.hi};
}
__device__ __forceinline__ topk::RescanShared rescan_view(Shared& sh) {
    return {refine_view(sh), &sh.above, &sh.fallback_ties, sh.scan_totals};
}

// The exact selection of per_row over the key range `range` (in_range elements, `needed` of them
// selected; every key above the range is selected). Called from one place only: each inlined copy
// of the rescanning selection costs registers that the streaming pass then lacks.
__device__ __forceinline__ void exact_fallback(const float* __restrict__ x, int n, int* __restrict__ o, int k,
                                            topk::KeyRange range, int in_range, int needed, Shared& sh) {
    topk::rescan_select<kBlock, 1, kDigitBits, true, FILTERED_FINAL_UNROLL, FILTERED_EARLY_TIES != 0>(
        x, n, o, k, range, in_range, needed, false, rescan_view(sh));
}

// The stream's threshold: buffer every element whose key is >= t; on a plateau (tie = t - 1 is
// the sampled plateau's key) also count the elements whose key is tie.
//
// The stream tests raw float bits b, not keys (float_key costs some eight instructions an element,
// and the stream is issue-bound): key(b) >= t exactly when b - lo_bits < span (unsigned) or b is
// a NaN, where
//   t >= key(+0.0) (threshold value T >= 0, Tb = T's bits): T > 0: b in [Tb, 0x7FFFFFFF] (positive
//     values from T up, +inf, positive NaN); T = +0: b in [0, 0x80000000] (every non-negative
//     value and -0.0);
//   t < key(+0.0) (T < 0, key t = ~bits(T)): b <= ~t (every value with the sign clear, and negative
//     values no farther from zero than T).
// A plateau's key is one a sample had (never NaN): its bits, and -0.0's too when it is zero.
struct Threshold {
    uint32_t t;
    uint32_t tie;
    bool plateau;
    uint32_t lo_bits, span;
    uint32_t tie_bits, tie_bits2;

    __device__ __forceinline__ void set(uint32_t threshold, bool is_plateau) {
        t = threshold;
        tie = threshold - 1u;
        plateau = is_plateau;
        if (t >= topk::kSignBit) {
            const uint32_t tb = t & topk::kAbsMask;
            lo_bits = tb;
            span = tb == 0u ? topk::kSignBit + 1u : topk::kSignBit - tb;
        } else {
            lo_bits = 0u;
            span = ~t + 1u;  // t >= 1: no float has key 0
        }
        tie_bits = tie >= topk::kSignBit ? tie & topk::kAbsMask : ~tie;
        tie_bits2 = tie == topk::kSignBit ? topk::kSignBit : tie_bits;
    }
    // key(b) >= t, from the bits.
    __device__ __forceinline__ bool passes(uint32_t b) const {
        return (b - lo_bits) < span || (b & topk::kAbsMask) > topk::kInfBits;
    }
    // key(b) == tie, from the bits (plateaus only).
    __device__ __forceinline__ bool ties_with(uint32_t b) const { return b == tie_bits || b == tie_bits2; }
};

// The sample: groups of 32 consecutive scores at evenly spaced starts, warp w reading groups w,
// w + kWarps, ...; returns the threshold every thread agrees on. n >= FILTERED_MIN_LENGTH > 32.
// The scores are loaded once for the histogram and read again (L1 hits) for the bounds and the
// counts in the chosen bucket, so that no sample stays in registers across the bucket choice.
__device__ Threshold sample_threshold(const float* __restrict__ x, int n, int k, Shared& sh) {
    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    // 128 n / k scores, whole groups, clamped; e = the expected sample elements above the k-th.
    long long want = (static_cast<long long>(FILTERED_SAMPLE_HITS) * n + k - 1) / k;
    if (want < FILTERED_MIN_SAMPLE) want = FILTERED_MIN_SAMPLE;
    int groups = static_cast<int>((want + 31) / 32);
    if (groups > kMaxGroups) groups = kMaxGroups;
    const int samples = 32 * groups;
    // Group g starts at g * spacing (at most n - 32: the groups stay inside the row).
    const int spacing = (n - 32) / (groups - 1 > 0 ? groups - 1 : 1);
    const float* first = x + warp * spacing + lane;  // this lane's element of group `warp`
    const int stride = kWarps * spacing;             // to the lane's element of the warp's next group
    // Groups of this warp: at least one (groups >= FILTERED_MIN_SAMPLE / 32 >= warps, checked below).
    const int mine = (groups - warp + kWarps - 1) / kWarps;
    for (int b = tid; b < kBins; b += kBlock) sh.hist[b] = 0;
    if (tid == 0) {
        sh.lo = 0xFFFFFFFFu;
        sh.hi = 0u;
        sh.eq_lo = 0;
        sh.eq_hi = 0;
    }
    __syncthreads();
    {
        // Unconditional loads (a group past the warp's last reads its first again, uncounted):
        // a conditionally written array went to local memory.
        float v[kGroupsPerWarp];
#pragma unroll
        for (int j = 0; j < kGroupsPerWarp; ++j) v[j] = __ldg(first + (j < mine ? j : 0) * stride);
#pragma unroll
        for (int j = 0; j < kGroupsPerWarp; ++j) {
            if (j < mine) atomicAdd(&sh.hist[topk::coarse_key(v[j]) >> kCoarseShift], 1);
        }
    }
    __syncthreads();
    // Rank target: e + 5 sqrt(e) + 3 samples (e = the expected sample elements at or above the
    // k-th), so that fewer than k elements remain at or above the threshold only on a five-sigma
    // draw. Integers only (no float instruction: see topk_common.cuh).
    const int e = static_cast<int>(static_cast<long long>(samples) * k / n);
    int root = 0;
    for (int step = 1 << 7; step > 0; step >>= 1) {  // floor(sqrt(e)), e < 2^16
        if ((root + step) * (root + step) <= e) root += step;
    }
    int rank = e + 5 * (root + 1) + 3;
    if (rank > samples) rank = samples;
    topk::choose_bucket<kBins, kBlock>(sh.hist, rank, sh.scratch, &sh.choice);
    const uint32_t bucket = sh.choice.bucket;
    const int in_bucket = sh.choice.count;
    auto for_each_in_bucket = [&](auto&& f) {
        for (int j = 0; j < mine; ++j) {
            const float v = __ldg(first + j * stride);
            if ((topk::coarse_key(v) >> kCoarseShift) == bucket) f(topk::float_key(v));
        }
    };
    uint32_t lo = 0xFFFFFFFFu, hi = 0u;
    for_each_in_bucket([&](uint32_t fk) {
        lo = min(lo, fk);
        hi = max(hi, fk);
    });
    topk::block_minmax(lo, hi, &sh.lo, &sh.hi);
    __syncthreads();
    lo = sh.lo;
    hi = sh.hi;
    // A plateau: one value of the bucket is alone expected to hold a quarter of the buffer (ReLU
    // zeros, constant rows, few distinct values). Its ties are counted, not buffered.
    const bool heavy = static_cast<long long>(in_bucket) * n > static_cast<long long>(kCapacity / 4) * samples;
    if (heavy) {
        int eq_lo = 0, eq_hi = 0;
        for_each_in_bucket([&](uint32_t fk) {
            eq_lo += fk == lo;
            eq_hi += fk == hi;
        });
        eq_lo = __reduce_add_sync(topk::kFullMask, eq_lo);
        eq_hi = __reduce_add_sync(topk::kFullMask, eq_hi);
        if (lane == 0) {
            atomicAdd(&sh.eq_lo, eq_lo);
            atomicAdd(&sh.eq_hi, eq_hi);
        }
    }
    __syncthreads();
    const long long quarter = static_cast<long long>(kCapacity / 4) * samples;
    Threshold th;
    if (heavy && static_cast<long long>(sh.eq_lo) * n > quarter && lo != topk::kTopKey) {
        th.set(lo + 1u, true);
    } else if (heavy && static_cast<long long>(sh.eq_hi) * n > quarter && hi != topk::kTopKey) {
        th.set(hi + 1u, true);  // keys in [lo, hi) lie below the plateau: neither buffered nor counted
    } else {
        th.set(lo, false);      // the least sampled key of the bucket
    }
    return th;
}

// Slots for every lane's `count` (0 .. 2^BITS - 1) candidates, called by all 32 lanes of a warp
// together: one atomic per warp, each lane's prefix from BITS ballots (no coalesced-group
// emulation on the streaming pass's hot path). Returns this lane's first slot.
template <int BITS>
__device__ __forceinline__ int warp_reserve(int* counter, int count) {
    const int lane = threadIdx.x & 31;
    const unsigned below = (1u << lane) - 1u;
    int total = 0, before = 0;
#pragma unroll
    for (int b = 0; b < BITS; ++b) {
        const unsigned plane = __ballot_sync(topk::kFullMask, (count >> b) & 1);
        total += __popc(plane) << b;
        before += __popc(plane & below) << b;
    }
    if (total == 0) return 0;
    int base = 0;
    if (lane == 0) base = atomicAdd(counter, total);
    return __shfl_sync(topk::kFullMask, base, 0) + before;
}

// The stream: every element whose key is >= th.t into the buffer with its exact key (sh.count
// counts them all, even past the capacity), on a plateau the elements at th.tie counted in sh.ties,
// the buffered keys' bounds in cand_lo/cand_hi. Every lane of a warp runs every iteration (lanes
// past the end hold no candidate), so the warp reserves its slots with ballots; FILTERED_UNROLL
// 16-byte evict-first loads are issued before any is used, and one reservation serves the batch
// (a reservation per vector let the compiler issue one load at a time).
template <bool PLATEAU>
__device__ __forceinline__ void stream_candidates(const float* __restrict__ x, int n, const Threshold& th, Shared& sh) {
    const int tid = threadIdx.x;
    uint32_t lo = 0xFFFFFFFFu, hi = 0u;
    int ties = 0;
    auto keep = [&](int i, uint32_t bits, bool hit, int& slot) {
        if (!hit) return;
        const uint32_t fk = topk::float_key(__uint_as_float(bits));
        if (slot < kCapacity) {
            cand_key()[slot] = fk;
            cand_idx()[slot] = i;
        }
        ++slot;
        lo = min(lo, fk);
        hi = max(hi, fk);
    };
    // The scalar head (up to 16-byte alignment) and tail: at most 3 + 3 threads, one element each.
    const int head = topk::vector_head(x, n);
    const float4* vec = reinterpret_cast<const float4*>(x + head);
    const int nvec = (n - head) >> 2;
    const int tail0 = head + 4 * nvec;
    {
        const int i = tid < head ? tid : tail0 + (tid - head);
        const bool valid = tid < head || i < n;
        const uint32_t b = valid ? __float_as_uint(__ldg(x + i)) : 0u;
        if (PLATEAU) ties += valid && th.ties_with(b);
        const bool hit = valid && th.passes(b);
        int slot = warp_reserve<1>(&sh.count, hit ? 1 : 0);
        keep(i, b, hit, slot);
    }
    constexpr int kCountBits = FILTERED_UNROLL <= 3 ? 4 : (FILTERED_UNROLL <= 7 ? 5 : 6);
    static_assert(4 * FILTERED_UNROLL < (1 << kCountBits), "batch count too wide for the ballots");
    for (int v0 = 0; v0 < nvec; v0 += kBlock * FILTERED_UNROLL) {
        uint4 buf[FILTERED_UNROLL];
#pragma unroll
        for (int u = 0; u < FILTERED_UNROLL; ++u) {
            const int v = v0 + u * kBlock + tid;
            if (v < nvec) buf[u] = __ldcs(reinterpret_cast<const uint4*>(vec) + v);
        }
        uint32_t hit_mask = 0u;  // bit 4u + e: element e of vector u passes
        int hits = 0;
#pragma unroll
        for (int u = 0; u < FILTERED_UNROLL; ++u) {
            if (v0 + u * kBlock + tid >= nvec) continue;
            const uint32_t b[4] = {buf[u].x, buf[u].y, buf[u].z, buf[u].w};
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const bool hit = th.passes(b[e]);
                hit_mask |= static_cast<uint32_t>(hit) << (4 * u + e);
                hits += hit;
                if (PLATEAU) ties += th.ties_with(b[e]);
            }
        }
        int slot = warp_reserve<kCountBits>(&sh.count, hits);
        if (hits) {
#pragma unroll
            for (int u = 0; u < FILTERED_UNROLL; ++u) {
                const int i = head + 4 * (v0 + u * kBlock + tid);
                keep(i, buf[u].x, (hit_mask >> (4 * u)) & 1u, slot);
                keep(i + 1, buf[u].y, (hit_mask >> (4 * u + 1)) & 1u, slot);
                keep(i + 2, buf[u].z, (hit_mask >> (4 * u + 2)) & 1u, slot);
                keep(i + 3, buf[u].w, (hit_mask >> (4 * u + 3)) & 1u, slot);
            }
        }
    }
    ties = __reduce_add_sync(topk::kFullMask, ties);
    if ((tid & 31) == 0 && ties) atomicAdd(&sh.ties, ties);
    topk::block_minmax(lo, hi, &sh.cand_lo, &sh.cand_hi);
}

// The selection when the buffer holds it: `c` elements >= th.t are buffered, and either they
// hold the k-th largest (c >= k) or it is th.tie (c < k <= c + ties). Writes the selected set in
// ascending index order.
__device__ __forceinline__ void write_selected(const float* __restrict__ x, int n, int* __restrict__ o, int k,
                                               Threshold th, int c, Shared& sh) {
    const int tid = threadIdx.x;
    const uint32_t tie = th.tie;
    const bool from_buffer = c >= k;
    // Which buffer entries are selected, and which row ties at t - 1 join them.
    topk::KeyPrefix key;    // from_buffer: the k-th key's prefix
    topk::KeyPrefix index;  // from_buffer, more ties than needed: the needed-th lowest tie index
    bool all_ties = true;
    int tie_end = 0;        // plateau: row ties at t - 1 with index < tie_end are selected
    Scan ts(sh.scan_totals);
    if (from_buffer) {
        key.set_range(sh.cand_lo, sh.cand_hi);
        const bool one_key = key.bits == 0;
        int needed = topk::refine<FILTERED_REFINE_BITS, kBlock>(key, k, refine_view(sh), [&](auto&& count) {
            for (int j = tid; j < c; j += kBlock) count(cand_key()[j]);
        });
        const int tied = one_key ? c : sh.choice.count;
        if (tied > needed) {
            all_ties = false;
            index.set_range(~static_cast<uint32_t>(n - 1), 0xFFFFFFFFu);
            topk::refine<FILTERED_REFINE_BITS, kBlock>(index, needed, refine_view(sh), [&](auto&& count) {
                for (int j = tid; j < c; j += kBlock) {
                    if (key.compare(cand_key()[j]) == 0) count(~static_cast<uint32_t>(cand_idx()[j]));
                }
            });
        }
    } else {
        // The first k - c ties in index order, written to the output's head (overwritten
        // below); the last of them bounds the selected ties.
        const int needed = k - c;
        topk::ordered_select_row<kBlock, FILTERED_FINAL_UNROLL>(
            x, n, o, 0, needed, topk::kStopAfterTies, ts,
            [&](uint32_t fk) { return fk == tie ? topk::kTie : topk::kNone; });
        __syncthreads();
        if (tid == 0) sh.tie_end = reinterpret_cast<volatile int*>(o)[needed - 1] + 1;
        __syncthreads();
        tie_end = sh.tie_end;
    }
    auto selected = [&](int j) {
        if (!from_buffer) return true;
        const int cmp = key.compare(cand_key()[j]);
        return cmp > 0 || (cmp == 0 && (all_ties || index.compare(~static_cast<uint32_t>(cand_idx()[j])) >= 0));
    };

    // The output, window by window in index order: bits of the selected indices, then one
    // scan over the window's words places them.
    int written = 0;
    const int windows = (n - 1) / kWindow + 1;
    for (int window = 0; window < windows && written < k; ++window) {
        const int w0 = window * kWindow;
        const int w1 = n - w0 < kWindow ? n : w0 + kWindow;
#pragma unroll
        for (int u = 0; u < kWindowWordsPerThread; ++u) sh.bitmap[u * kBlock + tid] = 0u;
        __syncthreads();
        for (int j = tid; j < c; j += kBlock) {
            const int i = cand_idx()[j];
            if (i >= w0 && i < w1 && selected(j)) atomicOr(&sh.bitmap[(i - w0) >> 5], 1u << ((i - w0) & 31));
        }
        const int ties_to = tie_end < w1 ? tie_end : w1;
        for (int i = w0 + tid; i < ties_to; i += kBlock) {
            if (topk::float_key(__ldg(x + i)) == tie) atomicOr(&sh.bitmap[(i - w0) >> 5], 1u << ((i - w0) & 31));
        }
        __syncthreads();
        uint32_t words[kWindowWordsPerThread], bits[kWindowWordsPerThread], before[kWindowWordsPerThread];
#pragma unroll
        for (int u = 0; u < kWindowWordsPerThread; ++u) {
            words[u] = sh.bitmap[u * kBlock + tid];
            bits[u] = __popc(words[u]);
        }
        const uint32_t total = ts.template scan<kWindowWordsPerThread>(bits, before);
#pragma unroll
        for (int u = 0; u < kWindowWordsPerThread; ++u) {
            int slot = written + static_cast<int>(before[u]);
            const int base = w0 + 32 * (u * kBlock + tid);
            uint32_t word = words[u];
            while (word) {
                const int b = __ffs(word) - 1;
                word &= word - 1u;
                if (slot < k) o[slot] = base + b;
                ++slot;
            }
        }
        written += static_cast<int>(total);
    }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(FILTERED_BLOCK, FILTERED_MIN_BLOCKS)
filtered_topk(const float* __restrict__ logits, long long stride, const int* __restrict__ lengths, int rows,
              int width, int k, int* __restrict__ out) {
    __shared__ Shared sh;
    const int tid = threadIdx.x;

    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* x = logits + static_cast<long long>(row) * stride;
        int* o = out + static_cast<long long>(row) * k;
        const int n = topk::row_length(lengths, row, width);
        if (n <= k) {
            topk::write_short_row<kBlock>(o, n, k);
            continue;  // no shared state touched
        }
        if (tid == 0) {
            sh.count = 0;
            sh.ties = 0;
            sh.above = 0;
            sh.fallback_ties = 0;
            sh.cand_lo = 0xFFFFFFFFu;
            sh.cand_hi = 0u;
        }
        // The sampled path needs long rows and a buffer with room for k and the sample's slack.
        const bool sampled = n >= FILTERED_MIN_LENGTH && 2 * k <= kCapacity;
        topk::KeyRange range{0u, 0xFFFFFFFFu};
        int in_range = n, needed = k;
        bool fallback = !sampled;
#if FILTERED_TRACE
        long long clocks[4] = {clock64(), 0, 0, 0};
        int trace_c = -1, trace_m = -1;
#endif
        if (sampled) {
            const Threshold th = sample_threshold(x, n, k, sh);
#if FILTERED_TRACE
            clocks[1] = clock64();
#endif
            if (th.plateau) {
                stream_candidates<true>(x, n, th, sh);
            } else {
                stream_candidates<false>(x, n, th, sh);
            }
            __syncthreads();
            const int c = sh.count;
            const int m = sh.ties;
#if FILTERED_TRACE
            clocks[2] = clock64();
            trace_c = c;
            trace_m = m;
#endif
            if ((c >= k && c <= kCapacity) || (c < k && c + m >= k)) {
                write_selected(x, n, o, k, th, c, sh);
            } else if (c >= k) {  // the buffer overflowed: the k-th key is >= t
                fallback = true;
                range = {th.t, 0xFFFFFFFFu};
                in_range = c;
            } else {  // fewer than k reach t (and t - 1 on a plateau): all of them are selected
                // t >= 2 (no float has key 0; a plateau's t is a sampled key + 1)
                const int above = th.plateau ? c + m : c;
                fallback = true;
                range = {0u, th.plateau ? th.t - 2u : th.t - 1u};
                needed = k - above;
                in_range = n - above;
            }
        }
        if (fallback) {
            __syncthreads();  // every thread has read the counts
            exact_fallback(x, n, o, k, range, in_range, needed, sh);
        }
#if FILTERED_TRACE
        __syncthreads();
        clocks[3] = clock64();
        if (tid == 0)
            printf("filtered row %d cta %d n %d c %d m %d fallback %d cycles sample %lld stream %lld select %lld\n", row,
                   blockIdx.x, n, trace_c, trace_m, fallback ? 1 : 0, clocks[1] - clocks[0], clocks[2] - clocks[1],
                   clocks[3] - clocks[2]);
#endif
        __syncthreads();  // the next row resets the shared counters and the histogram
    }
}
