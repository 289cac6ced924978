// filtered: exact top-k that reads each score once, for serving batch sizes (many long rows).
// One CTA per row on a persistent grid (the CTA loops over rows blockIdx.x, + gridDim.x, ...), or,
// for fewer rows than CTA slots, a row split over `parts` CTAs (see merge_parts).
// docs/design.md section 4 describes the family.
//
//   sample:  a few thousand scores in groups of 32 consecutive ones, spread evenly over the row
//            (one 128-byte line per group, about 128 expected above the k-th value), copied to
//            shared memory with cp.async; with FILTERED_PREFETCH the next row's copy is started
//            before the current row streams. A histogram of their coarse keys picks a bucket, and
//            its first key is the threshold t: the sample says some 1.2-1.9 k elements of the row
//            are at or above it. A heavy bucket's sampled keys are read again: its least is t, or,
//            when one value P fills it (a plateau: ReLU zeros, constant rows, few distinct
//            values), t = P + 1 and the plateau's ties are not buffered.
//   stream:  one streaming pass (16-byte evict-first loads, FILTERED_UNROLL in flight per
//            thread; the first batch is issued before the sample is read, so that its loads
//            overlap the threshold's choice): every value whose key is >= t (one float
//            compare) goes to a shared-memory buffer of (raw bits, index), slots from a
//            warp-aggregated atomic. A split row's parts then append their candidates to the
//            row's workspace, and the last to arrive selects, once the buffer's bits are made keys.
//   select:  with C elements >= t:
//            C in [k, capacity]: one 11-bit digit of the buffered keys' offsets from the least
//              picks the k-th's bucket; a bucket of at most FILTERED_RANK_MAX elements is finished
//              by ranking them, a fuller one by a prefix digit and FILTERED_REFINE_BITS radix
//              passes (and, when more ties share the k-th key than are needed, a refinement over
//              the ties' indices);
//            C < k on a plateau: the whole buffer is selected, and the first k - C ties (key
//              t - 1) in index order come from a walk over the row from its start (a plateau's
//              ties are dense: the walk is short). The stream does not count the ties (an
//              integer compare pair a score: 1.02-1.08x the time on plateau rows); a walk that
//              finds too few means the k-th value lies below the plateau;
//            otherwise (the buffer overflowed; the sample aimed too high and fewer than k remain;
//              a plateau with too few ties): the exact rescanning selection of per_row
//              (topk::rescan_select) over the key range the counts leave open. Exactness never
//              depends on the sample, only the time does.
//   output:  the selected set in ascending index order: a bitmap of the selected indices (the
//            histogram's words for rows up to 64K, the buffer's key words beyond), then block
//            scans over its words place each index (a lane a word; a warp a word where words
//            are dense, as a plateau's ties are).
// Deterministic: among the entries equal to the k-th largest value the lowest indices win, and
// the output depends only on the input (buffer and workspace slots depend on scheduling, but no
// result depends on the slot order).
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
// float4 loads in flight per thread in the streaming pass (topkbench/cuda/one_cta.py: the split
// build takes 4).
#ifndef FILTERED_UNROLL
#define FILTERED_UNROLL 5
#endif
// Expected sample elements above the k-th value, e (the sample has e n / k scores, clamped to
// [FILTERED_MIN_SAMPLE, 32 x FILTERED_GROUPS_PER_WARP x FILTERED_BLOCK / 32]): its precision, and
// its cost. FILTERED_SAMPLE_HITS where the buffer holds less than 4 k: at 128 the buffer gets some
// 1.5 k candidates, 4.7 standard deviations below a capacity of 2 k. Measured on the H200 (k=2048,
// x the read floor, normal / relu_plateau): 96 took 1024 x 32768 from 2.04 to 2.01 / 2.19 to 2.11,
// but at 3.5 deviations one row of a sweep's 512 x 24576 overflowed the short build's buffer, and
// its rescanning selection made the call 2.3x as slow; 64 overflowed at 1024 x 32768 (5.6x); 192
// (with 12 groups a warp) was 0.99-1.06x the time.
#ifndef FILTERED_SAMPLE_HITS
#define FILTERED_SAMPLE_HITS 128
#endif
// e where the buffer holds 4 k or more (the wide and split builds at k <= 2048: 1.55 k candidates
// at 96, 19 deviations below 4 k). 128 -> 96 on the H200 (k=2048, relu_plateau, x the read floor):
// 32 x 65536 3.93 -> 3.85, 32 x 98304 4.11 -> 3.99, 64 x 65536 4.61 -> 4.48, 512 x 65536 1.79 ->
// 1.75; normal scores 0.99-1.01x the time.
#ifndef FILTERED_SAMPLE_HITS_ROOMY
#define FILTERED_SAMPLE_HITS_ROOMY 96
#endif
// Sample groups (of 32 scores) per warp, at most: the sample is at most 32 x this x warps scores.
#ifndef FILTERED_GROUPS_PER_WARP
#define FILTERED_GROUPS_PER_WARP 8
#endif
#ifndef FILTERED_MIN_SAMPLE
#define FILTERED_MIN_SAMPLE 1024
#endif
// Rows split over several CTAs (read by topkbench/cuda/one_cta.py, which sizes the launch): at most
// this many parts a row, each at least FILTERED_MIN_PART_LENGTH scores long.
#ifndef FILTERED_MAX_PARTS
#define FILTERED_MAX_PARTS 8
#endif
#ifndef FILTERED_MIN_PART_LENGTH
#define FILTERED_MIN_PART_LENGTH 16384
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
// 1: the next row's sample is copied to shared memory (cp.async) while the current row streams,
// so that only a CTA's first row waits for its sample's loads.
#ifndef FILTERED_PREFETCH
#define FILTERED_PREFETCH 1
#endif
// After the buffer's first 11-bit digit, a bucket of at most this many elements is finished by
// ranking them against each other (rank_bucket) instead of more radix passes over the buffer.
#ifndef FILTERED_RANK_MAX
#define FILTERED_RANK_MAX 128
#endif
// Lanes of a warp whose output words are dense for the warp to write each word together (see
// kDenseLanes).
#ifndef FILTERED_DENSE_LANES
#define FILTERED_DENSE_LANES 24
#endif
// A warp's stream batch with more hits than this stores them with predicated stores (see
// kDenseBatchHits).
#ifndef FILTERED_DENSE_BATCH_HITS
#define FILTERED_DENSE_BATCH_HITS 8
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
// The output's bitmap is the buffer's key half once the selection is decided: one bit an index,
// 32 kCapacity indices a window (every row up to 256K at the default capacity is one window),
// scanned in chunks of kChunkWordsPerThread words a thread.
constexpr int kChunkWordsPerThread = 4;
constexpr int kChunkWords = kChunkWordsPerThread * kBlock;
constexpr int kBitmapWindow = 32 * kCapacity;
// Where at least kDenseLanes of a warp's words have more than kDenseWordBits selected bits (a
// plateau's ties), the whole warp writes each word in turn; else each lane walks its word's bits.
// Measured on the H200 (relu_plateau): the warp's loop of 32 words was 0.81x the time at
// 1024 x 8192, k=2048 (~33 dense words), but 1.02-1.07x at k=512 (~9 dense words, one warp); with
// 24 lanes, not 16, k=1024 plateau rows of 8K-16K took 0.95-0.96x the time (32: the same as 24).
constexpr int kDenseWordBits = 16;
constexpr int kDenseLanes = FILTERED_DENSE_LANES;
// A warp's stream batch with more hits than this stores them with predicated stores, bit by bit;
// one with fewer loops over its hits (stream_candidates). Measured on the H200 (k=2048,
// bench_variants, x the read floor), the loop alone -> this split at 8 hits: 1024 x 32768
// 2.38 -> 2.16 (normal) and 2.38 -> 2.23 (relu_plateau), 512 x 65536 1.97 -> 1.83 and 2.10 -> 2.04,
// 64 x 32768 4.18 -> 3.66; splits at 4-12 hits within 2% of each other, at 16-24 plateau rows
// lost the gain (2.08-2.11 at 512 x 65536). Predicated stores only, with no loop, were 1.20x the
// time on 256 x 131072's plateau rows (about 5 hits a batch).
constexpr int kDenseBatchHits = FILTERED_DENSE_BATCH_HITS;
constexpr int kMaxUnroll = FILTERED_FINAL_UNROLL > kChunkWordsPerThread ? FILTERED_FINAL_UNROLL : kChunkWordsPerThread;
using Scan = topk::TileScan<kBlock, kMaxUnroll>;
// The largest bucket rank_bucket finishes (one element a thread; keys and indices in the histogram;
// 0: the radix refinement always).
constexpr int kRankMax = FILTERED_RANK_MAX;
static_assert(kRankMax <= kBlock && 2 * kRankMax <= kBins, "rank_bucket's list");
static_assert(FILTERED_REFINE_BITS <= kDigitBits, "the refinement's histogram is the shared one");

