"""Seeded, reproducible inputs for one sweep point (docs/design.md section 5).

Scores are generated with torch on the target device (a GPU run never copies 100+ MB from the
host). Entries past each row's length, and any padding between the width and the row stride, are
garbage: large finite values and NaN, never -inf, so a kernel that reads past the end selects them
and fails the exactness check.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum

import torch

from topkbench.keys import keys_to_float


class Distribution(str, Enum):
    NORMAL = "normal"
    RELU_PLATEAU = "relu_plateau"
    LSB10 = "lsb10"
    CONSTANT = "constant"
    ASCENDING = "ascending"
    TIE_HEAVY = "tie_heavy"
    #: Test-only: normal scores sprinkled with NaN, +-inf and +-0.0.
    SPECIALS = "specials"
    #: About k/2 positive subnormals per row, a quarter negative subnormals, the rest +0.0 and -0.0:
    #: the k-th value is zero, in a plateau of both signed zeros, just below the subnormals.
    SUBNORMAL_ZEROS = "subnormal_zeros"
    #: Subnormals of both signs among normal values, tiny normals near FLT_MIN and signed zeros;
    #: for k well below the length the k-th value is a positive subnormal.
    SUBNORMAL_MIXED = "subnormal_mixed"
    #: About k/2 positive normals, then a plateau of the smallest subnormal (2**-149) holding the
    #: k-th value, then +-0.0, -2**-149 and negative normals.
    SUBNORMAL_MIN = "subnormal_min"


#: The distributions of docs/design.md section 5, which every kernel must pass.
ADVERSARIAL = tuple(Distribution)
#: The distributions whose scores include subnormal floats (issue 11).
SUBNORMAL = (Distribution.SUBNORMAL_ZEROS, Distribution.SUBNORMAL_MIXED, Distribution.SUBNORMAL_MIN)

#: The smallest positive subnormal float32 (bit pattern 1) and the smallest normal one.
SMALLEST_SUBNORMAL = 2.0 ** -149
SMALLEST_NORMAL = 2.0 ** -126


class LengthMode(str, Enum):
    FIXED = "fixed"
    #: Lengths uniform in [0.8 L, L], as serving benchmarks draw them.
    RAGGED = "ragged"


@dataclass(frozen=True)
class WorkloadSpec:
    rows: int
    seq_len: int
    k: int
    distribution: Distribution = Distribution.NORMAL
    length_mode: LengthMode = LengthMode.FIXED
    seed: int = 0
    #: Row stride in elements; None means seq_len (dense rows).
    row_stride: int | None = None

    def point_seed(self) -> int:
        """A seed that depends on every field, so each point is reproducible on its own."""
        text = f"{self.seed}|{self.rows}|{self.seq_len}|{self.k}|{self.distribution.value}|{self.length_mode.value}"
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


@dataclass
class Workload:
    spec: WorkloadSpec
    #: [rows, seq_len] float32, row stride spec.row_stride (or seq_len).
    logits: torch.Tensor
    #: int32 [rows], each in [1, seq_len].
    lengths: torch.Tensor
    #: What to pass as ``lengths`` to an implementation: None when every row is full width.
    lengths_arg: torch.Tensor | None
    mean_length: float

    @property
    def bytes_moved(self) -> int:
        return bytes_moved(self.spec.rows, self.mean_length, self.spec.k)


def bytes_moved(rows: int, mean_length: float, k: int) -> int:
    """The least traffic of a selection: every valid score read once, k int32 indices written."""
    return int(round(rows * mean_length * 4)) + rows * k * 4


def _draw_lengths(spec: WorkloadSpec, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    if spec.length_mode is LengthMode.FIXED:
        return torch.full((spec.rows,), spec.seq_len, dtype=torch.int32, device=device)
    low = max(1, int(0.8 * spec.seq_len))
    return torch.randint(low, spec.seq_len + 1, (spec.rows,), generator=gen, device=device, dtype=torch.int32)


def scores(distribution: Distribution, rows: int, width: int, k: int, gen: torch.Generator,
           device: torch.device) -> torch.Tensor:
    """[rows, width] float32 scores of one distribution (no garbage yet)."""
    shape = (rows, width)
    if distribution is Distribution.NORMAL:
        return torch.randn(shape, generator=gen, device=device)
    if distribution is Distribution.RELU_PLATEAU:
        # About k/2 positive scores per row and exact 0.0 elsewhere: the k-th value lies in a
        # plateau of thousands of ties, as the indexer's ReLU produces.
        positive_share = min(1.0, 0.5 * k / width)
        positive = torch.rand(shape, generator=gen, device=device) < positive_share
        magnitude = torch.randn(shape, generator=gen, device=device).abs() + 1e-6
        return torch.where(positive, magnitude, torch.zeros_like(magnitude))
    if distribution is Distribution.LSB10:
        # Top 22 bits fixed (the key of 1.0f), 10 random low bits: only the last digit decides.
        low = torch.randint(0, 1 << 10, shape, generator=gen, device=device, dtype=torch.int64)
        return keys_to_float((0xBF800000 & ~0x3FF) | low)
    if distribution is Distribution.CONSTANT:
        return torch.full(shape, 0.5, device=device)
    if distribution is Distribution.ASCENDING:
        return torch.arange(width, device=device, dtype=torch.float32).expand(rows, width).clone()
    if distribution is Distribution.TIE_HEAVY:
        return torch.randint(0, 8, shape, generator=gen, device=device).to(torch.float32) * 0.25 - 1.0
    if distribution is Distribution.SPECIALS:
        x = torch.randn(shape, generator=gen, device=device)
        pick = torch.randint(0, 64, shape, generator=gen, device=device)
        specials = torch.tensor([float("nan"), float("inf"), float("-inf"), -0.0, 0.0], device=device)
        return torch.where(pick < 5, specials[pick.clamp(max=4)], x)
    if distribution in SUBNORMAL:
        return _subnormal_scores(distribution, shape, k, gen, device)
    raise ValueError(f"unknown distribution {distribution!r}")


def _subnormals(shape: tuple[int, int], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Positive subnormal float32 values: a random non-zero 23-bit pattern each."""
    bits = torch.randint(1, 1 << 23, shape, generator=gen, device=device, dtype=torch.int32)
    return bits.view(torch.float32)


