// large_context: exact top-k with one CTA of 1024 threads per row, for long rows and enough rows
// to fill the GPU (docs/design.md section 4).
//
//   pass A: stream the row once: a 256-bin histogram of the coarse key's high byte
//           (topk::coarse_key), and that byte per element into a workspace (a quarter of the
//           row's bytes, which stays in L2), so that no later pass reads the scores again just to
//           know their bucket.
//   pass B: over the bytes: the threshold bucket's (key, index) pairs go to a shared-memory
//           candidate buffer.
//   refine: 8-bit fp32-key digits over the candidates in shared memory (topk::refine), then the
//           candidates at and above the threshold are selected.
// When the threshold bucket holds more elements than the buffer (plateaus of equal values,
// constant or tie-heavy rows), nothing is buffered: the bucket becomes its exact fp32 key range
// (topk::coarse_key_range) and the row is refined by rescanning the scores with 11-bit digits,
// as per_row does (topk::rescan_select). Min/max tracking collapses a bucket of one repeated value
// after one pass.
//
// LC_DETERMINISTIC=1 (the default, implementation `large_context`): the lowest indices win among
// the entries equal to the k-th largest value, and the output is the selected set in ascending
// index order. Pass B fills the buffer in index order (a block-wide scan per tile,
// topk::TileScan); after the refinement a scan over the buffer marks the selected candidates (the
// first `needed` ties in index order among them) with the count of selected candidates before
// each; a last pass over the bytes (pass C) writes every selected element at the count of selected
// elements before it: the scan of the bytes above the bucket plus that candidate prefix. LC_DETERMINISTIC=0
// (`large_context-nondet`): pass B writes the elements above the bucket directly and every slot
// comes from a shared atomic counter, so the tie set and the order depend on scheduling.
#include "topk_common.cuh"

#ifndef LC_BLOCK
#define LC_BLOCK 1024
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
#ifndef LC_DETERMINISTIC
#define LC_DETERMINISTIC 1
#endif
// Deterministic plateau rows in the rescanning fallback: the final pass stops once the needed
// ties are found (see topk::rescan_select); 0 always walks until every slot is written.
#ifndef LC_EARLY_TIES
#define LC_EARLY_TIES 1
#endif

namespace {

constexpr int kBlock = LC_BLOCK;
constexpr int kCapacity = LC_CAPACITY;
constexpr int kCoarseShift = 8;  // the coarse key's high byte
constexpr int kCoarseBins = 256;
constexpr int kRefineBins = 1 << LC_REFINE_BITS;
constexpr int kFallbackBins = 1 << LC_FALLBACK_BITS;
constexpr int kHistBins = kFallbackBins > kRefineBins ? kFallbackBins : kRefineBins;
static_assert(kHistBins >= kCoarseBins, "histogram too small for the coarse pass");
// Scans of the deterministic passes: candidates 4 per thread per tile; bytes LC_BYTE_UNROLL
// vectors of 16; the fallback's final pass LC_RESCAN_UNROLL float4s.
constexpr int kCandUnroll = 4;
constexpr int kMaxUnroll = LC_BYTE_UNROLL > kCandUnroll ? (LC_BYTE_UNROLL > LC_RESCAN_UNROLL ? LC_BYTE_UNROLL : LC_RESCAN_UNROLL)
                                                        : (kCandUnroll > LC_RESCAN_UNROLL ? kCandUnroll : LC_RESCAN_UNROLL);
using Scan = topk::TileScan<kBlock, kMaxUnroll>;
struct Shared {
    int hist[kHistBins];
    uint32_t cand_key[kCapacity];
    int cand_idx[kCapacity];
    int scratch[kBlock / 32];
    uint32_t scan_totals[Scan::kWords];
    topk::BucketChoice choice;
    int above;
    int ties;
    int candidates;
    uint32_t lo, hi;
};

// Bytes of the row's workspace, 16-byte aligned body [body0, body1) and scalar head and tail.
struct ByteSpan {
    int body0, body1;
    __device__ __forceinline__ ByteSpan(int p0, int p1) {
        body0 = (p0 + 15) & ~15;
        if (body0 > p1) body0 = p1;
        body1 = body0 + ((p1 - body0) & ~15);
    }
};


#if !LC_DETERMINISTIC
// Calls f(p, byte) for the bytes of w[p0, p1) that are at least `b`; four bytes at a time are
// compared in SIMD so rows mostly below the threshold cost little. The bytes were written
// earlier in this kernel, so they are read through L2 (__ldcg), never the read-only path.
template <typename F>
__device__ __forceinline__ void for_each_byte_ge(const uint8_t* w, int p0, int p1, uint32_t b, F&& f) {
    const int tid = threadIdx.x;
    const uint32_t b4 = b * 0x01010101u;
    const ByteSpan span(p0, p1);
    auto one = [&](int p) {
        const uint32_t v = __ldcg(w + p);
        if (v >= b) f(p, v);
    };
    if (p0 + tid < span.body0) one(p0 + tid);
    const uint4* vec = reinterpret_cast<const uint4*>(w + span.body0);
    const int nvec = (span.body1 - span.body0) >> 4;
    for (int v0 = tid; v0 < nvec; v0 += kBlock * LC_BYTE_UNROLL) {
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
                uint32_t hit = __vcmpgeu4(words[q], b4);
                while (hit) {
                    const int byte = (__ffs(hit) - 1) >> 3;
                    hit &= ~(0xFFu << (8 * byte));
                    f(span.body0 + 16 * v + 4 * q + byte, (words[q] >> (8 * byte)) & 0xFFu);
                }
            }
        }
    }
    if (span.body1 + tid < p1) one(span.body1 + tid);
}

