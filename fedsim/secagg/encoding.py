"""Updates to integer vectors mod M and sums back to floats; the aggregate's result type."""
from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import numpy as np

from fedsim.secagg.config import SecAggConfig
from fedsim.secagg.errors import TensorSpecError
from fedsim.secagg.quantize import dequantize_sum, quantize
from fedsim.secagg.spec import TensorSpec

META_LENGTH = 2
"""Integers appended after the m coordinates: the weight w, the client's clipped-coordinate count."""


@dataclass(frozen=True)
class AggregateResult:
    """What the server learns: the weighted sum, the total weight, who is in it, the clipped count."""

    weighted_sum: dict[str, np.ndarray]
    total_weight: int
    survivors: tuple[Hashable, ...]
    dropped: tuple[Hashable, ...]
    clipped_count: int
    coordinate_count: int
    mode: str

    def mean(self) -> dict[str, np.ndarray]:
        """The weighted mean sum_k w_k x_k / sum_k w_k (FedAvg)."""
        return {name: value / self.total_weight for name, value in self.weighted_sum.items()}

    @property
    def clipped_fraction(self) -> float:
        """Fraction of the survivors' coordinates that were clipped to [-c, c]."""
        return self.clipped_count / self.coordinate_count if self.coordinate_count else 0.0


def capped_weight(weight: int, config: SecAggConfig, who: str) -> int:
    """Validate an integer weight (sample count) and cap it at config.max_weight."""
    if isinstance(weight, bool) or not isinstance(weight, (int, np.integer)) or weight < 1:
        raise TensorSpecError(f"{who}: weight must be a positive integer (sample count), got {weight!r}")
    return min(int(weight), config.max_weight)


def encode_update(update: Mapping[str, np.ndarray], weight: int, spec: TensorSpec, config: SecAggConfig,
                  rng: np.random.Generator, who: str) -> np.ndarray:
    """The vector [w*q (m coordinates), w, clipped count] mod M, in config.dtype.

    q quantises each tensor with its own clipping range, in the spec's flat order.
    """
    spec.check(update, who)
    w = capped_weight(weight, config, who)
    vector = np.empty(spec.total + META_LENGTH, dtype=np.uint64)
    clipped_total = 0
    for name, where in spec.slices().items():
        levels, clipped = quantize(update[name], config.clip_for(name), config.levels, rng)
        vector[where] = levels * np.uint64(w)
        clipped_total += clipped
    vector[spec.total:] = (w, clipped_total)
    return vector.astype(config.dtype, copy=False)


def decode_sum(vector: np.ndarray, spec: TensorSpec, config: SecAggConfig) -> tuple[dict[str, np.ndarray], int, int]:
    """From the unmasked sum vector: (sum_k w_k x_k per tensor, total weight, total clipped count)."""
    total_weight = int(vector[spec.total])
    clipped = int(vector[spec.total + 1])
    weighted_sum = {
        name: dequantize_sum(vector[where], total_weight, config.clip_for(name), config.levels).reshape(shape)
        for (name, where), shape in zip(spec.slices().items(), spec.shapes)
    }
    return weighted_sum, total_weight, clipped
