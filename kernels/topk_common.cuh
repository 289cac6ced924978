// Shared helpers for topkbench's top-k kernels (per_row, large_context, radix): ordered keys, the
// coarse first digit and the exact key range of a coarse bucket, row bounds, block-wide histogram
// scans, the one radix refinement loop, and the block-wide stable compaction that makes the
// deterministic kernels' output a pure function of their input.
//
// The Python loader inlines this header into each kernel's source string (CuPy's cache keys on the
// source text only, so an edited header recompiles every kernel).
//
// No float instruction touches a key. CuPy appends -ftz=true to every NVRTC compile, after the
// caller's options (cupy/cuda/compiler.py), so any float add, compare or min/max in a kernel becomes
// a .ftz instruction that reads subnormal inputs as zero: `value + 0.0f` (once used here to fold
// -0.0 into +0.0) made every subnormal score tie with 0.0. Keys are therefore built from the raw
// bits with integer operations only, and tests/test_kernel_compile.py compiles every kernel variant
// to PTX with -ftz=true and fails on any .ftz instruction.
#pragma once

#include <cooperative_groups.h>
#if defined(__CUDACC_RTC__)
// NVRTC (CuPy's compiler) has no C library headers. These widths are the same type under every
// CUDA ABI, so repeating a typedef another header may already have made is harmless.
typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
#else
#include <stdint.h>
#endif