#else
// Pass C packs two counts per scan: bytes above the bucket (low bits) and bucket bytes (high).
constexpr int kBucketShift = 19;
constexpr uint32_t kAboveMask = (1u << kBucketShift) - 1u;
constexpr uint32_t kBucketUnit = 1u << kBucketShift;
static_assert(kBlock * 16 * LC_BYTE_UNROLL <= static_cast<int>(kAboveMask), "byte tile too large for the packed count");
static_assert(kCapacity < (1 << (32 - kBucketShift)), "candidate capacity too large for the packed count");
static_assert(kBlock * kCandUnroll < 65536, "candidate tile too large for 16-bit packed counts");

__device__ __forceinline__ uint32_t byte_hits(uint32_t word, uint32_t b4, bool ge) {
    return ge ? __vcmpgeu4(word, b4) : __vcmpeq4(word, b4);
}

// The deterministic walk over w[p0, p1) in index order: in each tile (the scalar head, then
// kBlock x LC_BYTE_UNROLL vectors of 16 bytes, then the scalar tail) the bytes that are at least
// (GE) or equal to (!GE) `b` are counted with `weight(byte)` (a packed count), one TileScan
// orders them, and visit(p, byte, before) gets each with the packed count of the tile's selected
// bytes before it. After each tile `advance(tile_total)` returns true to stop.
template <bool GE, typename Weight, typename Visit, typename Advance>
__device__ void ordered_bytes(const uint8_t* w, int p0, int p1, uint32_t b, Scan& ts, Weight&& weight,
                              Visit&& visit, Advance&& advance) {
    constexpr int U = LC_BYTE_UNROLL;
    const int tid = threadIdx.x;
    const uint32_t b4 = b * 0x01010101u;
    const ByteSpan span(p0, p1);
    auto scalar_tile = [&](int q0, int count) {
        uint32_t c[1] = {0u}, off[1];
        uint32_t v = 0u;
        bool hit = false;
        if (tid < count) {
            v = __ldcg(w + q0 + tid);
            hit = GE ? v >= b : v == b;
            if (hit) c[0] = weight(v);
        }
        const uint32_t total = ts.template scan<1>(c, off);
        if (hit) visit(q0 + tid, v, off[0]);
        return advance(total);
    };
    if (span.body0 > p0 && scalar_tile(p0, span.body0 - p0)) return;
    const uint4* vec = reinterpret_cast<const uint4*>(w + span.body0);
    const int nvec = (span.body1 - span.body0) >> 4;
    for (int v0 = 0; v0 < nvec; v0 += kBlock * U) {
        uint32_t words[U][4];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int v = v0 + u * kBlock + tid;
            const uint4 q = v < nvec ? __ldcg(vec + v) : make_uint4(0u, 0u, 0u, 0u);
            words[u][0] = q.x;
            words[u][1] = q.y;
            words[u][2] = q.z;
            words[u][3] = q.w;
        }
        uint32_t c[U], off[U];
        bool any[U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            c[u] = 0u;
            any[u] = false;
            if (v0 + u * kBlock + tid >= nvec) continue;
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                uint32_t hit = byte_hits(words[u][q], b4, GE);
                any[u] |= hit != 0u;
                while (hit) {
                    const int byte = (__ffs(hit) - 1) >> 3;
                    hit &= ~(0xFFu << (8 * byte));
                    c[u] += weight((words[u][q] >> (8 * byte)) & 0xFFu);
                }
            }
        }
        const uint32_t total = ts.template scan<U>(c, off);