// The kernel's dynamic shared memory (static shared memory stops at 48 KB): the candidate buffer,
// kCapacity keys then kCapacity indices, then the sample's staging area (kMaxGroups groups of 32
// scores). topkbench/cuda/one_cta.py sizes it the same way.
extern __shared__ uint4 candidate_buffer[];
__device__ __forceinline__ uint32_t* cand_key() { return reinterpret_cast<uint32_t*>(candidate_buffer); }
__device__ __forceinline__ int* cand_idx() { return reinterpret_cast<int*>(candidate_buffer) + kCapacity; }
__device__ __forceinline__ float* sample_stage() { return reinterpret_cast<float*>(candidate_buffer) + 2 * kCapacity; }

struct Shared {
    int hist[kBins];
    int scratch[kWarps];
    uint32_t scan_totals[Scan::kWords];
    topk::BucketChoice choice;
    int count;  // elements >= t (slots handed out, even past the capacity)
    int above;  // the rescanning fallback's counters (unused by its deterministic build)
    int fallback_ties;
    int tie_end;  // row ties at the plateau below this index are selected
    uint32_t lo, hi;            // the sample's and the refinements' bounds
    int eq_lo, eq_hi;           // sampled keys equal to lo, to hi (plateau detection)
    uint32_t cand_lo, cand_hi;  // bounds of the buffered keys
    uint32_t sample_top;        // the highest coarse bin (coarse key >> kCoarseShift) the sample reached
    int merge_base;             // a split row: this part's first slot in the row's workspace
    int merge_last;             // a split row: this CTA is the row's last part to finish
    int listed;                 // rank_bucket's list length
    uint32_t boundary_key;      // rank_bucket: the last selected element
    int boundary_index;
#if FILTERED_TRACE
    long long trace_loaded;   // clock64 when the sample's histogram is complete
    long long trace_refined;  // clock64 when the buffer's refinements are done
    long long trace_keys;     // clock64 when the buffer holds keys (and their first digit's histogram)
    long long trace_digit;    // clock64 when the first digit's bucket is chosen
    long long trace_marked;   // clock64 when the output's bitmap is complete (first window)
#endif
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

// The stream's threshold: buffer every element whose key is >= t (on a plateau, tie = t - 1 is
// the sampled plateau's key).
//
// The stream tests values, not keys (float_key costs some eight instructions an element, and the
// stream is issue-bound): key(x) >= t exactly when !(x <= below), one unordered compare, where
// `below` is the largest float whose key is < t. Float order is key order (-0.0 and +0.0 compare
// equal and share a key), and a NaN, the top key, compares unordered: it passes every threshold.
// The ends: when every key is >= t (t <= key(-inf)), below is a NaN, so that every value passes;
// when only NaN's is (t > key(+inf)), below is +inf. The compare keeps subnormals: it is written
// in PTX without .ftz.
struct Threshold {
    uint32_t t;
    uint32_t tie;
    bool plateau;
    float below;

    __device__ __forceinline__ void set(uint32_t threshold, bool is_plateau) {
        constexpr uint32_t kMinusInfKey = ~0xFF800000u;             // key(-inf)
        constexpr uint32_t kPlusInfKey = topk::kInfBits | topk::kSignBit;  // key(+inf)
        t = threshold;
        tie = threshold - 1u;
        plateau = is_plateau;
        // The largest key below t that a float has: keys under key(+0.0) are ~bits of negative
        // values, and key(+0.0) - 1 would be -0.0's raw key (the float below +0.0 is -denorm_min).
        uint32_t u = t - 1u;
        if (u == topk::kAbsMask) u = topk::kAbsMask - 1u;
        uint32_t bits;
        if (t == 0u || u < kMinusInfKey) {
            bits = 0x7FC00000u;  // NaN: every value passes
        } else if (u >= kPlusInfKey) {
            bits = topk::kInfBits;
        } else {
            bits = u >= topk::kSignBit ? u & topk::kAbsMask : ~u;
        }
        below = __uint_as_float(bits);
    }
    // key(b) >= t, from the bits.
    __device__ __forceinline__ bool passes(uint32_t b) const {
        uint32_t above;  // inline PTX: CuPy builds with -ftz=true, which a C++ compare would obey
        asm("{\n.reg .pred q;\nsetp.gtu.f32 q, %1, %2;\nselp.u32 %0, 1, 0, q;\n}"
            : "=r"(above)
            : "f"(__uint_as_float(b)), "f"(below));
        return above != 0u;
    }
};

// Which scores a row's sample holds: `groups` groups of 32 consecutive scores, group g at
// g * spacing (at most n - 32: the groups stay inside the row). e n / k scores (e expected above
// the k-th: FILTERED_SAMPLE_HITS, or FILTERED_SAMPLE_HITS_ROOMY where the buffer holds 4 k), whole
// groups, clamped. n >= FILTERED_MIN_LENGTH > 32.
struct SamplePlan {
    int groups;
    int spacing;