namespace topk {

constexpr unsigned kFullMask = 0xFFFFFFFFu;
constexpr uint32_t kSignBit = 0x80000000u;
constexpr uint32_t kAbsMask = 0x7FFFFFFFu;
constexpr uint32_t kInfBits = 0x7F800000u;
constexpr uint32_t kTopKey = 0xFFFFFFFFu;  // the key of every NaN

// ---------------------------------------------------------------------------------------------
// Keys (topkbench/keys.py holds the Python twins; tests compare them on the GPU).

// Unsigned key whose order is the float order: flip every bit of negatives, the sign bit of
// positives. -0.0 and +0.0 map to one key; every NaN maps to the top key, because the contract
// (like torch.topk) ranks NaN above +inf. Subnormals keep their own keys (integer operations only).
__device__ __forceinline__ uint32_t float_key(float value) {
    uint32_t bits = __float_as_uint(value);
    if ((bits & kAbsMask) > kInfBits) return kTopKey;  // NaN, any sign and payload
    if (bits == kSignBit) bits = 0u;                    // -0.0 is +0.0
    return (bits & kSignBit) ? ~bits : (bits | kSignBit);
}

// The coarse first digit: a 16-bit key, monotone (non-strictly) in float_key, with fp16's
// resolution over a similar range: the sign, then the low 5 exponent bits and the top 10 mantissa
// bits of |x| clamped to [2^-15, 2^17). Everything smaller in magnitude (zeros, subnormals) shares
// the code next to 0x8000 on its side; everything larger, +-inf and NaN (positive: 0xFFFF) the
// end codes. Integer operations only: unlike a float-to-half conversion it needs no flush-to-zero
// reasoning, and coarse_key_range below is its exact inverse.
constexpr int kCoarseMantissaShift = 13;            // fp32 mantissa bits dropped (23 - 10)
constexpr uint32_t kCoarseMagLo = 112u << 23;       // |x| = 2^-15
constexpr uint32_t kCoarseMagHi = kCoarseMagLo + (0x8000u << kCoarseMantissaShift) - 1u;  // below 2^17
__device__ __forceinline__ uint32_t coarse_key(float value) {
    const uint32_t bits = __float_as_uint(value);
    const uint32_t mag = bits & kAbsMask;
    const uint32_t h = (min(max(mag, kCoarseMagLo), kCoarseMagHi) - kCoarseMagLo) >> kCoarseMantissaShift;
    // Negative, and neither -0.0 nor a NaN with the sign bit set (NaN is the top, like +inf).
    const bool negative = bits - (kSignBit + 1u) < kInfBits;
    return h ^ (negative ? 0x7FFFu : 0x8000u);
}

// Magnitude bits of the floats whose coarse magnitude code is h.
__device__ __forceinline__ uint32_t coarse_mag_first(uint32_t h) {
    return h == 0u ? 0u : kCoarseMagLo + (h << kCoarseMantissaShift);
}
__device__ __forceinline__ uint32_t coarse_mag_last(uint32_t h) {
    return h == 0x7FFFu ? kAbsMask : kCoarseMagLo + (h << kCoarseMantissaShift) + ((1u << kCoarseMantissaShift) - 1u);
}

struct KeyRange {
    uint32_t first, last;  // inclusive fp32 key bounds
};

// Exact fp32 key range of the values whose coarse key lies in [lo, hi] (lo <= hi <= 0xFFFF): the
// coarse codes cut the key space into consecutive intervals, so a value is in the range if and
// only if its key is (on the negative side the key of a magnitude m is 0x7FFFFFFF - m).
__device__ __forceinline__ KeyRange coarse_key_range(uint32_t lo, uint32_t hi) {
    KeyRange r;
    r.first = (lo & 0x8000u) ? kSignBit + coarse_mag_first(lo & 0x7FFFu) : kAbsMask - coarse_mag_last(0x7FFFu - lo);
    r.last = (hi & 0x8000u) ? kSignBit + coarse_mag_last(hi & 0x7FFFu) : kAbsMask - coarse_mag_first(0x7FFFu - hi);
    return r;
}

// Valid length of row `row`: the lengths array may be null (every row full width); values are
// clamped to [0, width] so that a bad length can never make a kernel read or write out of bounds.
__device__ __forceinline__ int row_length(const int* lengths, int row, int width) {
    if (lengths == nullptr) return width;
    int n = lengths[row];
    return n < 0 ? 0 : (n > width ? width : n);
}

// Logical right shift that is defined for 32 (every key then shares the empty prefix 0).
__device__ __forceinline__ uint32_t shr(uint32_t key, int bits) { return bits >= 32 ? 0u : key >> bits; }

// ---------------------------------------------------------------------------------------------
// Block-level helpers. Every function taking BLOCK must be called by all BLOCK threads of the
// block, with blockDim.x == BLOCK.

// Rows with n <= k: indices 0..n-1 in the first n slots, then -1 (the contract's exact layout).
template <int BLOCK>
__device__ __forceinline__ void write_short_row(int* out, int n, int k) {
    for (int j = threadIdx.x; j < k; j += BLOCK) out[j] = j < n ? j : -1;
}

// Histogram adds through a per-thread run-length counter: plateaus of equal keys (ReLU zeros,
// constant rows) would otherwise send every lane of a warp to one shared-memory address and
// serialise; a run costs one atomic however long it is, and distinct keys cost what they did.
struct RunCounter {
    int bin = -1;
    int count = 0;
    __device__ __forceinline__ void add(int* hist, int b) {
        if (b == bin) {
            ++count;
        } else {
            if (count) atomicAdd(&hist[bin], count);
            bin = b;
            count = 1;
        }
    }
    __device__ __forceinline__ void flush(int* hist) {
        if (count) atomicAdd(&hist[bin], count);
        bin = -1;
        count = 0;
    }
    // Four neighbours at once: equal ones (plateaus) join the run; distinct ones (typical scores)
    // take plain atomics, skipping the run bookkeeping that would not pay for itself there.
    __device__ __forceinline__ void add4(int* hist, int b0, int b1, int b2, int b3) {
        if (b0 == b1 && b1 == b2 && b2 == b3) {
            if (b0 == bin) {
                count += 4;
            } else {
                if (count) atomicAdd(&hist[bin], count);
                bin = b0;
                count = 4;
            }
        } else {
            atomicAdd(&hist[b0], 1);
            atomicAdd(&hist[b1], 1);
            atomicAdd(&hist[b2], 1);
            atomicAdd(&hist[b3], 1);
        }
    }
};

// One slot from a shared counter for each calling lane, one atomic per warp (callable from
// divergent code: the group is whichever lanes arrived together). The slot order depends on
// scheduling: only the non-deterministic kernels use it.
__device__ __forceinline__ int reserve_slot(int* counter) {
    namespace cg = cooperative_groups;
    cg::coalesced_group group = cg::coalesced_threads();
    int base = 0;
    if (group.thread_rank() == 0) base = atomicAdd(counter, static_cast<int>(group.size()));
    return group.shfl(base, 0) + static_cast<int>(group.thread_rank());
}

struct BucketChoice {
    int bucket;  // the bucket where the running count from the top reaches `needed`
    int above;   // elements in buckets above it (all selected)
    int count;   // elements in it
};

// Scans a histogram of NB bins from the top and picks the bucket holding the needed-th largest
// element (needed must be in [1, total]). Reads `hist` after a barrier the caller provides; the
// result is in `choice` for every thread on return. `scratch` holds BLOCK/32 ints.
template <int NB, int BLOCK>
__device__ void choose_bucket(const int* hist, int needed, int* scratch, BucketChoice* choice) {
    static_assert(BLOCK % 32 == 0 && BLOCK <= 1024, "BLOCK must be a multiple of 32, at most 1024");
    constexpr int PER = (NB + BLOCK - 1) / BLOCK;
    constexpr int WARPS = BLOCK / 32;
    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    int local[PER];
    int sum = 0;
#pragma unroll
    for (int p = 0; p < PER; ++p) {
        const int b = tid * PER + p;
        local[p] = b < NB ? hist[b] : 0;
        sum += local[p];
    }
    int inclusive = sum;
#pragma unroll
    for (int offset = 1; offset < 32; offset <<= 1) {
        const int t = __shfl_up_sync(kFullMask, inclusive, offset);
        if (lane >= offset) inclusive += t;
    }
    if (lane == 31) scratch[warp] = inclusive;
    __syncthreads();
    if (warp == 0) {
        int w = lane < WARPS ? scratch[lane] : 0;
#pragma unroll
        for (int offset = 1; offset < 32; offset <<= 1) {
            const int t = __shfl_up_sync(kFullMask, w, offset);
            if (lane >= offset) w += t;
        }
        if (lane < WARPS) scratch[lane] = w;
    }
    __syncthreads();
    const int total = scratch[WARPS - 1];
    const int before = (warp ? scratch[warp - 1] : 0) + inclusive;  // bins of threads <= tid
    int above = total - before;                                      // bins of threads > tid
#pragma unroll
    for (int p = PER - 1; p >= 0; --p) {
        const int b = tid * PER + p;
        const int c = local[p];
        if (b < NB && above < needed && above + c >= needed) {
            choice->bucket = b;
            choice->above = above;
            choice->count = c;
        }
        above += c;
    }
    __syncthreads();
}

// Min and max of per-thread key ranges into shared words (which the caller set to ~0u and 0).
__device__ __forceinline__ void block_minmax(uint32_t lo, uint32_t hi, uint32_t* shared_lo, uint32_t* shared_hi) {
    lo = __reduce_min_sync(kFullMask, lo);
    hi = __reduce_max_sync(kFullMask, hi);
    if ((threadIdx.x & 31) == 0) {
        atomicMin(shared_lo, lo);
        atomicMax(shared_hi, hi);
    }
}

// Radix state over fp32 keys: the candidates are the keys whose top (32 - bits) bits equal
// `prefix`. Ranges are narrowed to the common prefix of known bounds, so digits that every
// candidate shares cost no pass (after a coarse first digit, most of the top fp32 bits are fixed).
struct KeyPrefix {
    uint32_t prefix;
    int bits;  // low bits still undecided; 32 = nothing decided

