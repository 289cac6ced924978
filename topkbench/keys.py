"""Order-preserving integer keys for fp32 scores (DESIGN.md section 4).

The key of a float is an unsigned 32-bit integer whose order is the float order: negatives have
all bits flipped, positives only the sign bit. NaN (any payload, either sign) becomes the largest
key, as torch.topk ranks NaN above +inf, and -0.0 becomes +0.0 so that equal values get equal keys.
Keys are returned as int64 so that torch can sort and compare them on any device.
"""

from __future__ import annotations

import numpy as np
import torch

_SIGN = 0x80000000
_ALL = 0xFFFFFFFF


def float_keys(values: torch.Tensor) -> torch.Tensor:
    """int64 keys in [0, 2**32) whose order and equality match the float order and equality."""
    if values.dtype != torch.float32:
        raise TypeError(f"float_keys expects float32, got {values.dtype}")
    canonical = values + 0.0  # -0.0 + 0.0 == +0.0 under round-to-nearest
    bits = canonical.contiguous().view(torch.int32).to(torch.int64) & _ALL
    negative = (bits & _SIGN) != 0
    keys = torch.where(negative, bits ^ _ALL, bits | _SIGN)
    return torch.where(torch.isnan(values), torch.full_like(keys, _ALL), keys)


def float_keys_np(values: np.ndarray) -> np.ndarray:
    """NumPy twin of :func:`float_keys` (uint64 keys)."""
    return float_keys(torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))).numpy()


def keys_to_float(keys: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`float_keys` for non-NaN keys (used by workloads that build bit patterns)."""
    keys = keys.to(torch.int64) & _ALL
    positive = (keys & _SIGN) != 0
    bits = torch.where(positive, keys ^ _SIGN, keys ^ _ALL)
    # Reinterpret the low 32 bits as float32 through int32 (two's complement wrap).
    bits = torch.where(bits >= _SIGN, bits - (1 << 32), bits).to(torch.int32)
    return bits.view(torch.float32)