    __device__ __forceinline__ SamplePlan(int n, int k) {
        const int hits = kCapacity >= 4 * k ? FILTERED_SAMPLE_HITS_ROOMY : FILTERED_SAMPLE_HITS;
        long long want = (static_cast<long long>(hits) * n + k - 1) / k;
        if (want < FILTERED_MIN_SAMPLE) want = FILTERED_MIN_SAMPLE;
        groups = static_cast<int>((want + 31) / 32);
        if (groups > kMaxGroups) groups = kMaxGroups;
        spacing = (n - 32) / (groups - 1 > 0 ? groups - 1 : 1);
    }
};

// Starts copying row x's sample into the staging area (group g's scores at 32 g ...) with cp.async
// (sm_80 and later, as the __reduce_*_sync of every kernel here), so that the copy overlaps
// whatever the CTA does until wait_sample.
__device__ __forceinline__ void start_sample(const float* __restrict__ x, int n, int k) {
    const SamplePlan plan(n, k);
    float* stage = sample_stage();
    for (int e = threadIdx.x; e < 32 * plan.groups; e += kBlock) {
        const float* src = x + (e >> 5) * plan.spacing + (e & 31);
        const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(stage + e));
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst), "l"(src) : "memory");
    }
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

// Waits for this thread's copies; the caller's barrier then makes every thread's visible.
__device__ __forceinline__ void wait_sample() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

// The sample: groups of 32 consecutive scores at evenly spaced starts, warp w reading groups w,
// w + kWarps, ...; returns the threshold every thread agrees on. n >= FILTERED_MIN_LENGTH > 32.
// The scores are in the staging area (start_sample), read once for the histogram and, where the
// chosen bucket is heavy (a plateau's candidate), again for its bounds and counts.
__device__ Threshold sample_threshold(int n, int k, Shared& sh) {
    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const SamplePlan plan(n, k);
    const int samples = 32 * plan.groups;
    const float* first = sample_stage() + 32 * warp + lane;  // this lane's score of group `warp`
    constexpr int stride = 32 * kWarps;                        // to its score of the warp's next group
    // Groups of this warp: at least one (groups >= FILTERED_MIN_SAMPLE / 32 >= warps, checked below).
    const int mine = (plan.groups - warp + kWarps - 1) / kWarps;
    for (int b = tid; b < kBins; b += kBlock) sh.hist[b] = 0;
    wait_sample();
    if (tid == 0) {
        sh.lo = 0xFFFFFFFFu;
        sh.hi = 0u;
        sh.eq_lo = 0;
        sh.eq_hi = 0;
        sh.sample_top = 0u;
    }
    __syncthreads();
    {
        uint32_t top = 0u;
#pragma unroll
        for (int j = 0; j < kGroupsPerWarp; ++j) {
            if (j < mine) {
                const uint32_t bin = topk::coarse_key(first[j * stride]) >> kCoarseShift;
                atomicAdd(&sh.hist[bin], 1);
                top = max(top, bin);
            }
        }
        top = __reduce_max_sync(topk::kFullMask, top);
        if (lane == 0) atomicMax(&sh.sample_top, top);
    }
    __syncthreads();
#if FILTERED_TRACE
    if (tid == 0) sh.trace_loaded = clock64();
#endif
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
    // A plateau: one value of the bucket is alone expected to hold a quarter of the buffer (ReLU
    // zeros, constant rows, few distinct values). Its ties are not buffered. Only a heavy bucket
    // (expected to hold a quarter of the buffer) can hold one.
    const long long quarter = static_cast<long long>(kCapacity / 4) * samples;
    const bool heavy = static_cast<long long>(in_bucket) * n > quarter;
    Threshold th;
    if (!heavy) {
        // A light bucket: its first key is the threshold. Its least sampled key, a pass over the
        // sample and a barrier more, would keep some n / samples elements fewer (~16 of 32768).
        const uint32_t coarse = bucket << kCoarseShift;
        th.set(topk::coarse_key_range(coarse, coarse + (1u << kCoarseShift) - 1u).first, false);
        return th;
    }
    // The bucket's bounds; each sampled score is replaced by its key if it is in the bucket, else
    // by 0 (no float's key), for the count of the bounds' values that follows.
    uint32_t* keys = reinterpret_cast<uint32_t*>(sample_stage()) + 32 * warp + lane;
    uint32_t lo = 0xFFFFFFFFu, hi = 0u;
    for (int j = 0; j < mine; ++j) {
        const float v = __uint_as_float(keys[j * stride]);
        uint32_t fk = 0u;
        if ((topk::coarse_key(v) >> kCoarseShift) == bucket) {
            fk = topk::float_key(v);
            lo = min(lo, fk);
            hi = max(hi, fk);
        }
        keys[j * stride] = fk;
    }
    topk::block_minmax(lo, hi, &sh.lo, &sh.hi);
    __syncthreads();
    lo = sh.lo;
    hi = sh.hi;
    {
        int eq_lo = 0, eq_hi = 0;
        for (int j = 0; j < mine; ++j) {
            const uint32_t fk = keys[j * stride];
            eq_lo += fk == lo;
            eq_hi += fk == hi;
        }
        eq_lo = __reduce_add_sync(topk::kFullMask, eq_lo);
        eq_hi = __reduce_add_sync(topk::kFullMask, eq_hi);
        if (lane == 0) {
            atomicAdd(&sh.eq_lo, eq_lo);
            atomicAdd(&sh.eq_hi, eq_hi);
        }
    }
    __syncthreads();
    if (static_cast<long long>(sh.eq_lo) * n > quarter && lo != topk::kTopKey) {
        th.set(lo + 1u, true);
    } else if (static_cast<long long>(sh.eq_hi) * n > quarter && hi != topk::kTopKey) {
        th.set(hi + 1u, true);  // keys in [lo, hi) lie below the plateau: neither buffered nor counted
    } else {
        th.set(lo, false);      // the least sampled key of the bucket
    }
    return th;
}

