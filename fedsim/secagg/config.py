"""Configuration of secure aggregation (mode, quantisation, threshold, graph)."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedsim.secagg.errors import SecAggConfigError

MODES = ("protocol", "cost", "off")
MODULUS_BITS = (32, 64)
MAX_QUANT_BITS = 52  # quantisation runs in float64, exact up to 2^53


@dataclass(frozen=True)
class SecAggConfig:
    """How updates are quantised, masked and unmasked.

    clip_range: c, each coordinate is clipped to [-c, c] (one float, or one per tensor name).
    quant_bits: log2 of the number of quantisation levels Q.
    modulus_bits: log2 of the modulus M (32 or 64; arrays are uint32 / uint64 and wrap).
    threshold: Shamir threshold t: an int used as is, or a fraction f of the share holders (degree + 1):
        t = ceil(f * holders), at least 2 (so no lone survivor is ever unmasked, and no single holder
        can rebuild a secret). Privacy holds against the server colluding with fewer than t clients.
    neighbours: None for the complete graph, an int degree, or "log" for 2*ceil(log2 n).
    max_weight: integer weights (sample counts) are capped at this value.
    graph_seed: seeds the sparse graph (combined with the round).
    """

    clip_range: float | Mapping[str, float] = 1.0
    quant_bits: int = 24
    modulus_bits: int = 64
    threshold: int | float = 0.5
    neighbours: int | str | None = None
    max_weight: int = 2**20
    mode: str = "protocol"
    graph_seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SecAggConfigError(f"secagg.mode must be one of {MODES}, got {self.mode!r}")
        if self.modulus_bits not in MODULUS_BITS:
            raise SecAggConfigError(
                f"secagg.modulus_bits must be one of {MODULUS_BITS}, got {self.modulus_bits!r}")
        max_quant_bits = min(self.modulus_bits - 1, MAX_QUANT_BITS)
        if isinstance(self.quant_bits, bool) or not isinstance(self.quant_bits, int) \
                or not 1 <= self.quant_bits <= max_quant_bits:
            raise SecAggConfigError(
                f"secagg.quant_bits must be an int in [1, {max_quant_bits}], got {self.quant_bits!r}")
        clips = self.clip_range.values() if isinstance(self.clip_range, Mapping) else [self.clip_range]
        for clip in clips:
            if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0 or not math.isfinite(clip):
                raise SecAggConfigError(f"secagg.clip_range must be finite and > 0, got {clip!r}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
            raise SecAggConfigError(f"secagg.threshold must be an int or a fraction, got {self.threshold!r}")
        if isinstance(self.threshold, int) and self.threshold < 1:
            raise SecAggConfigError(f"secagg.threshold must be >= 1, got {self.threshold}")
        if isinstance(self.threshold, float) and not 0.0 < self.threshold <= 1.0:
            raise SecAggConfigError(f"secagg.threshold as a fraction must be in (0, 1], got {self.threshold}")
        if self.neighbours is not None and self.neighbours != "log":
            if isinstance(self.neighbours, bool) or not isinstance(self.neighbours, int) or self.neighbours < 1:
                raise SecAggConfigError(
                    f"secagg.neighbours must be None, 'log' or an int >= 1, got {self.neighbours!r}")
        if isinstance(self.max_weight, bool) or not isinstance(self.max_weight, int) or self.max_weight < 1:
            raise SecAggConfigError(f"secagg.max_weight must be an int >= 1, got {self.max_weight!r}")

    @property
    def levels(self) -> int:
        """Q, the number of quantisation levels."""
        return 2**self.quant_bits

    @property
    def dtype(self) -> np.dtype:
        """Unsigned integer dtype whose wrap-around is arithmetic mod M."""
        return np.dtype(np.uint64) if self.modulus_bits == 64 else np.dtype(np.uint32)

    def clip_for(self, name: str) -> float:
        """Clipping range c of tensor `name`."""
        if not isinstance(self.clip_range, Mapping):
            return float(self.clip_range)
        if name not in self.clip_range:
            raise SecAggConfigError(f"secagg.clip_range has no entry for tensor {name!r}")
        return float(self.clip_range[name])

    def threshold_for(self, holders: int) -> int:
        """Shamir threshold t for a secret shared among `holders` parties (the owner included)."""
        if isinstance(self.threshold, float):
            return max(min(2, holders), math.ceil(self.threshold * holders))
        return self.threshold

    def check_capacity(self, n_clients: int, n_coordinates: int) -> None:
        """Raise if a sum over `n_clients` clients could wrap around the modulus."""
        modulus = 2**self.modulus_bits
        if n_clients * self.max_weight * (self.levels - 1) >= modulus:
            raise SecAggConfigError(
                f"{n_clients} clients x max_weight {self.max_weight} x (2^{self.quant_bits} - 1) levels "
                f"can overflow the modulus 2^{self.modulus_bits}: lower quant_bits or max_weight")
        if n_clients * n_coordinates >= modulus:
            raise SecAggConfigError(
                f"{n_clients} clients x {n_coordinates} coordinates can overflow the clipped-count sum "
                f"mod 2^{self.modulus_bits}")