    __device__ __forceinline__ void set_all() {
        prefix = 0u;
        bits = 32;
    }
    __device__ __forceinline__ void set_range(uint32_t lo, uint32_t hi) {
        bits = lo == hi ? 0 : 32 - __clz(lo ^ hi);
        prefix = shr(lo, bits);
    }
    __device__ __forceinline__ bool matches(uint32_t key) const { return shr(key, bits) == prefix; }
    // +1 above the prefix, 0 inside it, -1 below.
    __device__ __forceinline__ int compare(uint32_t key) const {
        const uint32_t top = shr(key, bits);
        return top > prefix ? 1 : (top == prefix ? 0 : -1);
    }
    // The next digit is `digit_bits` wide at shift bits - digit_bits.
    __device__ __forceinline__ int digit_bits(int max_bits) const { return bits < max_bits ? bits : max_bits; }
    // Keep `bucket` of the digit just histogrammed; [lo, hi] bounds the keys that were counted.
    __device__ __forceinline__ void descend(int dbits, uint32_t bucket, uint32_t lo, uint32_t hi) {
        const int shift = bits - dbits;
        const uint32_t next = (bits >= 32 ? 0u : prefix << dbits) | bucket;
        const uint32_t first = next << shift;
        const uint32_t last = first | ((1u << shift) - 1u);
        set_range(lo > first ? lo : first, hi < last ? hi : last);
    }
};

// Shared state of the refinement loop (all shared memory).
struct RefineShared {
    int* hist;  // 1 << DIGIT_BITS bins
    int* scratch;  // BLOCK / 32 ints
    BucketChoice* choice;
    uint32_t* lo;
    uint32_t* hi;
};

// The radix descent, shared by every one-CTA kernel: narrows `key` one DIGIT_BITS-wide digit per
// pass to the prefix of the needed-th largest candidate, until the prefix is a single key or the
// chosen bucket holds exactly the elements still needed. `for_each_key(f)` calls f(fk) once for
// the key of every candidate in the block (candidates outside `key` are skipped here). Returns how
// many elements at the final prefix are still needed; k - that many lie above it.
template <int DIGIT_BITS, int BLOCK, typename ForEachKey>
__device__ int refine(KeyPrefix& key, int needed, const RefineShared& sh, ForEachKey&& for_each_key) {
    constexpr int NB = 1 << DIGIT_BITS;
    const int tid = threadIdx.x;
    while (key.bits > 0) {
        const int dbits = key.digit_bits(DIGIT_BITS);
        const int shift = key.bits - dbits;
        const uint32_t mask = (1u << dbits) - 1u;
        for (int b = tid; b < NB; b += BLOCK) sh.hist[b] = 0;
        if (tid == 0) {
            *sh.lo = 0xFFFFFFFFu;
            *sh.hi = 0u;
        }
        __syncthreads();
        uint32_t lo = 0xFFFFFFFFu, hi = 0u;
        RunCounter run;
        for_each_key([&](uint32_t fk) {
            if (!key.matches(fk)) return;
            run.add(sh.hist, static_cast<int>((fk >> shift) & mask));
            lo = min(lo, fk);
            hi = max(hi, fk);
        });
        run.flush(sh.hist);
        block_minmax(lo, hi, sh.lo, sh.hi);
        __syncthreads();
        choose_bucket<NB, BLOCK>(sh.hist, needed, sh.scratch, sh.choice);
        needed -= sh.choice->above;
        const bool exact = sh.choice->count == needed;
        key.descend(dbits, sh.choice->bucket, *sh.lo, *sh.hi);
        __syncthreads();  // everyone has read lo/hi before the next pass resets them
        if (exact) break;
    }
    return needed;
}

// ---------------------------------------------------------------------------------------------
// Deterministic output: block-wide stable compaction. The deterministic kernels write the
// selected set (the lowest-index ties at the k-th value) in ascending index order.
//
// A block-wide loop visits a tile at a time, in index order. A tile is U sub-tiles; in sub-tile u
// thread t's elements follow those of threads < t, and sub-tile u follows sub-tile u - 1 (the
// order of for_each_float's loads). TileScan::scan turns each thread's per-sub-tile counts into
// the count of the tile's elements before them, so an element's output slot depends on the input
// alone, never on scheduling (no slot counter, no atomic). Counts are packed: the caller chooses
// fields wide enough for a whole tile's total. One __syncthreads per tile: the warp totals are
// double buffered, and a warp can only reuse a buffer after every warp has passed the barrier of
// the tile in between.
template <int BLOCK, int MAX_U>
struct TileScan {
    static constexpr int kWarps = BLOCK / 32;
    static constexpr int kWords = 2 * MAX_U * kWarps;  // shared words the caller provides
    uint32_t* totals;
    int parity;