// Slots for every lane's `count` candidates, called by all 32 lanes of a warp together: one atomic
// per warp, each lane's first slot from a warp scan of the counts (five shuffles; per-bit ballots
// took as long at 1-2 candidates a lane and longer beyond). Returns this lane's first slot; `total`
// is the warp's count.
__device__ __forceinline__ int warp_reserve(int* counter, int count, int& total) {
    const int lane = threadIdx.x & 31;
    int inclusive = count;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
        const int other = __shfl_up_sync(topk::kFullMask, inclusive, d);
        if (lane >= d) inclusive += other;
    }
    total = __shfl_sync(topk::kFullMask, inclusive, 31);
    if (total == 0) return 0;
    int base = 0;
    if (lane == 31) base = atomicAdd(counter, total);
    return __shfl_sync(topk::kFullMask, base, 31) + inclusive - count;
}

// The slice of a row's 16-byte vectors that one CTA streams: a row split over `parts` CTAs
// streams slice `part`; part 0 also takes the scalar head (up to 16-byte alignment) and tail.
// Slices are never empty: n >= FILTERED_MIN_LENGTH gives 2047 vectors or more, parts at most 8.
struct StreamSlice {
    const uint4* vec;
    int head, tail0, v_begin, v_end;

    __device__ __forceinline__ StreamSlice(const float* __restrict__ x, int n, int part, int parts) {
        head = topk::vector_head(x, n);
        vec = reinterpret_cast<const uint4*>(x + head);
        const int nvec = (n - head) >> 2;
        tail0 = head + 4 * nvec;
        v_begin = static_cast<int>(static_cast<long long>(nvec) * part / parts);
        v_end = static_cast<int>(static_cast<long long>(nvec) * (part + 1) / parts);
    }
};

// One batch of the stream: FILTERED_UNROLL 16-byte evict-first loads a thread, issued before any
// is used. A vector past the slice's end loads the slice's last one again (no predicated load, no
// register left unset); in_slice, bits 4u .. 4u + 3 for vector u, drops it.
struct StreamBatch {
    uint4 v[FILTERED_UNROLL];
    uint32_t in_slice;

    __device__ __forceinline__ void load(const StreamSlice& s, int v0) {
        in_slice = 0u;
#pragma unroll
        for (int u = 0; u < FILTERED_UNROLL; ++u) {
            const int i = v0 + u * kBlock + static_cast<int>(threadIdx.x);
            v[u] = __ldcs(s.vec + (i < s.v_end ? i : s.v_end - 1));
            in_slice |= i < s.v_end ? 0xFu << (4 * u) : 0u;
        }
    }
};

// The stream: every element whose key is >= th.t into the buffer (sh.count counts them all, even
// past the capacity). The buffer takes the
// raw float bits: the selection turns them into keys once the count is known to fit (a conversion
// in the stream would run in lanes that a warp's few hits leave idle). Every lane of a warp runs
// every iteration (lanes past the end hold no candidate), so the warp reserves its slots together
// (warp_reserve); one reservation serves a batch (a reservation per vector let the compiler issue
// one load at a time). `batch` is the slice's first batch, loaded by the caller before the
// threshold was known: its loads overlap the sample's histogram; each later batch is loaded
// here, once the one before is kept.
__device__ __forceinline__ void stream_candidates(const float* __restrict__ x, int n, const Threshold& th, Shared& sh,
                                                  const StreamSlice& s, int part, StreamBatch& batch) {
    const int tid = threadIdx.x;
    auto keep = [&](int i, uint32_t bits, int slot) {
        if (slot < kCapacity) {
            cand_key()[slot] = bits;
            cand_idx()[slot] = i;
        }
    };
    // The scalar head and tail: at most 3 + 3 threads, one element each.
    {
        const int i = tid < s.head ? tid : s.tail0 + (tid - s.head);
        const bool valid = part == 0 && (tid < s.head || i < n);
        const uint32_t b = valid ? __float_as_uint(__ldg(x + i)) : 0u;
        const bool hit = valid && th.passes(b);
        int total;
        const int slot = warp_reserve(&sh.count, hit ? 1 : 0, total);
        if (hit) keep(i, b, slot);
    }
    static_assert(4 * FILTERED_UNROLL <= 32, "a batch's hits are one 32-bit mask");
    for (int v0 = s.v_begin;;) {
        // Every vector is tested (no branch a vector); the slice mask drops the ones past its end.
        uint32_t hit_mask = 0u;  // bit 4u + e: element e of vector u passes
#pragma unroll
        for (int u = 0; u < FILTERED_UNROLL; ++u) {
            const uint32_t b[4] = {batch.v[u].x, batch.v[u].y, batch.v[u].z, batch.v[u].w};
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                hit_mask |= static_cast<uint32_t>(th.passes(b[e])) << (4 * u + e);
            }
        }
        hit_mask &= batch.in_slice;
        const int hits = __popc(hit_mask);
        int total;
        int slot = warp_reserve(&sh.count, hits, total);
        if (total > kDenseBatchHits) {
            // Many hits (9% of the scores at 32K): predicated stores at consecutive
            // slots, every bit of the batch in turn, with no loop a warp steps through for its
            // lanes' hits. Past the capacity the row overflows, and its buffer is never read.
            if (slot + hits <= kCapacity) {
                uint32_t* dst = cand_key() + slot;  // dst[kCapacity]: the index half
#pragma unroll
                for (int u = 0; u < FILTERED_UNROLL; ++u) {
                    const int i = s.head + 4 * (v0 + u * kBlock + tid);
                    const uint32_t b[4] = {batch.v[u].x, batch.v[u].y, batch.v[u].z, batch.v[u].w};
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        if ((hit_mask >> (4 * u + e)) & 1u) {
                            dst[0] = b[e];
                            dst[kCapacity] = static_cast<uint32_t>(i + e);
                            ++dst;
                        }
                    }
                }
            }
        } else if (hit_mask) {
            // Few hits (a plateau's sparse scores above it): a loop over each vector's hit bits,
            // not a predicated store for every bit.
#pragma unroll
            for (int u = 0; u < FILTERED_UNROLL; ++u) {
                const int i = s.head + 4 * (v0 + u * kBlock + tid);
                for (uint32_t m = (hit_mask >> (4 * u)) & 0xFu; m; m &= m - 1u) {
                    const int e = __ffs(m) - 1;
                    const uint32_t low = e & 1 ? batch.v[u].y : batch.v[u].x;  // selects, not branches
                    const uint32_t high = e & 1 ? batch.v[u].w : batch.v[u].z;
                    const uint32_t b = e & 2 ? high : low;
                    keep(i + e, b, slot++);
                }
            }
        }
        v0 += kBlock * FILTERED_UNROLL;
        if (v0 >= s.v_end) break;
        batch.load(s, v0);
    }
}