#pragma unroll
        for (int u = 0; u < U; ++u) {
            if (!any[u]) continue;
            const int p = span.body0 + 16 * (v0 + u * kBlock + tid);
            uint32_t before = off[u];
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                uint32_t hit = byte_hits(words[u][q], b4, GE);
                while (hit) {
                    const int byte = (__ffs(hit) - 1) >> 3;
                    hit &= ~(0xFFu << (8 * byte));
                    const uint32_t bv = (words[u][q] >> (8 * byte)) & 0xFFu;
                    visit(p + 4 * q + byte, bv, before);
                    before += weight(bv);
                }
            }
        }
        if (advance(total)) return;
    }
    if (span.body1 < p1) scalar_tile(span.body1, p1 - span.body1);
}
#endif

}  // namespace

extern "C" __global__ void __launch_bounds__(LC_BLOCK, 1)
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

    for (int b = tid; b < kCoarseBins; b += kBlock) sh.hist[b] = 0;
    if (tid == 0) {
        sh.above = 0;
        sh.ties = 0;
        sh.candidates = 0;
        sh.lo = 0xFFFFFFFFu;
        sh.hi = 0u;
    }
    __syncthreads();
    {
        topk::RunCounter run;
        topk::for_each_float<kBlock, LC_UNROLL, true>(
            x, n,
            [&](int i, float v) {
                const uint32_t b = topk::coarse_key(v) >> kCoarseShift;
                run.add(sh.hist, b);
                w[i + off] = static_cast<uint8_t>(b);
            },
            [&](int i, float4 v) {
                const uint32_t b0 = topk::coarse_key(v.x) >> kCoarseShift;
                const uint32_t b1 = topk::coarse_key(v.y) >> kCoarseShift;
                const uint32_t b2 = topk::coarse_key(v.z) >> kCoarseShift;
                const uint32_t b3 = topk::coarse_key(v.w) >> kCoarseShift;
                run.add4(sh.hist, b0, b1, b2, b3);
                *reinterpret_cast<uint32_t*>(w + i + off) = b0 | (b1 << 8) | (b2 << 16) | (b3 << 24);
            });
        run.flush(sh.hist);
    }
    __syncthreads();
    topk::choose_bucket<kCoarseBins, kBlock>(sh.hist, k, sh.scratch, &sh.choice);
    const uint32_t b0 = sh.choice.bucket;
    const int bucket_count = sh.choice.count;
    int needed = k - sh.choice.above;
    const bool take_all = bucket_count == needed;
    const bool fits = bucket_count <= kCapacity;
    const topk::RefineShared refine_shared{sh.hist, sh.scratch, &sh.choice, &sh.lo, &sh.hi};

    if (!fits && !take_all) {
        // Overflow (plateaus): refine by rescanning the scores, which also writes what lies
        // above the bucket; the bytes are not needed.
        const topk::KeyRange range = topk::coarse_key_range(b0 << kCoarseShift, (b0 << kCoarseShift) | 0xFFu);
        const topk::RescanShared rs{refine_shared, &sh.above, &sh.ties, sh.scan_totals};
        topk::rescan_select<kBlock, LC_RESCAN_UNROLL, LC_FALLBACK_BITS, LC_DETERMINISTIC != 0, LC_RESCAN_UNROLL,
                            LC_EARLY_TIES != 0>(x, n, o, k, range, bucket_count, needed, false, rs);
        return;
    }
    // Every candidate's key over the buffer (the refinement's input).
    const int m = bucket_count;
    auto for_each_candidate = [&](auto&& count) {
        for (int j = tid; j < m; j += kBlock) count(sh.cand_key[j]);
    };