    __device__ __forceinline__ explicit TileScan(uint32_t* shared_totals) : totals(shared_totals), parity(0) {}

    // offset[u] = the packed count of the tile's elements before this thread's sub-tile u;
    // returns the tile's packed total. Called by all BLOCK threads.
    template <int U>
    __device__ __forceinline__ uint32_t scan(const uint32_t (&count)[U], uint32_t (&offset)[U]) {
        static_assert(U >= 1 && U <= MAX_U, "sub-tiles per thread out of range");
        const int lane = threadIdx.x & 31;
        const int warp = threadIdx.x >> 5;
        uint32_t incl[U];
#pragma unroll
        for (int u = 0; u < U; ++u) incl[u] = count[u];
#pragma unroll
        for (int d = 1; d < 32; d <<= 1) {
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const uint32_t t = __shfl_up_sync(kFullMask, incl[u], d);
                if (lane >= d) incl[u] += t;
            }
        }
        uint32_t* tot = totals + parity * (MAX_U * kWarps);
        parity ^= 1;
        if (lane == 31) {
#pragma unroll
            for (int u = 0; u < U; ++u) tot[u * kWarps + warp] = incl[u];
        }
        __syncthreads();
        uint32_t run = 0u;
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const uint32_t v = lane < kWarps ? tot[u * kWarps + lane] : 0u;
            const uint32_t before = __reduce_add_sync(kFullMask, lane < warp ? v : 0u);
            offset[u] = run + before + incl[u] - count[u];
            run += __reduce_add_sync(kFullMask, v);
        }
        return run;
    }
};

