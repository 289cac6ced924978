"""Will a point's data fit? Checked before anything is allocated.

A point holds its scores, the temporaries that generate them, the exactness reference (int64 keys
of every score and their sorted top-k) and the implementations' buffers. Measured on the CPU at
64 x 200000: 49 bytes per score at the peak; 64 leaves room for the implementations' workspaces.
A config whose largest point would not fit is refused with one line before the sweep starts,
instead of failing half way with an allocator error.
"""

from __future__ import annotations

from pathlib import Path

from topkbench.errors import UsageError

#: Peak bytes per score of one point (workload generation, reference, implementation buffers).
BYTES_PER_SCORE = 64
#: Share of the free memory a point may take.
USABLE_SHARE = 0.9


def available_bytes(cuda: bool) -> int | None:
    """Free memory of the current CUDA device, or the host's available memory; None if unknown."""
    if cuda:
        import torch

        return int(torch.cuda.mem_get_info()[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def point_bytes(rows: int, seq_len: int) -> int:
    return rows * seq_len * BYTES_PER_SCORE


def check_fits(shapes: list[tuple[int, int]], cuda: bool, available: int | None = None) -> None:
    """UsageError naming the largest (rows, seq_len) when it cannot fit in the free memory."""
    if not shapes:
        return
    free = available_bytes(cuda) if available is None else available
    if free is None:
        return
    rows, seq_len = max(shapes, key=lambda s: s[0] * s[1])
    need = point_bytes(rows, seq_len)
    if need > USABLE_SHARE * free:
        where = "GPU" if cuda else "host"
        raise UsageError(f"the point rows={rows} seq_len={seq_len} needs about {need / 2**30:.1f} GiB of {where} "
                         f"memory (scores, reference and buffers); {free / 2**30:.1f} GiB is free",
                         hint="leave it out with --only, or lower the config's rows or seq_len")
