// radix: exact top-k with several CTAs cooperating on one row (docs/design.md section 4, issue #4).
//
// Long rows at small batch leave most SMs idle with one CTA per row, so a group of
// `ctas_per_row` CTAs shares each row; CTA c owns the contiguous chunk c of it. Every CTA converts
// its chunk to ordered keys once and keeps them in shared memory (the part beyond `smem_keys` is
// re-read from global memory each pass, so any length works). Each round picks one digit of the
// k-th largest key: CTAs build a shared-memory histogram of the keys still matching the prefix,
// add it into the group's global histogram with atomics, meet at a group barrier, and all compute
// the same bucket from the global histogram. A final collect pass writes keys above the final
// prefix and the first k_rem keys equal to it (the ties).
//
// RADIX_DETERMINISTIC=1 (the default, implementation `radix`): after the last round every CTA
// publishes its counts of keys above the threshold and of ties in the workspace, and reads those
// of the lower CTAs of its group (the exchange: one more meeting, of the lower CTAs only). CTA c
// then counts its keys on from theirs, in index order (a block-wide scan per tile,
// topk::TileScan): a key goes to (above keys before it) + min(ties before it, k_rem), so the
// output is the selected set, with the lowest-index ties, in ascending index order, whatever the
// number of CTAs per row. RADIX_DETERMINISTIC=0
// (`radix-nondet`): each CTA reserves its slots with one global atomic per kind, in arrival
// order, and ties are taken in that order until k are written.
//
// The group state (histograms, counters, barrier, exchange) lives in a caller-provided workspace
// that is zero at launch and that the kernel leaves zero at exit, so back-to-back launches and
// CUDA-graph replays need no memset. The barrier needs every CTA of the grid resident at once: the
// host sizes the grid from the occupancy calculator and never launches more.
#include "topk_common.cuh"

// Threads per CTA (a power of two, 64..1024).
#ifndef RADIX_THREADS
#define RADIX_THREADS 512
#endif
// Resident CTAs per SM that the register budget must allow (__launch_bounds__); the radix
// regime (few long rows) wants one large CTA per SM, and 1 leaves ptxas room to avoid spills.
#ifndef RADIX_MIN_BLOCKS
#define RADIX_MIN_BLOCKS 1
#endif
// Bits per radix digit: 11 gives 3 rounds over 32-bit keys (11/11/10), 8 gives 4 rounds.
#ifndef RADIX_DIGIT_BITS
#define RADIX_DIGIT_BITS 11
#endif
// 1: aggregate equal bins within a warp (__match_any_sync) before the shared-memory atomic.
// Off by default: on an H100 the plain atomics were 1.5-3 us faster per selection at 1-8 rows of
// 64K-128K, on relu_plateau rows (nearly all keys in one bin) as well as on normal ones.
#ifndef RADIX_WARP_AGG
#define RADIX_WARP_AGG 0
#endif
// Barrier spins before trapping: a lost CTA (grid not co-resident) becomes an error, not a hang.
#ifndef RADIX_SPIN_LIMIT
#define RADIX_SPIN_LIMIT (1u << 26)
#endif
// 1: deterministic slots and tie set (see the top of this file); 0: atomic slot counters.
#ifndef RADIX_DETERMINISTIC
#define RADIX_DETERMINISTIC 1
#endif
// Most CTAs one row may use (the exchange has a slot per CTA; topkbench/cuda/radix.py caps plans).
#ifndef RADIX_MAX_CTAS
#define RADIX_MAX_CTAS 256
#endif
// Timing knock-outs, never used for results: 0 full kernel; 1 load + first local histogram only;
// 2 every round but no collect; 3 return at once (launch cost of the same grid).
#ifndef RADIX_STOP_AFTER
#define RADIX_STOP_AFTER 0
#endif

