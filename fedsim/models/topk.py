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


@dataclass(frozen=True, eq=False)
class RaggedTopK:
    """Top-k logits of one sequence with only the present entries: the compact wire form.

    Row t holds ``ids[offsets[t]:offsets[t + 1]]`` (int32) and the same slice of ``values``
    (float16), in row order; ``offsets`` is int32 [n_positions + 1], from 0 to the entry count. A
    one-hot position costs one entry (6 bytes) instead of k, plus 4 bytes of offset per position.
    """

    offsets: np.ndarray
    ids: np.ndarray
    values: np.ndarray
    adapter_version: int = 0  # as in TopKResult (not payload)

    def __post_init__(self) -> None:
        if self.offsets.dtype != np.int32 or self.ids.dtype != np.int32 or self.values.dtype != np.float16:
            raise ValueError(f"RaggedTopK needs int32 offsets and ids and float16 values, got "
                             f"{self.offsets.dtype}, {self.ids.dtype} and {self.values.dtype}")
        if self.offsets.ndim != 1 or self.ids.ndim != 1 or self.ids.shape != self.values.shape:
            raise ValueError(f"RaggedTopK needs 1-D offsets and equal 1-D ids and values, got "
                             f"{self.offsets.shape}, {self.ids.shape} and {self.values.shape}")
        if (self.offsets.size == 0 or self.offsets[0] != 0 or self.offsets[-1] != self.ids.size
                or np.any(np.diff(self.offsets) < 0)):
            raise ValueError(f"RaggedTopK offsets must rise from 0 to the entry count {self.ids.size}, "
                             f"got {self.offsets.tolist()[:8]}...")

    @classmethod
    def from_topk(cls, result: TopKResult) -> RaggedTopK:
        """The present (value != -inf) entries of `result`, row by row."""
        present = ~np.isneginf(result.values)
        offsets = np.zeros(result.n_positions + 1, dtype=np.int32)
        np.cumsum(present.sum(axis=1), out=offsets[1:])
        return cls(offsets, result.ids[present], result.values[present], result.adapter_version)

    def to_topk(self, k: int) -> TopKResult:
        """The padded [n_positions, k] form: id 0 and value -inf after each row's entries."""
        counts = np.diff(self.offsets)
        longest = int(counts.max(initial=0))
        if k < longest:
            raise ValueError(f"to_topk needs k >= {longest} (the longest row), got {k}")
        rows = np.repeat(np.arange(self.n_positions), counts)
        columns = np.arange(self.ids.size) - self.offsets[rows]
        ids = np.zeros((self.n_positions, k), dtype=np.int32)
        values = np.full((self.n_positions, k), -np.inf, dtype=np.float16)
        ids[rows, columns] = self.ids
        values[rows, columns] = self.values
        return TopKResult(ids, values, self.adapter_version)

    @property
    def n_positions(self) -> int:
        """Number of positions (rows)."""
        return int(self.offsets.size - 1)

    @property
    def nbytes(self) -> int:
        """Payload bytes: offsets, ids and values."""
        return int(self.offsets.nbytes + self.ids.nbytes + self.values.nbytes)
