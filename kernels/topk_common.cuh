// Shared helpers for topkbench's top-k kernels: ordered keys and row bounds.
// Included by every kernel translation unit; the Python loader inlines it into the source string
// (so CuPy's cache, which keys on the source text, recompiles when this header changes).
#pragma once

#include <cooperative_groups.h>
#include <cuda_fp16.h>
#if defined(__CUDACC_RTC__)
// NVRTC (CuPy's compiler) has no C library headers. These three widths are the same type under
// every CUDA ABI, so repeating a typedef another header may already have made is harmless.
typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long long uintptr_t;  // 64-bit device pointers
#else
#include <stdint.h>
#endif

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


// ---------------------------------------------------------------------------------------------
// Block-level helpers for the one-CTA-per-row kernels (and anyone else who wants them). Every
// function taking BLOCK must be called by all BLOCK threads of the block, with blockDim.x == BLOCK.

constexpr unsigned kFullMask = 0xFFFFFFFFu;

// The fp16 key as the 16-bit pattern it came from, to bound the fp32 keys that round into a range
// of half keys.
__device__ __forceinline__ float half_key_to_float(uint32_t key) {
    uint16_t bits = (key & 0x8000u) ? static_cast<uint16_t>(key ^ 0x8000u) : static_cast<uint16_t>(~key);
    return __half2float(__ushort_as_half(bits));
}

// The float whose key is `key` (keys float_key never makes decode to NaN, which is harmless here).
__device__ __forceinline__ float key_to_float(uint32_t key) {
    return __uint_as_float((key & 0x80000000u) ? (key ^ 0x80000000u) : ~key);
}

// Exact fp32 key bounds of the elements whose fp16 key lies in [half_lo, half_hi]: rounding to
// fp16 is monotone, so they are the keys in [first, last] (keys below that of -inf are NaN
// patterns float_key never makes, and are left out of the search). Every thread may call this
// (64 dependent steps, once per row); afterwards passes test fp32 keys only, with no conversion.
struct HalfBucketBounds {
    uint32_t first, last;
};
__device__ __forceinline__ HalfBucketBounds half_bucket_bounds(uint32_t half_lo, uint32_t half_hi) {
    constexpr uint32_t kMinusInf = 0x007FFFFFu;
    uint32_t lo = kMinusInf, hi = 0xFFFFFFFFu;
    while (lo < hi) {  // smallest key whose half key is >= half_lo
        const uint32_t mid = lo + ((hi - lo) >> 1);
        if (half_key(key_to_float(mid)) >= half_lo) hi = mid; else lo = mid + 1u;
    }
    HalfBucketBounds bounds;
    bounds.first = lo;
    lo = kMinusInf;
    hi = 0xFFFFFFFFu;
    while (lo < hi) {  // largest key whose half key is <= half_hi
        const uint32_t mid = hi - ((hi - lo) >> 1);
        if (half_key(key_to_float(mid)) <= half_hi) lo = mid; else hi = mid - 1u;
    }
    bounds.last = lo;
    return bounds;
}

// Logical right shift that is defined for 32 (every key then shares the empty prefix 0).
__device__ __forceinline__ uint32_t shr(uint32_t key, int bits) { return bits >= 32 ? 0u : key >> bits; }

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
// divergent code: the group is whichever lanes arrived together).
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
// candidate shares cost no pass (after an fp16 first digit, most of the top fp32 bits are fixed).
struct KeyPrefix {
    uint32_t prefix;
    int bits;  // low bits still undecided; 32 = nothing decided