// Classes of an element in a final pass, and their packed increments (ties in the high half).
enum : uint32_t { kNone = 0u, kAbove = 1u, kTie = 2u };
constexpr uint32_t kTieUnit = 1u << 16;
__device__ __forceinline__ uint32_t class_count(uint32_t cls) {
    return cls == kAbove ? 1u : (cls == kTie ? kTieUnit : 0u);
}

// Number of leading elements handled as scalars (the row's 16-byte misalignment), at most n.
__device__ __forceinline__ int vector_head(const float* row, int n) {
    const int head = static_cast<int>(((16u - (static_cast<uint32_t>(reinterpret_cast<unsigned long long>(row)) & 15u)) & 15u) >> 2);
    return head < n ? head : n;
}

// Calls f1(i, v) or f4(i, float4 of i..i+3) for every element of row[0, n), 16-byte loads for
// the aligned body, scalar head and tail (rows may start anywhere when stride is not a
// multiple of 4). UNROLL loads are issued before any is used, to keep enough bytes in flight.
// STREAM marks data read once (evict-first), so it does not push reused data out of L2.
template <int BLOCK, int UNROLL, bool STREAM, typename F1, typename F4>
__device__ __forceinline__ void for_each_float(const float* __restrict__ row, int n, F1&& f1, F4&& f4) {
    const int tid = threadIdx.x;
    const int head = vector_head(row, n);
    if (tid < head) f1(tid, STREAM ? __ldcs(row + tid) : __ldg(row + tid));
    const float4* vec = reinterpret_cast<const float4*>(row + head);
    const int nvec = (n - head) >> 2;
    for (int v0 = tid; v0 < nvec; v0 += BLOCK * UNROLL) {
        float4 buf[UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const int v = v0 + u * BLOCK;
            if (v < nvec) buf[u] = STREAM ? __ldcs(vec + v) : __ldg(vec + v);
        }
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const int v = v0 + u * BLOCK;
            if (v < nvec) f4(head + 4 * v, buf[u]);
        }
    }
    const int tail = head + 4 * nvec + tid;
    if (tail < n) f1(tail, STREAM ? __ldcs(row + tail) : __ldg(row + tail));
}

// When an ordered pass may stop before the end of the row.
enum StopRule : int {
    kStopNever = 0,    // visit every element (a pass that also builds a histogram)
    kStopWhenFull = 1, // once every above element and the needed ties are written
    kStopAfterTies = 2 // once the needed ties are written (the above elements past them already are)
};

