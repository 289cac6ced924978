"""The measured read floor: one streaming read of a point's valid scores (kernels/read_floor.cu).

A sweep times it at every GPU point, interleaved with the implementations and in the same timing
mode, and stores it as ``read_us``: "x the read floor" is how far a top-k kernel is from the one
pass over the scores it cannot avoid. The bytes/bandwidth figure (``floor_us``) is kept too; it
is meaningless at small shapes, where launch and latency dominate.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from topkbench.cuda import loader

SOURCE = "read_floor.cu"
KERNEL = "read_floor"
DEFINES = {"READ_FLOOR_THREADS": 512, "READ_FLOOR_UNROLL": 4}
#: Elements one CTA reads: at least a few loads per thread, at most a few hundred KB per CTA.
MIN_CHUNK, MAX_CHUNK = 4 * 512, 64 * 512
#: CTAs per SM the chunking aims for, so that enough bytes are in flight to saturate HBM.
CTAS_PER_SM = 4


def chunk_elements(rows: int, width: int, sm_count: int) -> int:
    """Elements per CTA: small enough to give every SM several CTAs, a multiple of 4 x threads."""
    per_row = max(1, math.ceil(CTAS_PER_SM * sm_count / rows))
    chunk = math.ceil(width / per_row)
    step = 4 * DEFINES["READ_FLOOR_THREADS"]
    return max(MIN_CHUNK, min(MAX_CHUNK, math.ceil(chunk / step) * step))


def read_floor_runner(logits: torch.Tensor, lengths: torch.Tensor | None) -> loader.KernelRunner:
    """A runner that reads every valid score once (graph capturable, like the top-k kernels)."""
    rows, width = logits.shape
    index = loader.device_index(logits)
    sm_count = int(loader.device_properties(index)["multiProcessorCount"])
    chunk = chunk_elements(rows, width, sm_count)
    chunks = math.ceil(width / chunk)
    out = torch.empty((rows, chunks), dtype=torch.int32, device=logits.device)
    kernel = loader.get_kernel(SOURCE, KERNEL, DEFINES, device_index=index)
    args = (loader.pointer(logits), np.int64(logits.stride(0)), loader.pointer(lengths), np.int32(width),
            np.int32(chunk), loader.pointer(out))
    return loader.KernelRunner(kernel, (chunks, rows), (DEFINES["READ_FLOOR_THREADS"],), args, out,
                               (logits, lengths))


def expected_fold(logits: torch.Tensor, lengths: torch.Tensor | None, chunk: int) -> torch.Tensor:
    """What the kernel writes, computed with torch: the XOR of the bits of each chunk's valid
    scores (tests compare it with the kernel's output, so the read is known to cover every score)."""
    rows, width = logits.shape
    chunks = math.ceil(width / chunk)
    bits = logits.contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    n = (torch.full((rows,), width, device=logits.device) if lengths is None
         else lengths.to(torch.int64).clamp(0, width))
    valid = torch.arange(width, device=logits.device).unsqueeze(0) < n.unsqueeze(1)
    bits = torch.where(valid, bits, torch.zeros_like(bits))
    folded = torch.nn.functional.pad(bits, (0, chunks * chunk - width)).view(rows, chunks, chunk)
    size = 1 << (chunk - 1).bit_length()  # XOR-reduce by halving, zero-padded to a power of two
    folded = torch.nn.functional.pad(folded, (0, size - chunk))
    while folded.shape[-1] > 1:
        half = folded.shape[-1] // 2
        folded = folded[..., :half] ^ folded[..., half:]
    folded = folded.squeeze(-1)
    return torch.where(folded >= 2**31, folded - 2**32, folded).to(torch.int32)