#if LC_DETERMINISTIC
    Scan ts(sh.scan_totals);
    if (take_all) {
        // The bucket is exactly the k - (elements above it) still needed: every byte >= b0 is
        // selected, k in all, in index order.
        int base = 0;
        ordered_bytes<true>(
            w, off, off + n, b0, ts, [](uint32_t) { return 1u; },
            [&](int p, uint32_t, uint32_t before) {
                const int slot = base + static_cast<int>(before);
                if (slot < k) o[slot] = p - off;
            },
            [&](uint32_t total) {
                base += static_cast<int>(total);
                return base >= k;
            });
        return;
    }
    // pass B: the bucket's elements into the buffer, in index order.
    {
        int base = 0;
        uint32_t lo = 0xFFFFFFFFu, hi = 0u;
        ordered_bytes<false>(
            w, off, off + n, b0, ts, [](uint32_t) { return 1u; },
            [&](int p, uint32_t, uint32_t before) {
                const int j = base + static_cast<int>(before);
                const int i = p - off;
                const uint32_t fk = topk::float_key(__ldg(x + i));
                lo = min(lo, fk);
                hi = max(hi, fk);
                if (j < kCapacity) {
                    sh.cand_key[j] = fk;
                    sh.cand_idx[j] = i;
                }
            },
            [&](uint32_t total) {
                base += static_cast<int>(total);
                return base >= m;
            });
        topk::block_minmax(lo, hi, &sh.lo, &sh.hi);
    }
    __syncthreads();
    topk::KeyPrefix key;
    key.set_range(sh.lo, sh.hi);
    __syncthreads();  // everyone has read lo/hi before the refinement resets them
    needed = topk::refine<LC_REFINE_BITS, kBlock>(key, needed, refine_shared, for_each_candidate);

    // The candidates in index order: candidate j is selected when it is above the threshold or
    // one of the first `needed` ties; its word becomes (selected candidates before it) << 1 | (it
    // is selected), which pass C reads. Selected before j = above before j + min(ties before j, needed).
    int cand_above = 0;  // above-threshold candidates in all
    {
        int tie_base = 0;
        for (int base = 0; base < m; base += kBlock * kCandUnroll) {
            uint32_t cls[kCandUnroll], c[kCandUnroll], before[kCandUnroll];
#pragma unroll
            for (int u = 0; u < kCandUnroll; ++u) {
                const int j = base + u * kBlock + tid;
                cls[u] = topk::kNone;
                if (j < m) {
                    const int cmp = key.compare(sh.cand_key[j]);
                    cls[u] = cmp > 0 ? topk::kAbove : (cmp == 0 ? topk::kTie : topk::kNone);
                }
                c[u] = topk::class_count(cls[u]);
            }
            const uint32_t total = ts.template scan<kCandUnroll>(c, before);
#pragma unroll
            for (int u = 0; u < kCandUnroll; ++u) {
                const int j = base + u * kBlock + tid;
                if (j >= m) continue;
                const int above = cand_above + static_cast<int>(before[u] & 0xFFFFu);
                const int ties = tie_base + static_cast<int>(before[u] >> 16);
                const bool selected = cls[u] == topk::kAbove || (cls[u] == topk::kTie && ties < needed);
                sh.cand_key[j] = (static_cast<uint32_t>(above + min(ties, needed)) << 1) | (selected ? 1u : 0u);
            }
            cand_above += static_cast<int>(total & 0xFFFFu);
            tie_base += static_cast<int>(total >> 16);
        }
    }
    const int cand_selected = cand_above + needed;  // the ties are at least `needed`
    __syncthreads();

    // pass C: the selected elements in index order: the bytes above the bucket, and the bucket's
    // bytes whose candidate is selected (the j-th bucket byte is candidate j). An element's slot is
    // (bytes above the bucket before it) + (selected candidates before it).
    {
        int above_run = 0, bucket_run = 0;
        auto selected_before = [&](int j) {
            return j < m ? static_cast<int>(sh.cand_key[j] >> 1) : cand_selected;
        };
        ordered_bytes<true>(
            w, off, off + n, b0, ts, [=](uint32_t bv) { return bv > b0 ? 1u : kBucketUnit; },
            [&](int p, uint32_t bv, uint32_t before) {
                const int a = above_run + static_cast<int>(before & kAboveMask);
                const int j = bucket_run + static_cast<int>(before >> kBucketShift);
                if (bv == b0 && (j >= m || !(sh.cand_key[j] & 1u))) return;
                const int slot = a + selected_before(j);
                if (slot < k) o[slot] = p - off;
            },
            [&](uint32_t total) {
                above_run += static_cast<int>(total & kAboveMask);
                bucket_run += static_cast<int>(total >> kBucketShift);
                return above_run + selected_before(bucket_run) >= k;
            });
    }
#else
    // pass B: elements above the bucket straight to the output, the bucket into the buffer.
    {
        uint32_t lo = 0xFFFFFFFFu, hi = 0u;
        for_each_byte_ge(w, off, off + n, b0, [&](int p, uint32_t bv) {
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
                sh.cand_key[j] = fk;
                sh.cand_idx[j] = i;
            }
        });
        topk::block_minmax(lo, hi, &sh.lo, &sh.hi);
    }
    __syncthreads();
    if (take_all) return;

    topk::KeyPrefix key;
    key.set_range(sh.lo, sh.hi);
    __syncthreads();  // everyone has read lo/hi before the refinement resets them
    needed = topk::refine<LC_REFINE_BITS, kBlock>(key, needed, refine_shared, for_each_candidate);
    const int above_total = k - needed;
    for (int j = tid; j < m; j += kBlock) {
        const int cmp = key.compare(sh.cand_key[j]);
        if (cmp > 0) {
            const int slot = topk::reserve_slot(&sh.above);
            if (slot < above_total) o[slot] = sh.cand_idx[j];
        } else if (cmp == 0) {
            const int slot = topk::reserve_slot(&sh.ties);
            if (slot < needed) o[above_total + slot] = sh.cand_idx[j];
        }
    }
#endif
}