// Deterministic pass over row x[0, n) in index order: `classify(fk)` says whether an element is
// above the threshold (kAbove), equal to it (kTie) or neither; it is called once per element, in
// index order within each thread. The selected elements are the above ones and the first
// `needed` ties in index order; each goes to out[its rank among the selected] (the selected set
// in ascending index order): above elements before i + min(ties before i, needed). Tiles of
// BLOCK * 4 * U elements (U float4 loads in flight per thread), one TileScan each (ties in the
// high 16 bits: BLOCK * 4 * U must stay below 65536).
template <int BLOCK, int U, int MAX_U, typename Classify>
__device__ void ordered_select_row(const float* __restrict__ x, int n, int* __restrict__ out, int above_total,
                                   int needed, StopRule stop, TileScan<BLOCK, MAX_U>& ts, Classify&& classify) {
    static_assert(BLOCK * 4 * U < 65536, "tile too large for 16-bit packed counts");
    const int tid = threadIdx.x;
    int above_base = 0, tie_base = 0;  // above elements and ties before this tile (every thread)
    auto put = [&](int i, uint32_t cls, uint32_t off) {
        const int above = above_base + static_cast<int>(off & 0xFFFFu);  // above elements before i
        const int tie = tie_base + static_cast<int>(off >> 16);           // ties before i
        if (cls == kAbove) {
            if (above < above_total) out[above + min(tie, needed)] = i;
        } else if (cls == kTie && tie < needed) {
            out[above + tie] = i;
        }
    };
    auto advance = [&](uint32_t total) {
        above_base += static_cast<int>(total & 0xFFFFu);
        tie_base += static_cast<int>(total >> 16);
        return (stop == kStopWhenFull && above_base >= above_total && tie_base >= needed) ||
               (stop == kStopAfterTies && tie_base >= needed);
    };
    // One scalar element per thread (the misaligned head or the tail of the row).
    auto scalar_tile = [&](int i0, int count) {
        uint32_t cls = kNone;
        uint32_t c[1] = {0u}, off[1];
        if (tid < count) {
            cls = classify(float_key(__ldg(x + i0 + tid)));
            c[0] = class_count(cls);
        }
        const uint32_t total = ts.template scan<1>(c, off);
        if (tid < count) put(i0 + tid, cls, off[0]);
        return advance(total);
    };
    const int head = vector_head(x, n);
    if (head > 0 && scalar_tile(0, head)) return;
    const float4* vec = reinterpret_cast<const float4*>(x + head);
    const int nvec = (n - head) >> 2;
    for (int v0 = 0; v0 < nvec; v0 += BLOCK * U) {
        float4 q[U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int v = v0 + u * BLOCK + tid;
            if (v < nvec) q[u] = __ldg(vec + v);
        }
        uint32_t cls[U], c[U], off[U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            cls[u] = 0u;
            c[u] = 0u;
            if (v0 + u * BLOCK + tid < nvec) {
                const uint32_t c0 = classify(float_key(q[u].x));
                const uint32_t c1 = classify(float_key(q[u].y));
                const uint32_t c2 = classify(float_key(q[u].z));
                const uint32_t c3 = classify(float_key(q[u].w));
                cls[u] = c0 | (c1 << 2) | (c2 << 4) | (c3 << 6);
                c[u] = class_count(c0) + class_count(c1) + class_count(c2) + class_count(c3);
            }
        }
        const uint32_t total = ts.template scan<U>(c, off);
#pragma unroll
        for (int u = 0; u < U; ++u) {
            if (cls[u] == 0u) continue;
            const int i = head + 4 * (v0 + u * BLOCK + tid);
            uint32_t o = off[u];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const uint32_t ce = (cls[u] >> (2 * e)) & 3u;
                put(i + e, ce, o);
                o += class_count(ce);
            }
        }
        if (advance(total)) return;
    }
    const int tail0 = head + 4 * nvec;
    if (tail0 < n) scalar_tile(tail0, n - tail0);
}

// Block shared state that rescan_select works in (all shared memory).
struct RescanShared {
    RefineShared refine;
    int* above;  // slot counters (non-deterministic final pass), zero on entry
    int* ties;
    uint32_t* scan_totals;  // TileScan<BLOCK, FINAL_UNROLL>::kWords words (deterministic final pass)
};

// Exact selection within a row whose threshold bucket is known as the fp32 key range
// [range.first, range.last], holding `bucket_count` elements, with `needed` slots left for it
// (k - needed elements lie above range.last). Refines by rescanning the row from global memory
// with DIGIT_BITS-wide fp32 digits, each pass counting only the keys in the range that match the
// prefix chosen so far; then one final pass writes what is above the threshold and the ties up to
// k. `take_all`: the whole range is selected (no refinement).
//
// DET: the output is the selected set in ascending index order with the lowest-index ties
// (ordered_select_row), a pure function of the input. On plateau rows (the bucket holds at least
// kPlateauFactor times the elements still needed, and EARLY_TIES) the first refinement pass also
// writes the elements above the range, in index order, where they go if all the needed ties come
// before them; if the refinement then leaves no element of the range above the threshold, the
// final pass only has to walk the row until the needed ties are found (a plateau row's ties are
// dense, so it stops early) and place the above elements it meets on the way.
// Otherwise slots come from shared counters: the first refinement pass already writes the
// elements above the range, and the final pass stops once all k slots are taken (plateaus); the
// order and the tie set depend on scheduling.
enum : int { kPlateauFactor = 8 };

