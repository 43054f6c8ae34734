"""Candidate structures for the token-level exponential mechanisms.

A `CandidatePool` holds, for one class of perturbable tokens (words or numbers):
- neighbour lists: per token its top-M tokens by utility, sorted, itself first (AEM);
- EM groups: a partition of the pool into groups of about K similar tokens, built greedily
  (take the first unassigned token, add its K-1 most similar unassigned tokens, repeat;
  the last group takes every token left once fewer than 2K remain), with each group's
  utility matrix and its sensitivity.

Utilities lie in [-1, 1] with u(t, t) = 1: cosine similarity of input embeddings for
words, 1 - 2|x - x'| / R for numbers (R = range of the pool's values).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SimilarityBlock = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""similarity(rows, cols) -> utilities [len(rows), len(cols)] between pool members."""

_BYTES_PER_SIMILARITY = 16  # float32 value + int64 partition index + slack


@dataclass(frozen=True)
class CandidatePool:
    """Neighbour lists and EM groups of one token class (indices are pool positions)."""

    neighbour_idx: np.ndarray      # int32 [P, M], row t starts with t
    neighbour_util: np.ndarray     # float32 [P, M], non-increasing, first entry 1.0
    group_idx: np.ndarray          # int32 [P, Kmax], members of t's group, then padding
    group_util: np.ndarray         # float64 [P, Kmax], u(t, member), 0 on padding
    group_size: np.ndarray         # int32 [P]
    group_sensitivity: np.ndarray  # float64 [P], Δu of t's group

    @property
    def size(self) -> int:
        return int(self.neighbour_idx.shape[0])

    @property
    def n_groups(self) -> int:
        return len({tuple(row[:n]) for row, n in zip(self.group_idx.tolist(), self.group_size.tolist())})

    def em_cdf(self, eps: float) -> np.ndarray:
        """Cumulative EM probabilities per token over its group: P ∝ exp(eps·u / (2Δu)).

        A group with Δu = 0 (identical utilities) gets the uniform distribution.
        """
        sensitivity = np.where(self.group_sensitivity > 0, self.group_sensitivity, np.inf)
        logits = eps * self.group_util / (2.0 * sensitivity[:, None])
        valid = np.arange(self.group_idx.shape[1])[None, :] < self.group_size[:, None]
        logits = np.where(valid, logits, -np.inf)
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        cdf = np.cumsum(weights, axis=1)
        cdf /= cdf[:, -1:]
        return cdf


def cosine_similarity_block(embeddings: np.ndarray) -> SimilarityBlock:
    """Cosine similarity between rows of `embeddings` (float32, no zero rows)."""
    norms = np.linalg.norm(embeddings, axis=1).astype(np.float32)

    def similarity(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        dots = embeddings[rows] @ embeddings[cols].T
        return np.clip(dots / (norms[rows, None] * norms[None, cols]), -1.0, 1.0)

    return similarity


def numeric_similarity_block(values: np.ndarray) -> SimilarityBlock:
    """Numeric utility 1 - 2|x - x'| / R, R the range of `values` (1 when all are equal)."""
    value_range = float(values.max() - values.min()) if values.size else 0.0
    scale = value_range if value_range > 0 else 1.0

    def similarity(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return (1.0 - 2.0 * np.abs(values[rows, None] - values[None, cols]) / scale).astype(np.float32)

    return similarity


def top_neighbours(n_items: int, m: int, similarity: SimilarityBlock,
                   chunk_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per item, its m most similar items (itself first, utility 1), in row chunks.

    At most about `chunk_bytes` of similarities exist at any time, so a V x V matrix is
    never materialised.
    """
    m = min(m, n_items)
    neighbour_idx = np.empty((n_items, m), dtype=np.int32)
    neighbour_util = np.empty((n_items, m), dtype=np.float32)
    chunk_rows = max(1, chunk_bytes // (_BYTES_PER_SIMILARITY * max(n_items, 1)))
    all_cols = np.arange(n_items)
    for start in range(0, n_items, chunk_rows):
        rows = np.arange(start, min(n_items, start + chunk_rows))
        sims = similarity(rows, all_cols).astype(np.float32, copy=False)
        sims[np.arange(rows.size), rows] = np.inf  # the token itself always comes first
        if m < n_items:
            picked = np.argpartition(-sims, m - 1, axis=1)[:, :m]
        else:
            picked = np.broadcast_to(all_cols, (rows.size, n_items))
        picked_sims = np.take_along_axis(sims, picked, axis=1)
        order = np.argsort(-picked_sims, axis=1, kind="stable")
        neighbour_idx[rows] = np.take_along_axis(picked, order, axis=1)
        neighbour_util[rows] = np.take_along_axis(picked_sims, order, axis=1)
        neighbour_util[rows, 0] = 1.0
    return neighbour_idx, neighbour_util


def greedy_groups(neighbour_idx: np.ndarray, group_size: int,
                  similarity: SimilarityBlock) -> list[np.ndarray]:
    """Partition the pool into groups of `group_size` similar items (see module docstring).

    A seed whose neighbour list holds too few unassigned items is compared with every
    unassigned item instead.
    """
    n_items = neighbour_idx.shape[0]
    assigned = np.zeros(n_items, dtype=bool)
    n_left = n_items
    groups: list[np.ndarray] = []
    for seed in range(n_items):
        if assigned[seed]:
            continue
        if n_left < 2 * group_size:
            members = np.flatnonzero(~assigned)
        else:
            listed = neighbour_idx[seed, 1:]
            free = listed[~assigned[listed]][: group_size - 1]
            if free.size < group_size - 1:
                others = np.flatnonzero(~assigned)
                others = others[others != seed]
                sims = similarity(np.array([seed]), others)[0]
                best = np.argpartition(-sims, group_size - 2)[: group_size - 1]
                free = others[best[np.argsort(-sims[best], kind="stable")]]
            members = np.concatenate(([seed], free)).astype(np.int64)
        assigned[members] = True
        n_left -= members.size
        groups.append(members)
    return groups


def build_pool(n_items: int, similarity: SimilarityBlock, top_k: int, top_m: int,
               chunk_bytes: int) -> CandidatePool:
    """Neighbour lists (length top_m) and EM groups (size top_k) of one token class."""
    neighbour_idx, neighbour_util = top_neighbours(n_items, top_m, similarity, chunk_bytes)
    groups = greedy_groups(neighbour_idx, min(top_k, max(n_items, 1)), similarity) if n_items else []
    width = max((g.size for g in groups), default=1)
    group_idx = np.empty((n_items, width), dtype=np.int32)
    group_util = np.zeros((n_items, width), dtype=np.float64)
    group_size = np.empty(n_items, dtype=np.int32)
    group_sensitivity = np.empty(n_items, dtype=np.float64)
    for members in groups:
        utility = similarity(members, members).astype(np.float64)
        np.fill_diagonal(utility, 1.0)
        # Δu = max over outputs t' and inputs t, s of the group of |u(t, t') - u(s, t')|
        sensitivity = float((utility.max(axis=0) - utility.min(axis=0)).max())
        group_idx[members] = members[0]
        group_idx[members, : members.size] = members
        group_util[members, : members.size] = utility
        group_size[members] = members.size
        group_sensitivity[members] = sensitivity
    return CandidatePool(neighbour_idx, neighbour_util, group_idx, group_util, group_size, group_sensitivity)