namespace radix {

constexpr int kThreads = RADIX_THREADS;
constexpr int kWarps = kThreads / 32;
constexpr int kBits = RADIX_DIGIT_BITS;
constexpr int kBins = 1 << kBits;
constexpr int kRounds = (32 + kBits - 1) / kBits;
constexpr int kBinsPerThread = kBins >= kThreads ? kBins / kThreads : 1;
constexpr int kUnroll = 4;
// Deterministic collect: uint4s of shared-memory keys, and streamed keys, per thread per tile.
constexpr int kCollectUnroll = 4;
constexpr int kStreamUnroll = 8;
constexpr int kMaxCtas = RADIX_MAX_CTAS;
using Scan = topk::TileScan<kThreads, kStreamUnroll>;
static_assert(kThreads * 4 * kCollectUnroll < 65536 && kThreads * kStreamUnroll < 65536,
              "collect tile too large for 16-bit packed counts");

// Workspace layout per group (uint32 words); the exit counter is kept off the barrier's line.
constexpr int kArrive = 0;
constexpr int kAboveCtr = 4;  // [2], alternating between consecutive selections
constexpr int kTieCtr = 6;    // [2]
constexpr int kExit = 32;
constexpr int kCtrlWords = 64;
// Exchange: per CTA two 64-bit words, (tag << 32) | count of above keys, and of ties.
constexpr int kExchangeWords = 4 * kMaxCtas;
constexpr int kGroupWords = kCtrlWords + 3 * kBins + kExchangeWords;

static_assert((kThreads & (kThreads - 1)) == 0 && kThreads >= 64 && kThreads <= 1024,
              "RADIX_THREADS must be a power of two in [64, 1024]");
static_assert(kBits >= 4 && kBits <= 12, "RADIX_DIGIT_BITS must be in [4, 12]");

__device__ __forceinline__ int round_shift(int r) {
    const int s = 32 - (r + 1) * kBits;
    return s < 0 ? 0 : s;
}

__device__ __forceinline__ uint32_t round_bin_mask(int r) {
    const int bits = 32 - r * kBits - round_shift(r);
    return (1u << bits) - 1u;
}

__device__ __forceinline__ uint32_t ld_acquire(const uint32_t* p) {
    uint32_t v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

__device__ __forceinline__ uint32_t atom_add_acq_rel(uint32_t* p, uint32_t v) {
    uint32_t old;
    asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], %2;" : "=r"(old) : "l"(p), "r"(v) : "memory");
    return old;
}

__device__ __forceinline__ void st_relaxed_u64(unsigned long long* p, unsigned long long v) {
    asm volatile("st.relaxed.gpu.global.u64 [%0], %1;" : : "l"(p), "l"(v) : "memory");
}

__device__ __forceinline__ unsigned long long ld_relaxed_u64(const unsigned long long* p) {
    unsigned long long v;
    asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
    return v;
}

// The exchange (deterministic collect): CTA `cta` publishes its counts of above keys and of ties
// for selection `tag` (never 0, different for each selection of a launch), then sums those of
// CTAs 0..cta-1, polling each until it carries `tag`. Only lower CTAs are waited for, and they
// publish right after the last round's barrier, so no CTA waits on one that waits on it.
// Returns (above, ties) of the lower CTAs in every thread. `s_sum` holds 2 * kWarps words.
__device__ __forceinline__ uint2 exchange_counts(unsigned long long* slots, int cta, uint32_t tag, uint32_t above,
                                                 uint32_t ties, uint32_t* s_sum) {
    const unsigned long long high = static_cast<unsigned long long>(tag) << 32;
    if (threadIdx.x == 0) {
        st_relaxed_u64(slots + 2 * cta, high | above);
        st_relaxed_u64(slots + 2 * cta + 1, high | ties);
    }
    uint32_t a = 0u, t = 0u;
    for (int c = threadIdx.x; c < cta; c += kThreads) {
        unsigned long long va, vt;
        uint32_t spins = 0;
        while (((va = ld_relaxed_u64(slots + 2 * c)) >> 32) != tag) {
            if (++spins > RADIX_SPIN_LIMIT) __trap();
        }
        while (((vt = ld_relaxed_u64(slots + 2 * c + 1)) >> 32) != tag) {
            if (++spins > RADIX_SPIN_LIMIT) __trap();
        }
        a += static_cast<uint32_t>(va);
        t += static_cast<uint32_t>(vt);
    }
    a = __reduce_add_sync(0xFFFFFFFFu, a);
    t = __reduce_add_sync(0xFFFFFFFFu, t);
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    if (lane == 0) {
        s_sum[warp] = a;
        s_sum[kWarps + warp] = t;
    }
    __syncthreads();
    const uint32_t wa = lane < kWarps ? s_sum[lane] : 0u;
    const uint32_t wt = lane < kWarps ? s_sum[kWarps + lane] : 0u;
    return make_uint2(__reduce_add_sync(0xFFFFFFFFu, wa), __reduce_add_sync(0xFFFFFFFFu, wt));
}

// Barrier of the `nctas` CTAs of one group. The arrival counter only grows during a launch, so
// barrier number `epoch` (0, 1, ...) completes when it reaches (epoch + 1) * nctas: waiters poll
// the counter itself, one L2 round trip fewer than a separate generation word, and the last CTA
// to exit resets it. Only thread 0 spins; the others wait at __syncthreads. The release half of
// the arrival publishes the CTA's histogram atomics (ordered before it by __syncthreads), and
// the acquire load makes every other CTA's visible after the barrier.
__device__ __forceinline__ void group_barrier(uint32_t* ctrl, uint32_t nctas, uint32_t epoch) {
    __syncthreads();
    if (threadIdx.x == 0) {
        const uint32_t target = (epoch + 1u) * nctas;
        uint32_t seen = atom_add_acq_rel(ctrl + kArrive, 1u) + 1u;
        uint32_t spins = 0;
        while (seen < target) {
            if (++spins > RADIX_SPIN_LIMIT) __trap();
            seen = ld_acquire(ctrl + kArrive);
        }
    }
    __syncthreads();
}

// Must be called by all 32 lanes of a warp together.
__device__ __forceinline__ void hist_add(uint32_t* hist, uint32_t bin, bool ok) {
#if RADIX_WARP_AGG
    if (!__any_sync(0xFFFFFFFFu, ok)) return;
    // Invalid lanes share a value no bin can take, so they never join a valid lane's group.
    const uint32_t peers = __match_any_sync(0xFFFFFFFFu, ok ? bin : 0xFFFFFFFFu);
    if (ok && (threadIdx.x & 31) == static_cast<uint32_t>(__ffs(peers) - 1)) atomicAdd(hist + bin, __popc(peers));
#else
    if (ok) atomicAdd(hist + bin, 1u);
#endif
}

// A slot per lane with `pred` from a shared counter, one atomic per warp. All lanes call it.
__device__ __forceinline__ uint32_t warp_reserve(uint32_t* counter, bool pred) {
    const uint32_t ballot = __ballot_sync(0xFFFFFFFFu, pred);
    if (ballot == 0u) return 0u;
    const int lane = threadIdx.x & 31;
    const int leader = __ffs(ballot) - 1;
    uint32_t base = 0;
    if (lane == leader) base = atomicAdd(counter, static_cast<uint32_t>(__popc(ballot)));
    base = __shfl_sync(0xFFFFFFFFu, base, leader);
    return base + __popc(ballot & ((1u << lane) - 1u));
}

// Visits this CTA's keys: the shared-memory part [0, in_smem) as 16-byte vectors, then the
// streamed part [in_smem, len) from global memory. `visit(key, index_in_chunk, ok)` is called by
// whole warps (the loops are uniform over the CTA); lanes past the end get ok = false.
template <typename Visit>
__device__ __forceinline__ void for_each_key(const uint32_t* keys, int in_smem, const float* src, int len,
                                             Visit visit) {
    const uint4* keys4 = reinterpret_cast<const uint4*>(keys);
    const int nq = (in_smem + 3) >> 2;
    for (int base = 0; base < nq; base += kThreads) {
        const int j = base + threadIdx.x;
        const uint4 q = j < nq ? keys4[j] : make_uint4(0u, 0u, 0u, 0u);
        const int e = 4 * j;
        visit(q.x, e, e < in_smem);
        visit(q.y, e + 1, e + 1 < in_smem);
        visit(q.z, e + 2, e + 2 < in_smem);
        visit(q.w, e + 3, e + 3 < in_smem);
    }
    for (int base = in_smem; base < len; base += kThreads) {
        const int j = base + threadIdx.x;
        const bool ok = j < len;
        visit(ok ? topk::float_key(__ldg(src + j)) : 0u, j, ok);
    }
}

}  // namespace radix

