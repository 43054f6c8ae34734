"""Sparse top-k logits of one token sequence, the wire format of algorithms.md §0.4.

The server LLM's deployment returns them and the server trainer computes them; distillation losses
read them. Ids are int32 and values float16 raw logits, both [n_positions, k]: 6 bytes per kept entry.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class TopKResult:
    """Top-k logits of one sequence: position t holds the k largest logits predicting t+1.

    ``ids`` int32 and ``values`` float16, both [n_positions, k], values in descending
    order per row. 6 bytes per kept entry on the wire.
    """

    ids: np.ndarray
    values: np.ndarray
    adapter_version: int = 0  # the version of the served LoRA adapter that computed them (not payload)

    def __post_init__(self) -> None:
        if self.ids.dtype != np.int32 or self.values.dtype != np.float16:
            raise ValueError(f"TopKResult needs int32 ids and float16 values, got "
                             f"{self.ids.dtype} and {self.values.dtype}")
        if self.ids.ndim != 2 or self.ids.shape != self.values.shape:
            raise ValueError(f"TopKResult ids and values must share a 2-D shape, got "
                             f"{self.ids.shape} and {self.values.shape}")

    @property
    def n_positions(self) -> int:
        """Number of positions (tokens of the input sequence)."""
        return int(self.ids.shape[0])

    @property
    def k(self) -> int:
        """Number of kept logits per position."""
        return int(self.ids.shape[1])

    @property
    def nbytes(self) -> int:
        """Payload bytes: ids plus values."""
        return int(self.ids.nbytes + self.values.nbytes)