// The bounds of the buffer's first c keys, into cand_lo/cand_hi. Ends with a barrier.
__device__ __forceinline__ void buffer_bounds(int c, Shared& sh) {
    uint32_t lo = 0xFFFFFFFFu, hi = 0u;
    for (int j = threadIdx.x; j < c; j += kBlock) {
        const uint32_t fk = cand_key()[j];
        lo = min(lo, fk);
        hi = max(hi, fk);
    }
    topk::block_minmax(lo, hi, &sh.cand_lo, &sh.cand_hi);
    __syncthreads();
}

// A row split over `parts` CTAs (few rows: one CTA a row would leave most SMs idle). Every part
// draws the same sample, so all agree on the threshold; each streams its slice into its own buffer
// and then appends its candidates to the row's workspace in global memory (slots from the row's
// counter; the slot order depends on scheduling, the selection never does). The last part to
// arrive loads the row's candidates into its buffer, sets sh.count to the row's total, resets the
// row's counters for the next launch and returns true: it selects as a CTA that streamed the whole
// row would. The others return false.
// counters: per row {elements >= t, parts arrived, unused, unused}; the workspace holds the
// candidates as the stream buffered them (raw float bits, indices).
__device__ bool merge_parts(int parts, int* __restrict__ counters, uint32_t* __restrict__ ws_key,
                            int* __restrict__ ws_idx, Shared& sh) {
    const int tid = threadIdx.x;
    const int c = sh.count;  // may exceed the capacity: only the first kCapacity are buffered
    if (tid == 0) sh.merge_base = atomicAdd(&counters[0], c);
    __syncthreads();
    const int base = sh.merge_base;
    const int stored = c < kCapacity ? c : kCapacity;
    for (int j = tid; j < stored && base + j < kCapacity; j += kBlock) {
        ws_key[base + j] = cand_key()[j];
        ws_idx[base + j] = cand_idx()[j];
    }
    __threadfence();  // the appended candidates are visible before the arrival is
    __syncthreads();
    if (tid == 0) sh.merge_last = atomicAdd(&counters[1], 1) == parts - 1;
    __syncthreads();
    if (!sh.merge_last) return false;
    __threadfence();
    // L2 reads (ld.cg): the other parts' writes never passed through this SM's L1.
    const int total = __ldcg(&counters[0]);
    const int merged = total < kCapacity ? total : kCapacity;
    for (int j = tid; j < merged; j += kBlock) {
        cand_key()[j] = __ldcg(ws_key + j);
        cand_idx()[j] = __ldcg(ws_idx + j);
    }
    __syncthreads();  // every thread has read the counters
    if (tid == 0) {
        sh.count = total;
        counters[0] = 0;
        counters[1] = 0;
    }
    __syncthreads();
    return true;
}

// The index just past the `needed`-th score of key `tie` in index order (the first `needed` ties
// lie before it), or 0 when the row has fewer. `tie` is a sampled plateau's key (never NaN's). In
// chunks of the row, each warp takes 8 words of 32 consecutive scores, a ballot a word; the
// chunk's words are then counted in index order, and the warp whose words hold the needed-th tie
// finds its bit. A plateau's ties are dense: one chunk, as a rule. (The selection's walk with
// topk::ordered_select_row also wrote each tie's index, which the output then wrote again.)
__device__ int find_tie_end(const float* __restrict__ x, int n, uint32_t tie, int needed, Shared& sh) {
    constexpr int kWordsPerWarp = 8;
    constexpr int kChunk = 32 * kWordsPerWarp * kWarps;
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    // The tie's bits, and -0.0's too when it is zero (one key, two floats).
    const uint32_t bits = tie >= topk::kSignBit ? tie & topk::kAbsMask : ~tie;
    const uint32_t bits2 = tie == topk::kSignBit ? topk::kSignBit : bits;
    if (threadIdx.x == 0) sh.tie_end = 0;
    int remaining = needed;  // ties still to find from this chunk on
    for (int c0 = 0; c0 < n; c0 += kChunk) {
        const int first = c0 + 32 * kWordsPerWarp * warp;  // this warp's first score
        uint32_t b[kWordsPerWarp];
#pragma unroll
        for (int j = 0; j < kWordsPerWarp; ++j) {
            const int i = first + 32 * j + lane;
            b[j] = i < n ? __float_as_uint(__ldg(x + i)) : ~bits;
        }
        uint32_t words[kWordsPerWarp];
        int warp_ties = 0;
#pragma unroll
        for (int j = 0; j < kWordsPerWarp; ++j) {
            words[j] = __ballot_sync(topk::kFullMask, b[j] == bits || b[j] == bits2);
            warp_ties += __popc(words[j]);
        }
        if (lane == 0) sh.scratch[warp] = warp_ties;
        __syncthreads();
        const int warp_total = lane < kWarps ? sh.scratch[lane] : 0;
        const int before = __reduce_add_sync(topk::kFullMask, lane < warp ? warp_total : 0);
        const int chunk_ties = __reduce_add_sync(topk::kFullMask, warp_total);
        if (remaining > before && remaining <= before + warp_ties) {
            int r = remaining - before;  // the needed-th tie is this warp's r-th
#pragma unroll
            for (int j = 0; j < kWordsPerWarp; ++j) {
                const int in_word = __popc(words[j]);
                if (r > 0 && r <= in_word) {
                    // The lane whose bit is the word's r-th set bit.
                    const bool mine = (words[j] >> lane) & 1u && __popc(words[j] & ((2u << lane) - 1u)) == r;
                    const uint32_t at = __ballot_sync(topk::kFullMask, mine);
                    if (lane == 0) sh.tie_end = first + 32 * j + __ffs(at);
                }
                r -= in_word;
            }
        }
        __syncthreads();
        if (sh.tie_end != 0) break;
        remaining -= chunk_ties;
    }
    return sh.tie_end;
}

// The rank of entry (fk, i) among a list's `tied` entries: those of greater keys, then of equal
// keys and lower indices, come first.
__device__ __forceinline__ int list_rank(const uint32_t* list_key, const int* list_index, int tied, uint32_t fk, int i) {
    int rank = 0;
    for (int u = 0; u < tied; ++u) {
        const uint32_t other = list_key[u];
        rank += other > fk || (other == fk && list_index[u] < i);
    }
    return rank;
}

