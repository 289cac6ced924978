"""The kernels' key functions on the GPU, compiled the way CuPy compiles every kernel (with the
-ftz=true that CuPy appends), against their Python twins in topkbench.keys.

A tiny probe kernel includes kernels/topk_common.cuh and applies ``topk::float_key``,
``topk::coarse_key`` and ``topk::coarse_key_range`` to subnormals of both signs, signed zeros,
infinities, NaN payloads, random floats and the end of every coarse range. If a future change puts a
flushing float operation on the key path, subnormals get zero's key here (issue 11).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from topkbench.cuda import loader
from topkbench.keys import coarse_key_range, coarse_keys, float_keys, keys_to_float

pytestmark = pytest.mark.gpu

PROBE = r"""
extern "C" __global__ void key_probe(const float* x, int n, unsigned int* fkey, unsigned int* ckey) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        fkey[i] = topk::float_key(x[i]);
        ckey[i] = topk::coarse_key(x[i]);
    }
}
extern "C" __global__ void range_probe(const unsigned int* lo, const unsigned int* hi, int n,
                                       unsigned int* first, unsigned int* last) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        const topk::KeyRange r = topk::coarse_key_range(lo[i], hi[i]);
        first[i] = r.first;
        last[i] = r.last;
    }
}
"""


@pytest.fixture(scope="module")
def probe():
    cupy = loader.require_cupy()
    module = cupy.RawModule(code=loader.expand_includes("topk_common.cuh") + PROBE, options=(loader.CXX_STANDARD,))
    return cupy, module


def _values() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    sub = torch.randint(1, 1 << 23, (200000,), generator=gen, dtype=torch.int32).view(torch.float32)
    spread = torch.randn(200000, generator=gen) * torch.exp2(torch.randint(-150, 128, (200000,), generator=gen).float())
    ends = torch.cat(coarse_key_range(torch.arange(1 << 16), torch.arange(1 << 16)))
    ends = ends[(ends >= 0x007FFFFF) & (ends <= 0xFF800000) & (ends != 0x7FFFFFFF)]  # keys floats have
    specials = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), 1.17549435e-38, -1.17549435e-38,
                             3.4028235e38, -3.4028235e38, 2.0 ** -149, -(2.0 ** -149), 1.0, -1.0])
    nans = torch.tensor([0x7FC00000, 0x7F800001, 0x7FFFFFFF, -0x00400000, -1, -0x007FFFFF],
                        dtype=torch.int32).view(torch.float32)
    return torch.cat([sub, -sub, spread, keys_to_float(ends), specials, nans])


def test_float_and_coarse_keys_match_the_python_twins(probe):
    cupy, module = probe
    x = _values()
    n = x.numel()
    xd = cupy.asarray(x.numpy())
    fk = cupy.empty(n, dtype=cupy.uint32)
    ck = cupy.empty(n, dtype=cupy.uint32)
    module.get_function("key_probe")(((n + 255) // 256,), (256,), (xd, np.int32(n), fk, ck))
    got_f = torch.from_numpy(fk.get().astype(np.int64))
    got_c = torch.from_numpy(ck.get().astype(np.int64))
    bad = torch.nonzero(got_f != float_keys(x)).flatten()
    assert bad.numel() == 0, f"float_key differs at {x[bad[:5]].tolist()}: {got_f[bad[:5]].tolist()}"
    bad = torch.nonzero(got_c != coarse_keys(x)).flatten()
    assert bad.numel() == 0, f"coarse_key differs at {x[bad[:5]].tolist()}: {got_c[bad[:5]].tolist()}"
    # The subnormals keep keys of their own: strictly between -0.0/+0.0's key and the normals'.
    zero = int(float_keys(torch.tensor([0.0]))[0])
    assert bool((got_f[:200000] > zero).all()) and bool((got_f[200000:400000] < zero).all())


def test_coarse_key_range_matches_the_python_twin(probe):
    cupy, module = probe
    gen = torch.Generator().manual_seed(1)
    lo = torch.randint(0, 1 << 16, (100000,), generator=gen)
    hi = torch.minimum(lo + torch.randint(0, 300, (100000,), generator=gen), torch.tensor(0xFFFF))
    lo = torch.cat([torch.arange(1 << 16), lo])
    hi = torch.cat([torch.arange(1 << 16), hi])
    n = lo.numel()
    first = cupy.empty(n, dtype=cupy.uint32)
    last = cupy.empty(n, dtype=cupy.uint32)
    args = (cupy.asarray(lo.numpy().astype(np.uint32)), cupy.asarray(hi.numpy().astype(np.uint32)), np.int32(n), first, last)
    module.get_function("range_probe")(((n + 255) // 256,), (256,), args)
    want_first, want_last = coarse_key_range(lo, hi)
    assert torch.equal(torch.from_numpy(first.get().astype(np.int64)), want_first)
    assert torch.equal(torch.from_numpy(last.get().astype(np.int64)), want_last)
