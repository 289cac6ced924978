// The read floor: one streaming read of every valid score, and nothing else. A top-k kernel must
// read each score at least once, so the time of this kernel at a point (same scores, same lengths,
// same timing mode) is the floor a top-k kernel can approach there; the bytes/bandwidth figure is
// meaningless at small shapes, where launch and latency dominate.
//
// Grid: (chunks per row, rows). Each CTA reads one chunk of one row with 16-byte loads (a scalar
// head up to 16-byte alignment, since rows may start anywhere when the stride is odd) and folds the
// bits with XOR, an integer operation that the compiler cannot drop and that costs less than the
// load; one word per CTA is written. Lengths are clamped to [0, width], as the top-k kernels do.

#ifndef READ_FLOOR_THREADS
#define READ_FLOOR_THREADS 512
#endif
#ifndef READ_FLOOR_UNROLL
#define READ_FLOOR_UNROLL 4
#endif
constexpr int kReadFloorUnroll = READ_FLOOR_UNROLL;  // #pragma unroll takes no macro

extern "C" __global__ void __launch_bounds__(READ_FLOOR_THREADS)
read_floor(const float* __restrict__ logits, long long row_stride, const int* __restrict__ lengths,
           int width, int chunk, unsigned* __restrict__ out) {
    const int row = blockIdx.y;
    int n = lengths ? lengths[row] : width;
    n = n < 0 ? 0 : (n > width ? width : n);
    const long long begin = (long long)blockIdx.x * chunk;
    const long long end = begin + chunk < n ? begin + chunk : n;
    const float* base = logits + row * row_stride;
    unsigned acc = 0u;
    if (begin < end) {
        // scalar head up to a 16-byte boundary
        const unsigned long long addr = (unsigned long long)(base + begin);
        long long head = (long long)(((16u - (addr & 15u)) & 15u) / 4u);
        if (head > end - begin) head = end - begin;
        for (long long i = begin + threadIdx.x; i < begin + head; i += READ_FLOOR_THREADS)
            acc ^= __float_as_uint(base[i]);
        const long long body = begin + head;
        const long long vectors = (end - body) / 4;
        const float4* vec = reinterpret_cast<const float4*>(base + body);
#pragma unroll kReadFloorUnroll
        for (long long v = threadIdx.x; v < vectors; v += READ_FLOOR_THREADS) {
            const float4 x = __ldcs(vec + v);  // streaming: no reuse, keep it out of the way
            acc ^= __float_as_uint(x.x) ^ __float_as_uint(x.y) ^ __float_as_uint(x.z) ^ __float_as_uint(x.w);
        }
        for (long long i = body + vectors * 4 + threadIdx.x; i < end; i += READ_FLOOR_THREADS)
            acc ^= __float_as_uint(base[i]);
    }
    // fold the CTA's words: a warp XOR, then one shared word per warp
    for (int offset = 16; offset > 0; offset >>= 1) acc ^= __shfl_xor_sync(0xFFFFFFFFu, acc, offset);
    __shared__ unsigned warp_acc[READ_FLOOR_THREADS / 32];
    if ((threadIdx.x & 31) == 0) warp_acc[threadIdx.x >> 5] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned total = 0u;
        for (int w = 0; w < READ_FLOOR_THREADS / 32; ++w) total ^= warp_acc[w];
        out[(long long)row * gridDim.x + blockIdx.x] = total;
    }
}
