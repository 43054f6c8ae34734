"""Candidate structures of the word mechanisms (numbers: text_numbers.py).

A `CandidatePool` holds, for the perturbable word tokens:
- neighbour lists: per token its top-M tokens by utility, sorted, itself first (AEM);
- EM groups: a partition of the pool into groups of about K similar tokens, built greedily
  (take the first unassigned token, add its K-1 most similar unassigned tokens, repeat;
  the last group takes every token left once fewer than 2K remain), with each group's
  utility matrix and its sensitivity.

The utility is the cosine similarity of input embeddings, in [-1, 1] with u(t, t) = 1.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SimilarityBlock = Callable[[np.ndarray, np.ndarray | None], np.ndarray]
"""similarity(rows, cols) -> float32 utilities [len(rows), len(cols)]; cols=None: all items."""

_BYTES_PER_SIMILARITY = 12  # float32 value + its partitioned copy + mask and slack


@dataclass(frozen=True)
class CandidatePool:
    """Neighbour lists and EM groups of the word pool (indices are pool positions)."""

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
    """Cosine similarity between rows of `embeddings` (no zero rows); cols=None means all."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)

    def similarity(rows: np.ndarray, cols: np.ndarray | None) -> np.ndarray:
        block = unit[rows] @ (unit if cols is None else unit[cols]).T
        return np.clip(block, -1.0, 1.0, out=block)

    return similarity


def _largest_columns(sims: np.ndarray, m: int) -> np.ndarray:
    """Column indices of the m largest entries of each row (any order)."""
    kth = sims.shape[1] - m
    thresholds = np.partition(sims, kth, axis=1)[:, kth]
    above = sims >= thresholds[:, None]
    if (above.sum(axis=1) == m).all():  # no ties at the threshold: cheap path
        return (np.flatnonzero(above) % sims.shape[1]).reshape(sims.shape[0], m)
    return np.argpartition(sims, kth, axis=1)[:, kth:]


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
    for start in range(0, n_items, chunk_rows):
        rows = np.arange(start, min(n_items, start + chunk_rows))
        sims = similarity(rows, None).astype(np.float32, copy=False)
        sims[np.arange(rows.size), rows] = np.inf  # the token itself always comes first
        picked = _largest_columns(sims, m)
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
    """Neighbour lists (length top_m) and EM groups (size top_k) of a pool of n_items."""
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