template <int BLOCK, int UNROLL, int DIGIT_BITS, bool DET, int FINAL_UNROLL, bool EARLY_TIES>
__device__ void rescan_select(const float* __restrict__ x, int n, int* __restrict__ out, int k, KeyRange range,
                              int bucket_count, int needed, bool take_all, const RescanShared& sh) {
    const uint32_t first = range.first, last = range.last;
    const int needed0 = needed;
    const int above0 = k - needed0;  // elements above the range, all selected
    TileScan<BLOCK, FINAL_UNROLL> ts(sh.scan_totals);
    const bool prewrite = DET && EARLY_TIES && !take_all && bucket_count >= kPlateauFactor * needed0;
    bool prewritten = false;
    KeyPrefix key;
    bool above_written = false;
    if (take_all) {
        key.set_all();
    } else {
        key.set_range(first, last);
        needed = refine<DIGIT_BITS, BLOCK>(key, needed, sh.refine, [&](auto&& count) {
            if constexpr (DET) {
                if (prewrite && !prewritten) {
                    // In index order: the elements above the range to out[needed0 + their rank].
                    ordered_select_row<BLOCK, FINAL_UNROLL>(x, n, out + needed0, above0, 0, kStopNever, ts,
                                                            [&](uint32_t fk) {
                                                                if (fk > last) return kAbove;
                                                                if (fk >= first) count(fk);
                                                                return kNone;
                                                            });
                    prewritten = true;
                    return;
                }
            }
            const bool emit = !DET && !above_written;
            auto visit = [&](int i, float v) {
                const uint32_t fk = float_key(v);
                if (fk > last) {
                    if (emit) {
                        const int slot = reserve_slot(sh.above);
                        if (slot < above0) out[slot] = i;
                    }
                    return;
                }
                if (fk >= first) count(fk);
            };
            for_each_float<BLOCK, UNROLL, false>(
                x, n, [&](int i, float v) { visit(i, v); },
                [&](int i, float4 v) {
                    visit(i, v.x);
                    visit(i + 1, v.y);
                    visit(i + 2, v.z);
                    visit(i + 3, v.w);
                });
            above_written = !DET;
        });
    }
    const int above_total = k - needed;

    if constexpr (DET) {
        // No element of the range above the threshold: the prewritten above elements past the
        // needed ties are in place already.
        const StopRule stop = prewritten && needed == needed0 ? kStopAfterTies : kStopWhenFull;
        ordered_select_row<BLOCK, FINAL_UNROLL>(x, n, out, above_total, needed, stop, ts, [&](uint32_t fk) {
            if (fk > last) return kAbove;
            if (fk < first) return kNone;
            const int cmp = key.compare(fk);
            return cmp > 0 ? kAbove : (cmp == 0 ? kTie : kNone);
        });
    } else {
        // Every slot is accounted for in advance (k - needed above, needed ties), so a thread
        // stops once all are taken: plateau rows fill their ties early.
        const int tid = threadIdx.x;
        volatile int* above_count = sh.above;
        volatile int* tie_count = sh.ties;
        auto select = [&](int i, float v) {
            const uint32_t fk = float_key(v);
            if (fk < first) return;
            int cmp = 1;
            if (fk <= last) {
                cmp = key.compare(fk);
            } else if (above_written) {
                return;
            }
            if (cmp > 0) {
                const int slot = reserve_slot(sh.above);
                if (slot < above_total) out[slot] = i;
            } else if (cmp == 0 && *tie_count < needed) {
                const int slot = reserve_slot(sh.ties);
                if (slot < needed) out[above_total + slot] = i;
            }
        };
        const int head = vector_head(x, n);
        if (tid < head) select(tid, __ldg(x + tid));
        const float4* vec = reinterpret_cast<const float4*>(x + head);
        const int nvec = (n - head) >> 2;
        for (int v = tid; v < nvec; v += BLOCK) {
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
}

}  // namespace topk