// The buffered elements (c of them) with keys in [first, last] (`tied`, at most kRankMax), ranked
// against each other by value, then index (lower first): the one of rank needed - 1 is the last
// selected, its key and index go to sh.boundary_key and sh.boundary_index. The list lives in the
// histogram.
__device__ void rank_bucket(uint32_t first, uint32_t last, int c, int tied, int needed, Shared& sh) {
    const int tid = threadIdx.x;
    uint32_t* list_key = reinterpret_cast<uint32_t*>(sh.hist);
    int* list_index = sh.hist + kRankMax;
    // sh.listed is 0 (the row's start); choose_bucket's last barrier ended every read of the histogram.
    for (int j = tid; j < c; j += kBlock) {
        const uint32_t fk = cand_key()[j];
        if (fk - first <= last - first) {
            const int slot = atomicAdd(&sh.listed, 1);
            list_key[slot] = fk;
            list_index[slot] = cand_idx()[j];
        }
    }
    __syncthreads();
    if (tid < tied) {
        const uint32_t fk = list_key[tid];
        const int i = list_index[tid];
        if (list_rank(list_key, list_index, tied, fk, i) == needed - 1) {
            sh.boundary_key = fk;
            sh.boundary_index = i;
        }
    }
    __syncthreads();
}

// The output's bitmap (the histogram's words: rows of at most 32 kBins scores) of the selection
// that a bucket of keys [first, last] decides, `tied` (at most kRankMax) entries of which the
// `needed` first are selected: one pass over the buffer marks every entry above the bucket and
// lists the bucket's entries past the buffer's end (c + kRankMax <= kCapacity), which are then
// ranked and marked. rank_bucket and a later marking pass took a pass over the buffer and two
// barriers more (H200, normal scores, k=2048: 1024 x 32768 2.12 -> 2.04x the read floor, 64 x 32768
// 3.84 -> 3.67; the select phase 6.0 -> 5.6 us a row at 128 x 16384). Starts after choose_bucket's
// last barrier; ends with a barrier.
__device__ void mark_ranked_bucket(uint32_t first, uint32_t last, int c, int tied, int needed, int n, Shared& sh) {
    const int tid = threadIdx.x;
    uint32_t* bitmap = reinterpret_cast<uint32_t*>(sh.hist);
    uint32_t* list_key = cand_key() + c;
    int* list_index = cand_idx() + c;
    auto mark = [&](int i) { atomicOr(&bitmap[i >> 5], 1u << (i & 31)); };
    for (int w = tid; w < (n + 31) >> 5; w += kBlock) bitmap[w] = 0u;
    __syncthreads();
    for (int j = tid; j < c; j += kBlock) {
        const uint32_t fk = cand_key()[j];
        if (fk - first <= last - first) {
            const int slot = atomicAdd(&sh.listed, 1);
            list_key[slot] = fk;
            list_index[slot] = cand_idx()[j];
        } else if (fk > last) {
            mark(cand_idx()[j]);
        }
    }
    __syncthreads();
    if (tid < tied) {
        const int i = list_index[tid];
        if (list_rank(list_key, list_index, tied, list_key[tid], i) < needed) mark(i);
    }
    __syncthreads();
}