    __device__ __forceinline__ void set_range(uint32_t lo, uint32_t hi) {
        bits = lo == hi ? 0 : 32 - __clz(lo ^ hi);
        prefix = shr(lo, bits);
    }
    // All fp32 keys whose fp16 rounding has a half key in [half_lo, half_hi]: by monotone
    // rounding they lie between the fp32 values of the neighbouring half keys.
    __device__ __forceinline__ void set_half_range(uint32_t half_lo, uint32_t half_hi) {
        // Half keys below 0x03FF (the key of -inf) are NaN patterns, which half_key never makes.
        const uint32_t lo = half_lo <= 0x03FFu ? 0u : float_key(half_key_to_float(half_lo - 1));
        const uint32_t hi = half_hi >= 0xFC00u ? 0xFFFFFFFFu : float_key(half_key_to_float(half_hi + 1));
        set_range(lo, hi);
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

// Calls f1(i, v) or f4(i, float4 of i..i+3) for every element of row[0, n), 16-byte loads for
// the aligned body, scalar head and tail (rows may start anywhere when stride is not a
// multiple of 4). UNROLL loads are issued before any is used, to keep enough bytes in flight.
// STREAM marks data read once (evict-first), so it does not push reused data out of L2.
template <int BLOCK, int UNROLL, bool STREAM, typename F1, typename F4>
__device__ __forceinline__ void for_each_float(const float* __restrict__ row, int n, F1&& f1, F4&& f4) {
    const int tid = threadIdx.x;
    int head = static_cast<int>(((16u - (static_cast<uint32_t>(reinterpret_cast<unsigned long long>(row)) & 15u)) & 15u) >> 2);
    if (head > n) head = n;
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

// Number of leading elements for_each_float handles as scalars (the row's 16-byte misalignment).
__device__ __forceinline__ int vector_head(const float* row, int n) {
    const int head = static_cast<int>(((16u - (static_cast<uint32_t>(reinterpret_cast<unsigned long long>(row)) & 15u)) & 15u) >> 2);
    return head < n ? head : n;
}

// Block shared state that rescan_select works in (all shared memory).
struct RescanShared {
    int* hist;  // NB bins
    int* scratch;
    BucketChoice* choice;
    uint32_t* lo;
    uint32_t* hi;
    int* above;  // slot counters, zero on entry unless slots were already taken above the bucket
    int* ties;
};

// Exact selection within a row whose threshold bucket is known as the fp32 key range
// [first, last], with `needed` slots left for it (k - needed elements lie above `last`).
// Refines by rescanning the row from global memory with DIGIT_BITS-wide fp32 digits, each pass
// counting only the keys in the range that match the prefix chosen so far, then one final pass
// writes what is above the threshold and fills the ties up to k. `above_written` says the
// elements above `last` already have their slots; otherwise the first pass writes them, so that
// the final pass only has the bucket left and can stop once all k slots are taken (plateaus).
// `take_all`: the whole range is selected (no refinement).
template <int BLOCK, int UNROLL, int DIGIT_BITS>
__device__ void rescan_select(const float* __restrict__ x, int n, int* __restrict__ out, int k, uint32_t first,
                              uint32_t last, int needed, bool take_all, bool above_written, const RescanShared& sh) {
    const int tid = threadIdx.x;
    constexpr int NB = 1 << DIGIT_BITS;
    KeyPrefix key;
    if (take_all) {
        key.prefix = 0;
        key.bits = 32;
    } else {
        key.set_range(first, last);
    }
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
        const bool emit = !above_written;
        const int above_limit = k - needed;
        auto visit = [&](int i, float v) {
            const uint32_t fk = float_key(v);
            if (fk > last) {
                if (emit) {
                    const int slot = reserve_slot(sh.above);
                    if (slot < above_limit) out[slot] = i;
                }
                return;
            }
            if (fk < first || !key.matches(fk)) return;
            run.add(sh.hist, static_cast<int>((fk >> shift) & mask));
            lo = min(lo, fk);
            hi = max(hi, fk);
        };
        for_each_float<BLOCK, UNROLL, false>(
            x, n, [&](int i, float v) { visit(i, v); },
            [&](int i, float4 v) {
                visit(i, v.x);
                visit(i + 1, v.y);
                visit(i + 2, v.z);
                visit(i + 3, v.w);
            });
        above_written = true;
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

    // Every slot is accounted for in advance (k - needed above, needed ties), so a thread stops
    // once all are taken: plateau rows fill their ties early.
    const int above_total = k - needed;
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

}  // namespace topk

