"""Order-preserving integer keys for fp32 scores (docs/design.md section 4), the Python twins of the
kernels' ``topk::float_key``, ``topk::coarse_key`` and ``topk::coarse_key_range``
(kernels/topk_common.cuh; tests/test_keys_gpu.py runs both on the same values).

The key of a float is an unsigned 32-bit integer whose order is the float order: negatives have
all bits flipped, positives only the sign bit. NaN (any payload, either sign) becomes the largest
key, as torch.topk ranks NaN above +inf, and -0.0 becomes +0.0 so that equal values get equal keys.
Subnormals keep their own keys: everything here works on the raw bits with integer operations,
so no flush-to-zero mode (CPU or GPU) can merge them with zero. Keys are returned as int64 so that
torch can sort and compare them on any device.

The coarse key is the kernels' first digit: 16 bits, monotone (not strictly) in the key, with
fp16's resolution over a similar range: the sign, then the low 5 exponent bits and top 10 mantissa
bits of the magnitude clamped to [2**-15, 2**17). ``coarse_key_range`` gives the exact key range
of a span of coarse codes.
"""

from __future__ import annotations

import numpy as np
import torch

_SIGN = 0x80000000
_ABS = 0x7FFFFFFF
_INF = 0x7F800000
_ALL = 0xFFFFFFFF

#: Coarse key: magnitudes below 2**-15 share a code; 13 fp32 mantissa bits are dropped.
COARSE_MANTISSA_SHIFT = 13
COARSE_MAG_LO = 112 << 23
COARSE_MAG_HI = COARSE_MAG_LO + (0x8000 << COARSE_MANTISSA_SHIFT) - 1


def _bits(values: torch.Tensor) -> torch.Tensor:
    """The fp32 bit patterns as int64 in [0, 2**32)."""
    if values.dtype != torch.float32:
        raise TypeError(f"float keys expect float32, got {values.dtype}")
    return values.contiguous().view(torch.int32).to(torch.int64) & _ALL


def float_keys(values: torch.Tensor) -> torch.Tensor:
    """int64 keys in [0, 2**32) whose order and equality match the float order and equality."""
    bits = _bits(values)
    bits = torch.where(bits == _SIGN, torch.zeros_like(bits), bits)  # -0.0 is +0.0
    keys = torch.where((bits & _SIGN) != 0, bits ^ _ALL, bits | _SIGN)
    return torch.where((bits & _ABS) > _INF, torch.full_like(keys, _ALL), keys)  # every NaN on top


def float_keys_np(values: np.ndarray) -> np.ndarray:
    """NumPy twin of :func:`float_keys` (int64 keys)."""
    return float_keys(torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))).numpy()


def keys_to_float(keys: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`float_keys` for non-NaN keys (used by workloads that build bit patterns)."""
    keys = keys.to(torch.int64) & _ALL
    positive = (keys & _SIGN) != 0
    bits = torch.where(positive, keys ^ _SIGN, keys ^ _ALL)
    # Reinterpret the low 32 bits as float32 through int32 (two's complement wrap).
    bits = torch.where(bits >= _SIGN, bits - (1 << 32), bits).to(torch.int32)
    return bits.view(torch.float32)


def coarse_keys(values: torch.Tensor) -> torch.Tensor:
    """The kernels' 16-bit coarse keys (int64 in [0, 65536)) of float32 values."""
    bits = _bits(values)
    mag = bits & _ABS
    h = (mag.clamp(COARSE_MAG_LO, COARSE_MAG_HI) - COARSE_MAG_LO) >> COARSE_MANTISSA_SHIFT
    negative = (bits > _SIGN) & (bits <= _SIGN | _INF)  # not -0.0, not a NaN
    return h ^ torch.where(negative, torch.full_like(h, 0x7FFF), torch.full_like(h, 0x8000))


def _coarse_mag_first(h: torch.Tensor) -> torch.Tensor:
    return torch.where(h == 0, torch.zeros_like(h), COARSE_MAG_LO + (h << COARSE_MANTISSA_SHIFT))


def _coarse_mag_last(h: torch.Tensor) -> torch.Tensor:
    last = COARSE_MAG_LO + (h << COARSE_MANTISSA_SHIFT) + ((1 << COARSE_MANTISSA_SHIFT) - 1)
    return torch.where(h == 0x7FFF, torch.full_like(h, _ABS), last)


def coarse_key_range(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first, last) int64 key bounds of the values whose coarse key lies in [lo, hi] (inclusive)."""
    lo = torch.as_tensor(lo).to(torch.int64)
    hi = torch.as_tensor(hi).to(torch.int64)
    first = torch.where((lo & 0x8000) != 0, _SIGN + _coarse_mag_first(lo & 0x7FFF),
                        _ABS - _coarse_mag_last(0x7FFF - lo))
    last = torch.where((hi & 0x8000) != 0, _SIGN + _coarse_mag_last(hi & 0x7FFF),
                       _ABS - _coarse_mag_first(0x7FFF - hi))
    return first, last