// The selection when the buffer holds it: `c` elements >= th.t are buffered, and either they
// hold the k-th largest (c >= k, c <= kCapacity) or, on a plateau with c < k, the k-th may be
// th.tie. Writes the selected set in ascending index order and returns true; or returns false,
// having written nothing of use, when the plateau's row has fewer than k - c ties (the k-th value
// lies below the plateau).
__device__ __forceinline__ bool write_selected(const float* __restrict__ x, int n, int* __restrict__ o, int k,
                                               Threshold th, int c, Shared& sh) {
    const int tid = threadIdx.x;
    const uint32_t tie = th.tie;
    const bool from_buffer = c >= k;
    // Which buffer entries are selected, and which row ties at t - 1 join them.
    topk::KeyPrefix key;    // from_buffer: the k-th key's prefix
    topk::KeyPrefix index;  // from_buffer, more ties than needed: the needed-th lowest tie index
    bool all_ties = true;
    int tie_end = 0;        // plateau: row ties at t - 1 with index < tie_end are selected
    // Rows of at most 32 kBins scores take the histogram's words for the output's bitmap (one
    // window); longer ones the keys' words.
    const bool in_histogram = n <= 32 * kBins;
    bool marked = false;    // the bitmap is complete (mark_ranked_bucket)
    Scan ts(sh.scan_totals);
    if (from_buffer) {
        // One pass turns the buffer's raw bits into keys and bins their offsets from t (every
        // buffered key is >= t) in 2048 bins up to the sample's highest coarse bin (keys above it,
        // some n / samples of the row's, share the top bin): one 11-bit digit that picks the k-th's
        // bucket. Offsets, not a prefix digit: buffered keys often straddle a power of two, 0.9 to
        // 4.0 on a 16K row of normal scores, where a prefix digit's top bits go to the exponent and
        // its bins are an eighth of an octave wide, ~470 candidates in the k-th's. The bounds of
        // the buffered keys, a pass and a barrier more, are found only for a fuller bucket. A
        // bucket of at most kRankMax elements (the usual case: a few thousand keys over 2048 bins)
        // is finished by ranking its elements against each other.
        const uint32_t origin = th.t;
        const uint32_t top_coarse = sh.sample_top << kCoarseShift;
        const uint32_t top = topk::coarse_key_range(top_coarse, top_coarse + (1u << kCoarseShift) - 1u).last;
        const int width = 32 - __clz(top > origin ? top - origin : 0u);
        const int shift = width > kDigitBits ? width - kDigitBits : 0;
        // The histogram was cleared before the stream.
        for (int j = tid; j < c; j += kBlock) {
            const uint32_t fk = topk::float_key(__uint_as_float(cand_key()[j]));
            cand_key()[j] = fk;
            const uint32_t bin = (fk - origin) >> shift;
            atomicAdd(&sh.hist[bin < kBins ? bin : kBins - 1], 1);
        }
        __syncthreads();
#if FILTERED_TRACE
        if (tid == 0) sh.trace_keys = clock64();
#endif
        topk::choose_bucket<kBins, kBlock>(sh.hist, k, sh.scratch, &sh.choice);
#if FILTERED_TRACE
        if (tid == 0) sh.trace_digit = clock64();
#endif
        int needed = k - sh.choice.above;
        int tied = sh.choice.count;  // buffered elements at key's prefix
        bool ranked = false;
        if (tied <= kRankMax) {
            const uint32_t bucket = sh.choice.bucket;
            const uint32_t first = origin + (bucket << shift);  // a key of the bucket is >= first
            const uint32_t bin_last = (1u << shift) - 1u;
            const uint32_t last = bucket == kBins - 1 || 0xFFFFFFFFu - first < bin_last ? 0xFFFFFFFFu : first + bin_last;
            if (in_histogram && c + kRankMax <= kCapacity) {
                mark_ranked_bucket(first, last, c, tied, needed, n, sh);
                marked = true;
            } else {
                rank_bucket(first, last, c, tied, needed, sh);
                key.set_range(sh.boundary_key, sh.boundary_key);
                index.set_range(~static_cast<uint32_t>(sh.boundary_index),
                                ~static_cast<uint32_t>(sh.boundary_index));
            }
            all_ties = false;
            ranked = true;
        } else {
            // A fuller bucket (many equal or nearly equal keys): the buffered keys' bounds, a
            // prefix digit over the whole buffer, then the radix refinement of the k-th's bucket.
            for (int b = tid; b < kBins; b += kBlock) sh.hist[b] = 0;
            buffer_bounds(c, sh);  // (its barrier: and every thread has read the offsets' choice)
            const uint32_t lo = sh.cand_lo, hi = sh.cand_hi;
            key.set_range(lo, hi);
            needed = k;
            tied = c;
            if (lo != hi) {
                const int dbits = key.digit_bits(kDigitBits);
                const int prefix_shift = key.bits - dbits;
                const uint32_t mask = (1u << dbits) - 1u;
                for (int j = tid; j < c; j += kBlock) atomicAdd(&sh.hist[(cand_key()[j] >> prefix_shift) & mask], 1);
                __syncthreads();
                topk::choose_bucket<kBins, kBlock>(sh.hist, k, sh.scratch, &sh.choice);
                needed = k - sh.choice.above;
                tied = sh.choice.count;
                key.descend(dbits, sh.choice.bucket, lo, hi);
                if (tied > needed) {
                    needed = topk::refine<FILTERED_REFINE_BITS, kBlock>(key, needed, refine_view(sh), [&](auto&& count) {
                        for (int j = tid; j < c; j += kBlock) count(cand_key()[j]);
                    });
                    tied = sh.choice.count;
                }
            }
        }
        if (!ranked && tied > needed) {
            all_ties = false;
            index.set_range(~static_cast<uint32_t>(n - 1), 0xFFFFFFFFu);
            topk::refine<FILTERED_REFINE_BITS, kBlock>(index, needed, refine_view(sh), [&](auto&& count) {
                for (int j = tid; j < c; j += kBlock) {
                    if (key.compare(cand_key()[j]) == 0) count(~static_cast<uint32_t>(cand_idx()[j]));
                }
            });
        }
    } else {
        // The first k - c ties in index order are selected: those before tie_end.
        tie_end = find_tie_end(x, n, tie, k - c, sh);
        if (tie_end == 0) return false;
    }
#if FILTERED_TRACE
    if (tid == 0) sh.trace_refined = clock64();
#endif
    auto selected = [&](int j) {
        if (!from_buffer) return true;
        const int cmp = key.compare(cand_key()[j]);
        return cmp > 0 || (cmp == 0 && (all_ties || index.compare(~static_cast<uint32_t>(cand_idx()[j])) >= 0));
    };

    // The output, window by window in index order: bits of the selected indices (unless
    // mark_ranked_bucket set them), then scans over the window's words, a chunk at a time, place
    // them. Where the keys' words are the bitmap, every unselected entry's index is first set to -1
    // (so that no key is read after the bitmap is cleared).
    if (from_buffer && !in_histogram) {
        for (int j = tid; j < c; j += kBlock) {
            if (!selected(j)) cand_idx()[j] = -1;
        }
    }
    if (!marked) __syncthreads();  // (mark_ranked_bucket ended with one)
    uint32_t* bitmap = in_histogram ? reinterpret_cast<uint32_t*>(sh.hist) : cand_key();
    int written = 0;
    for (int w0 = 0; w0 < n && written < k; w0 += kBitmapWindow) {
        const int w1 = n - w0 < kBitmapWindow ? n : w0 + kBitmapWindow;
        const int nwords = (w1 - w0 + 31) >> 5;
        if (!marked) {
            for (int w = tid; w < nwords; w += kBlock) bitmap[w] = 0u;
            __syncthreads();
            for (int j = tid; j < c; j += kBlock) {
                const int i = cand_idx()[j];
                if (i >= w0 && i < w1 && (!in_histogram || selected(j))) atomicOr(&bitmap[(i - w0) >> 5], 1u << ((i - w0) & 31));
            }
            // The selected ties, a word a warp (a plateau's ties are dense: an atomic a tie would
            // serialise on each word).
            const int ties_to = tie_end < w1 ? tie_end : w1;
            for (int i0 = w0 + (tid & ~31); i0 < ties_to; i0 += kBlock) {
                const int i = i0 + (tid & 31);
                const uint32_t tie_word = __ballot_sync(topk::kFullMask, i < ties_to && topk::float_key(__ldg(x + i)) == tie);
                if ((tid & 31) == 0 && tie_word) atomicOr(&bitmap[(i0 - w0) >> 5], tie_word);
            }
            __syncthreads();
        }
#if FILTERED_TRACE
        if (tid == 0 && w0 == 0) sh.trace_marked = clock64();
#endif
        for (int c0 = 0; c0 < nwords && written < k; c0 += kChunkWords) {
            uint32_t words[kChunkWordsPerThread], bits[kChunkWordsPerThread], before[kChunkWordsPerThread];
#pragma unroll
            for (int u = 0; u < kChunkWordsPerThread; ++u) {
                const int w = c0 + u * kBlock + tid;
                words[u] = w < nwords ? bitmap[w] : 0u;
                bits[u] = __popc(words[u]);
            }
            const uint32_t total = ts.template scan<kChunkWordsPerThread>(bits, before);
#pragma unroll
            for (int u = 0; u < kChunkWordsPerThread; ++u) {
                const int slot = written + static_cast<int>(before[u]);
                const int base = w0 + 32 * (c0 + u * kBlock + tid);
                if (__popc(__ballot_sync(topk::kFullMask, __popc(words[u]) > kDenseWordBits)) >= kDenseLanes) {
                    // Dense words (a plateau's selected ties): the warp writes each word together,
                    // a lane a bit, in one coalesced store, instead of each lane walking its
                    // word's bits with a store each.
                    const int lane = tid & 31;
                    const int warp_base = base - 32 * lane;
                    for (int j = 0; j < 32; ++j) {
                        const uint32_t word = __shfl_sync(topk::kFullMask, words[u], j);
                        const int word_slot = __shfl_sync(topk::kFullMask, slot, j);
                        const int s = word_slot + __popc(word & ((1u << lane) - 1u));
                        if ((word >> lane) & 1u && s < k) o[s] = warp_base + 32 * j + lane;
                    }
                } else {
                    // A pointer stepped along the output: indexing o by the slot made the compiler
                    // rebuild the row's 64-bit address for every index written.
                    int* dst = o + slot;
                    int room = k - slot;
                    for (uint32_t word = words[u]; word && room > 0; word &= word - 1u, --room) {
                        *dst++ = base + __ffs(word) - 1;
                    }
                }
            }
            written += static_cast<int>(total);
        }
        __syncthreads();  // every word is read before the next window clears them
    }
    return true;
}

}  // namespace