def _subnormal_scores(distribution: Distribution, shape: tuple[int, int], k: int, gen: torch.Generator,
                      device: torch.device) -> torch.Tensor:
    share = min(1.0, k / shape[1])  # k as a share of the row
    u = torch.rand(shape, generator=gen, device=device)
    sub = _subnormals(shape, gen, device)
    zero = torch.where(torch.rand(shape, generator=gen, device=device) < 0.5, 0.0, -0.0)
    if distribution is Distribution.SUBNORMAL_ZEROS:
        return torch.where(u < 0.5 * share, sub, torch.where(u < 0.5 * share + 0.25, -sub, zero))
    if distribution is Distribution.SUBNORMAL_MIXED:
        normal = torch.randn(shape, generator=gen, device=device)
        # Tiny normals in [2**-126, 2**-100): just above the subnormals.
        tiny = SMALLEST_NORMAL * torch.exp2(torch.rand(shape, generator=gen, device=device) * 26.0)
        value = torch.where(u < 0.3 * share, normal.abs(), tiny)
        value = torch.where(u < 0.6 * share + 0.3, torch.where(u < 0.6 * share, value, sub), -value)
        pick = torch.rand(shape, generator=gen, device=device)
        negative_sub = torch.where(pick < 0.5, -sub, zero)
        return torch.where((u >= 0.6 * share + 0.3) & (pick < 0.6), negative_sub, value)
    # SUBNORMAL_MIN
    positive = torch.randn(shape, generator=gen, device=device).abs() + 1e-6
    below = torch.where(u < 0.5 * share + 0.6, zero, -torch.full_like(u, SMALLEST_SUBNORMAL))
    below = torch.where(u < 0.5 * share + 0.8, below, -positive)
    at = torch.full_like(u, SMALLEST_SUBNORMAL)
    return torch.where(u < 0.5 * share, positive, torch.where(u < share + 0.25, at, below))


def garbage(shape: tuple[int, int], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Large finite values (1e30..1.6e38 in magnitude, both signs) and NaN, never -inf."""
    # exp(69.1) = 1.02e30: the lower bound keeps every finite garbage value at or above 1e30
    # (exp(69.0) would be 9.25e29); exp(88.0) = 1.65e38 stays below FLT_MAX.
    magnitude = torch.exp(torch.empty(shape, device=device).uniform_(69.1, 88.0, generator=gen))
    sign = torch.where(torch.rand(shape, generator=gen, device=device) < 0.75, 1.0, -1.0)
    nan = torch.rand(shape, generator=gen, device=device) < 0.25
    return torch.where(nan, torch.full_like(magnitude, float("nan")), magnitude * sign)


def make_workload(spec: WorkloadSpec, device: torch.device | str = "cpu") -> Workload:
    """The inputs of one point: scores, lengths, and garbage past each length and in the padding."""
    device = torch.device(device)
    stride = spec.row_stride or spec.seq_len
    if stride < spec.seq_len:
        raise ValueError(f"row_stride {stride} is smaller than seq_len {spec.seq_len}")
    gen = torch.Generator(device=device)
    gen.manual_seed(spec.point_seed())
    lengths = _draw_lengths(spec, gen, device)
    storage = garbage((spec.rows, stride), gen, device)
    valid = scores(spec.distribution, spec.rows, spec.seq_len, spec.k, gen, device)
    columns = torch.arange(spec.seq_len, device=device).unsqueeze(0)
    logits = storage[:, : spec.seq_len]
    logits.copy_(torch.where(columns < lengths.unsqueeze(1).to(torch.int64), valid, logits))
    fixed = spec.length_mode is LengthMode.FIXED
    mean_length = float(spec.seq_len) if fixed else float(lengths.to(torch.float64).mean())
    return Workload(spec, logits, lengths, None if fixed else lengths, mean_length)


class PointInputs:
    """One point's workload on the run's device, with a CPU copy made once when a CPU
    implementation needs it (the same values, so every implementation sees identical input)."""

    def __init__(self, spec: WorkloadSpec, cuda: bool) -> None:
        self.primary = make_workload(spec, "cuda" if cuda else "cpu")
        self._cpu: Workload | None = None if cuda else self.primary

    def devices(self) -> list[str]:
        """The device types this point's inputs exist on so far."""
        return [self.primary.logits.device.type] + (["cpu"] if self._cpu is not None and self._cpu is not self.primary
                                                   else [])

    def on(self, device_type: str) -> Workload:
        if device_type == self.primary.logits.device.type:
            return self.primary
        if device_type != "cpu":
            raise ValueError(f"no {device_type} copy of a workload generated on {self.primary.logits.device}")
        if self._cpu is None:
            w = self.primary
            lengths = w.lengths.cpu()
            self._cpu = Workload(w.spec, w.logits.cpu(), lengths,
                                 None if w.lengths_arg is None else lengths, w.mean_length)
        return self._cpu