// logits [rows, stride] (row r valid in [0, lengths[r]), lengths null = full width);
// out int32 [rows, k]; workspace: kGroupWords per group, zero at launch and at exit.
// gridDim.x = groups * ctas_per_row, all co-resident; dynamic shared memory = 4 * smem_keys
// bytes, smem_keys a multiple of 4.
extern "C" __global__ void __launch_bounds__(RADIX_THREADS, RADIX_MIN_BLOCKS)
radix_topk(const float* __restrict__ logits, const int* __restrict__ lengths, int rows, int width,
           long long stride, int k, int* __restrict__ out, uint32_t* __restrict__ workspace,
           int ctas_per_row, int smem_keys) {
    using namespace radix;
#if RADIX_STOP_AFTER == 3
    return;
#endif
    extern __shared__ __align__(16) uint32_t s_keys[];
    __shared__ uint32_t s_hist[kBins];
    __shared__ unsigned long long s_warp[kWarps];
    __shared__ uint32_t s_bucket, s_above_g, s_above_l, s_bucket_count;
    __shared__ int s_last;
#if RADIX_DETERMINISTIC
    __shared__ uint32_t s_scan[Scan::kWords];
    __shared__ uint32_t s_sum[2 * kWarps];
    Scan ts(s_scan);
#else
    __shared__ uint32_t s_base_above, s_base_tie, s_count_above, s_count_tie;
#endif

    const int cta = blockIdx.x % ctas_per_row;
    const int group = blockIdx.x / ctas_per_row;
    const int groups = gridDim.x / ctas_per_row;
    uint32_t* ctrl = workspace + static_cast<size_t>(group) * kGroupWords;
    uint32_t* g_hist = ctrl + kCtrlWords;
    unsigned long long* exchange = reinterpret_cast<unsigned long long*>(g_hist + 3 * kBins);
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;

    // Rounds and selections done by this group in this launch: they pick which of the three
    // global histograms and which of the two counter pairs is live (identical in every CTA).
    uint32_t round_counter = 0;
    uint32_t selection = 0;
    uint32_t epoch = 0;  // barriers passed by this group in this launch

    for (int row = group; row < rows; row += groups) {
        const int n = topk::row_length(lengths, row, width);
        int* row_out = out + static_cast<long long>(row) * k;
        if (n <= k) {
            for (int i = cta * kThreads + threadIdx.x; i < k; i += ctas_per_row * kThreads)
                row_out[i] = i < n ? i : -1;
            continue;
        }
        const float* row_in = logits + static_cast<long long>(row) * stride;
        // Chunks are multiples of 4 so that every chunk starts 16-byte aligned when the row does.
        const long long chunk = ((static_cast<long long>(n) + ctas_per_row - 1) / ctas_per_row + 3) & ~3LL;
        const int lo = static_cast<int>(min(static_cast<long long>(cta) * chunk, static_cast<long long>(n)));
        const int len = static_cast<int>(min(chunk, static_cast<long long>(n - lo)));
        const int in_smem = min(len, smem_keys);
        const float* src = row_in + lo;

        // ---- load: keys into shared memory, fused with the first round's local histogram.
        for (int i = threadIdx.x; i < kBins; i += kThreads) s_hist[i] = 0u;
        __syncthreads();
        {
            const int shift0 = round_shift(0);
            const bool aligned = (reinterpret_cast<unsigned long long>(src) & 15u) == 0u;
            const int nvec = aligned ? (in_smem >> 2) : 0;
            const float4* src4 = reinterpret_cast<const float4*>(src);
            uint4* keys4 = reinterpret_cast<uint4*>(s_keys);
            for (int base = 0; base < nvec; base += kThreads * kUnroll) {
                float4 v[kUnroll];
#pragma unroll
                for (int u = 0; u < kUnroll; ++u) {
                    const int j = base + u * kThreads + threadIdx.x;
                    v[u] = j < nvec ? __ldg(src4 + j) : make_float4(0.f, 0.f, 0.f, 0.f);
                }
#pragma unroll
                for (int u = 0; u < kUnroll; ++u) {
                    const int j = base + u * kThreads + threadIdx.x;
                    const bool ok = j < nvec;
                    uint4 q;
                    q.x = topk::float_key(v[u].x);
                    q.y = topk::float_key(v[u].y);
                    q.z = topk::float_key(v[u].z);
                    q.w = topk::float_key(v[u].w);
                    if (ok) keys4[j] = q;
                    hist_add(s_hist, q.x >> shift0, ok);
                    hist_add(s_hist, q.y >> shift0, ok);
                    hist_add(s_hist, q.z >> shift0, ok);
                    hist_add(s_hist, q.w >> shift0, ok);
                }
            }
            // Unaligned rows, the tail after the vectors, and the streamed part past smem_keys.
            for (int base = 4 * nvec; base < len; base += kThreads) {
                const int j = base + threadIdx.x;
                const bool ok = j < len;
                const uint32_t key = ok ? topk::float_key(__ldg(src + j)) : 0u;
                if (ok && j < in_smem) s_keys[j] = key;
                hist_add(s_hist, key >> shift0, ok);
            }
        }
#if RADIX_STOP_AFTER == 1
        __syncthreads();
        continue;
#endif

        // ---- rounds: one digit of the k-th largest key per round.
        uint32_t prefix = 0u, mask = 0u;
        uint32_t k_rem = static_cast<uint32_t>(k);
        uint32_t local_above = 0u, local_tie = 0u;
        const uint32_t sel = selection++;
        for (int r = 0; r < kRounds; ++r) {
            const uint32_t t = round_counter++;
            const int shift = round_shift(r);
            const uint32_t bin_mask = round_bin_mask(r);
            if (r > 0) {
                for_each_key(s_keys, in_smem, src, len, [=](uint32_t key, int, bool ok) {
                    hist_add(s_hist, (key >> shift) & bin_mask, ok && (key & mask) == prefix);
                });
            }
            __syncthreads();
            uint32_t* buf = g_hist + (t % 3u) * kBins;
            // The histogram the next round will use was last read two rounds ago, before the
            // previous barrier, which every CTA has passed: clear it now, one slice per CTA.
            uint32_t* next = g_hist + ((t + 1u) % 3u) * kBins;
            for (int b = threadIdx.x; b < kBins; b += kThreads) {
                const uint32_t c = s_hist[b];
                if (c != 0u) atomicAdd(buf + b, c);
            }
            for (int b = cta * kThreads + threadIdx.x; b < kBins; b += ctas_per_row * kThreads) next[b] = 0u;
            group_barrier(ctrl, static_cast<uint32_t>(ctas_per_row), epoch++);
            if (r == 0 && cta == 0 && threadIdx.x == 0) {
                // Every CTA finished the previous selection's collect before this barrier.
                ctrl[kAboveCtr + ((sel + 1u) & 1u)] = 0u;
                ctrl[kTieCtr + ((sel + 1u) & 1u)] = 0u;
            }

            // Find the bucket where the count from the top crosses k_rem. The global and the
            // local counts are scanned together (global high, local low 32 bits) so that the
            // thread finding the bucket also knows how many of this CTA's keys lie above it.
            {
                uint32_t gc[kBinsPerThread], lc[kBinsPerThread];
                const int top = kBins - static_cast<int>(threadIdx.x) * kBinsPerThread;  // exclusive
                unsigned long long sum = 0ull;
#pragma unroll
                for (int j = 0; j < kBinsPerThread; ++j) {
                    const int b = top - 1 - j;
                    gc[j] = b >= 0 ? __ldcg(buf + b) : 0u;
                    lc[j] = b >= 0 ? s_hist[b] : 0u;
                    sum += (static_cast<unsigned long long>(gc[j]) << 32) | lc[j];
                }
                unsigned long long incl = sum;
#pragma unroll
                for (int d = 1; d < 32; d <<= 1) {
                    const unsigned long long o = __shfl_up_sync(0xFFFFFFFFu, incl, d);
                    if (lane >= d) incl += o;
                }
                if (lane == 31) s_warp[warp] = incl;
                __syncthreads();
                if (warp == 0) {
                    const unsigned long long w = lane < kWarps ? s_warp[lane] : 0ull;
                    unsigned long long wi = w;
#pragma unroll
                    for (int d = 1; d < 32; d <<= 1) {
                        const unsigned long long o = __shfl_up_sync(0xFFFFFFFFu, wi, d);
                        if (lane >= d) wi += o;
                    }
                    if (lane < kWarps) s_warp[lane] = wi - w;
                }
                __syncthreads();
                const unsigned long long excl = s_warp[warp] + (incl - sum);
                uint32_t run_g = static_cast<uint32_t>(excl >> 32);
                uint32_t run_l = static_cast<uint32_t>(excl);
#pragma unroll
                for (int j = 0; j < kBinsPerThread; ++j) {
                    if (run_g < k_rem && run_g + gc[j] >= k_rem) {
                        s_bucket = static_cast<uint32_t>(top - 1 - j);
                        s_above_g = run_g;
                        s_above_l = run_l;
                        s_bucket_count = gc[j];
                    }
                    run_g += gc[j];
                    run_l += lc[j];
                }
            }
            __syncthreads();
            const uint32_t bucket = s_bucket;
            k_rem -= s_above_g;
            local_above += s_above_l;
            local_tie = s_hist[bucket];
            const bool done = s_bucket_count == k_rem || r == kRounds - 1;
            prefix |= bucket << shift;
            mask |= bin_mask << shift;
            __syncthreads();
            if (done) break;
            for (int i = threadIdx.x; i < kBins; i += kThreads) s_hist[i] = 0u;
            __syncthreads();
        }

#if RADIX_STOP_AFTER != 2
#if RADIX_DETERMINISTIC
        // ---- collect in index order: this CTA's above keys and ties counted after the lower
        // CTAs' ones (tie ranks from k_rem on are not selected).
        {
            const uint2 lower = exchange_counts(exchange, cta, sel + 1u, local_above, local_tie, s_sum);
            uint32_t above_run = lower.x;  // slot of the next above key
            uint32_t tie_run = lower.y;    // rank of the next tie
            const uint32_t above_end = lower.x + local_above;
            const uint32_t tie_end = min(lower.y + local_tie, k_rem);
            auto classify = [&](uint32_t key, bool ok) {
                const uint32_t m = key & mask;
                return !ok ? topk::kNone : (m > prefix ? topk::kAbove : (m == prefix ? topk::kTie : topk::kNone));
            };
            // Slot = (above keys before it in the row) + min(ties before it, k_rem): the selected
            // set in ascending index order.
            auto put = [&](int j, uint32_t cls, uint32_t before) {
                const uint32_t above = above_run + (before & 0xFFFFu);
                const uint32_t tie = tie_run + (before >> 16);
                if (cls == topk::kAbove) {
                    if (above < above_end) row_out[above + min(tie, k_rem)] = lo + j;
                } else if (cls == topk::kTie && tie < tie_end) {
                    row_out[above + tie] = lo + j;
                }
            };
            auto advance = [&](uint32_t total) {
                above_run += total & 0xFFFFu;
                tie_run += total >> 16;
                return above_run >= above_end && tie_run >= tie_end;
            };
            bool finished = above_run >= above_end && tie_run >= tie_end;
            // Shared-memory keys: kCollectUnroll uint4s per thread per tile.
            const uint4* keys4 = reinterpret_cast<const uint4*>(s_keys);
            const int nq = (in_smem + 3) >> 2;
            for (int base = 0; base < nq && !finished; base += kThreads * kCollectUnroll) {
                uint32_t cls[kCollectUnroll], c[kCollectUnroll], before[kCollectUnroll];
#pragma unroll
                for (int u = 0; u < kCollectUnroll; ++u) {
                    const int j = base + u * kThreads + static_cast<int>(threadIdx.x);
                    const uint4 q = j < nq ? keys4[j] : make_uint4(0u, 0u, 0u, 0u);
                    const int e = 4 * j;
                    const uint32_t c0 = classify(q.x, e < in_smem), c1 = classify(q.y, e + 1 < in_smem);
                    const uint32_t c2 = classify(q.z, e + 2 < in_smem), c3 = classify(q.w, e + 3 < in_smem);
                    cls[u] = c0 | (c1 << 2) | (c2 << 4) | (c3 << 6);
                    c[u] = topk::class_count(c0) + topk::class_count(c1) + topk::class_count(c2) +
                           topk::class_count(c3);
                }
                const uint32_t total = ts.template scan<kCollectUnroll>(c, before);
#pragma unroll
                for (int u = 0; u < kCollectUnroll; ++u) {
                    if (cls[u] == 0u) continue;
                    const int e = 4 * (base + u * kThreads + static_cast<int>(threadIdx.x));
                    uint32_t b = before[u];
#pragma unroll
                    for (int i = 0; i < 4; ++i) {
                        const uint32_t cx = (cls[u] >> (2 * i)) & 3u;
                        put(e + i, cx, b);
                        b += topk::class_count(cx);
                    }
                }
                finished = advance(total);
            }
            // Keys past shared memory, streamed again: kStreamUnroll per thread per tile.
            for (int base = in_smem; base < len && !finished; base += kThreads * kStreamUnroll) {
                uint32_t cls[kStreamUnroll], c[kStreamUnroll], before[kStreamUnroll];
#pragma unroll
                for (int u = 0; u < kStreamUnroll; ++u) {
                    const int j = base + u * kThreads + static_cast<int>(threadIdx.x);
                    const bool ok = j < len;
                    cls[u] = classify(ok ? topk::float_key(__ldg(src + j)) : 0u, ok);
                    c[u] = topk::class_count(cls[u]);
                }
                const uint32_t total = ts.template scan<kStreamUnroll>(c, before);
#pragma unroll
                for (int u = 0; u < kStreamUnroll; ++u) {
                    put(base + u * kThreads + static_cast<int>(threadIdx.x), cls[u], before[u]);
                }
                finished = advance(total);
            }
        }
#else
        // ---- collect: one global reservation per CTA for each kind, then per-warp slots.
        const uint32_t first_tie_slot = static_cast<uint32_t>(k) - k_rem;
        if (threadIdx.x == 0) {
            s_base_above = local_above != 0u ? atomicAdd(ctrl + kAboveCtr + (sel & 1u), local_above) : 0u;
            s_base_tie = local_tie != 0u ? atomicAdd(ctrl + kTieCtr + (sel & 1u), local_tie) : 0u;
            s_count_above = 0u;
            s_count_tie = 0u;
        }
        __syncthreads();
        const uint32_t base_above = s_base_above;
        const uint32_t base_tie = s_base_tie;
        const bool want_ties = local_tie != 0u && base_tie < k_rem;
        if (local_above != 0u || want_ties) {
            for_each_key(s_keys, in_smem, src, len, [=](uint32_t key, int j, bool ok) {
                const uint32_t m = key & mask;
                const bool above = ok && m > prefix;
                const bool tie = want_ties && ok && m == prefix;
                const uint32_t a = warp_reserve(&s_count_above, above);
                if (above) row_out[base_above + a] = lo + j;
                const uint32_t t = warp_reserve(&s_count_tie, tie);
                if (tie && base_tie + t < k_rem) row_out[first_tie_slot + base_tie + t] = lo + j;
            });
        }
#endif
#endif
        // The next row overwrites s_keys and s_hist.
        __syncthreads();
    }

#if RADIX_STOP_AFTER == 1
    return;
#endif
    // ---- exit: the last CTA of the group to finish leaves its workspace zero (histograms,
    // counters, the barrier's arrival count, the exchange slots). Every other CTA has made its last workspace access,
    // its last barrier wait included, before arriving here.
    __syncthreads();
    if (threadIdx.x == 0) {
        const uint32_t prev = atom_add_acq_rel(ctrl + kExit, 1u);
        s_last = prev + 1u == static_cast<uint32_t>(ctas_per_row);
    }
    __syncthreads();
    if (s_last) {
        for (int i = threadIdx.x; i < 3 * kBins; i += kThreads) g_hist[i] = 0u;
        if (threadIdx.x < kCtrlWords) ctrl[threadIdx.x] = 0u;
        for (int i = threadIdx.x; i < 2 * ctas_per_row; i += kThreads) exchange[i] = 0ull;
    }
}