extern "C" __global__ void __launch_bounds__(FILTERED_BLOCK, FILTERED_MIN_BLOCKS)
filtered_topk(const float* __restrict__ logits, long long stride, const int* __restrict__ lengths, int rows,
              int width, int k, int* __restrict__ out, int parts, int* __restrict__ counters,
              uint32_t* __restrict__ ws_keys, int* __restrict__ ws_idx) {
    __shared__ Shared sh;
    const int tid = threadIdx.x;
    // The sampled path needs long rows and a buffer with room for k and the sample's slack.
    auto sampled_length = [&](int n) { return n > k && n >= FILTERED_MIN_LENGTH && 2 * k <= kCapacity; };
    int staged_item = -1;  // the item whose sample is in (or on its way to) the staging area
    // Work items: (row, part) = (item / parts, item % parts); parts > 1 only when every item has a
    // CTA of its own (topkbench/cuda/one_cta.py), parts == 1 on the persistent grid.
    const int items = rows * parts;

    for (int item = blockIdx.x; item < items; item += gridDim.x) {
        const int row = item / parts;
        const int part = item - row * parts;
        const float* x = logits + static_cast<long long>(row) * stride;
        int* o = out + static_cast<long long>(row) * k;
        const int n = topk::row_length(lengths, row, width);
        if (n <= k) {
            if (part == 0) topk::write_short_row<kBlock>(o, n, k);
            continue;  // no shared state touched
        }
        if (tid == 0) {
            sh.count = 0;
            sh.above = 0;
            sh.fallback_ties = 0;
            sh.cand_lo = 0xFFFFFFFFu;
            sh.cand_hi = 0u;
            sh.listed = 0;
        }
        const bool sampled = sampled_length(n);
        if (!sampled && part != 0) continue;  // the rescanning selection is the first part's
        topk::KeyRange range{0u, 0xFFFFFFFFu};
        int in_range = n, needed = k;
        bool fallback = !sampled;
#if FILTERED_TRACE
        long long clocks[4] = {clock64(), 0, 0, 0};
        unsigned long long ns0;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns0));
        int trace_c = -1, trace_m = -1;
        if (tid == 0) sh.trace_loaded = sh.trace_refined = sh.trace_keys = sh.trace_digit = sh.trace_marked = clocks[0];
#endif
        if (sampled) {
            if (staged_item != item) start_sample(x, n, k);
            const StreamSlice slice(x, n, part, parts);
            StreamBatch batch;
            batch.load(slice, slice.v_begin);  // in flight while the sample sets the threshold
            const Threshold th = sample_threshold(n, k, sh);
#if FILTERED_PREFETCH
            // The staging area is free again (sample_threshold's last barrier): the next row's
            // sample loads while this row streams and selects.
            const int next = item + gridDim.x;
            if (next < items) {
                const int next_row = next / parts;
                const int next_n = topk::row_length(lengths, next_row, width);
                if (sampled_length(next_n)) {
                    start_sample(logits + static_cast<long long>(next_row) * stride, next_n, k);
                    staged_item = next;
                }
            }
#endif
            // The selection's first histogram, cleared while no one reads it (sample_threshold
            // ended with a barrier; the stream's end has one before the selection).
            for (int b = tid; b < kBins; b += kBlock) sh.hist[b] = 0;
#if FILTERED_TRACE
            clocks[1] = clock64();
#endif
            stream_candidates(x, n, th, sh, slice, part, batch);
            __syncthreads();
            if (parts > 1) {
                const long long ws = static_cast<long long>(row) * kCapacity;
                if (!merge_parts(parts, counters + 4 * row, ws_keys + ws, ws_idx + ws, sh)) continue;
            }
            const int c = sh.count;
#if FILTERED_TRACE
            clocks[2] = clock64();
            trace_c = c;
            trace_m = th.plateau && c < k ? k - c : 0;
#endif
            // A plateau with fewer than k elements above it: the selection takes the k - c ties it
            // needs from the row, if the row has them.
            const bool in_buffer = (c >= k && c <= kCapacity) || (c < k && th.plateau);
            if (!in_buffer || !write_selected(x, n, o, k, th, c, sh)) {
                fallback = true;
                if (c >= k) {  // the buffer overflowed: the k-th key is >= t
                    range = {th.t, 0xFFFFFFFFu};
                    in_range = c;
                } else {  // fewer than k reach t (and, on a plateau, k - c ties): all of them are selected
                    // t >= 1: a threshold of 0 passes every score, and n > k
                    range = {0u, th.t - 1u};
                    needed = k - c;
                    in_range = n - c;
                }
            }
        }
        if (fallback) {
            __syncthreads();  // every thread has read the counts
            exact_fallback(x, n, o, k, range, in_range, needed, sh);
        }
#if FILTERED_TRACE
        __syncthreads();
        clocks[3] = clock64();
        unsigned long long ns1;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns1));
        // load: the sample's loads and histogram; refine: the buffer's refinements (0: not run);
        // ns: the row's start and end on the global timer (the CTAs' overlap).
        if (tid == 0)
            printf("filtered row %d cta %d n %d c %d m %d fallback %d cycles sample %lld stream %lld select %lld"
                   " load %lld refine %lld ns %llu %llu marks %lld %lld %lld\n",
                   row, blockIdx.x, n, trace_c, trace_m, fallback ? 1 : 0, clocks[1] - clocks[0], clocks[2] - clocks[1],
                   clocks[3] - clocks[2], sh.trace_loaded - clocks[0],
                   sh.trace_refined > clocks[2] ? sh.trace_refined - clocks[2] : 0ll, ns0, ns1,
                   sh.trace_keys > clocks[2] ? sh.trace_keys - clocks[2] : 0ll,
                   sh.trace_digit > clocks[2] ? sh.trace_digit - clocks[2] : 0ll,
                   sh.trace_marked > clocks[2] ? sh.trace_marked - clocks[2] : 0ll);
#endif
        __syncthreads();  // the next row resets the shared counters and the histogram
    }
}
