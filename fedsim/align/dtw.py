"""Token alignment of two tokenizations of one text by dynamic time warping (algorithms.md §5.3).

The local cost of base token i and blend token j is the Levenshtein distance of their canonical
texts without the leading space; dtw-python finds the warping path (symmetric1 steps:
D(i, j) = c(i, j) + min(D(i-1, j), D(i, j-1), D(i-1, j-1))).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dtw
import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein


@dataclass(frozen=True, eq=False)
class Alignment:
    """A warping path between base positions and blend positions.

    ``base_path`` and ``blend_path`` (int64, same length) are the path's pairs in order;
    ``one_to_one`` (int64 [n_base]) is the blend position j of base i when each is the other's
    only partner on the path, else -1.
    """

    base_path: np.ndarray
    blend_path: np.ndarray
    one_to_one: np.ndarray


def _stripped(texts: Sequence[str]) -> list[str]:
    """Canonical texts without their leading word-start space."""
    return [text.removeprefix(" ") for text in texts]


def same_text(base_text: str, blend_text: str) -> bool:
    """Whether two canonical texts agree once their leading spaces are stripped."""
    return base_text.removeprefix(" ") == blend_text.removeprefix(" ")


def local_costs(base_texts: Sequence[str], blend_texts: Sequence[str]) -> np.ndarray:
    """c(i, j): Levenshtein distance of the texts without their leading space, int32 [n_base, n_blend]."""
    return process.cdist(_stripped(base_texts), _stripped(blend_texts), scorer=Levenshtein.distance, dtype=np.int32)


def align(base_texts: Sequence[str], blend_texts: Sequence[str]) -> Alignment:
    """Align two token sequences (canonical texts); an empty side gives an empty path."""
    n_base, n_blend = len(base_texts), len(blend_texts)
    if n_base == 0 or n_blend == 0:
        empty = np.empty(0, dtype=np.int64)
        return Alignment(empty, empty, np.full(n_base, -1, dtype=np.int64))
    path = dtw.dtw(local_costs(base_texts, blend_texts).astype(np.float64), step_pattern=dtw.symmetric1)
    base_path = np.asarray(path.index1, dtype=np.int64)
    blend_path = np.asarray(path.index2, dtype=np.int64)
    alone = (np.bincount(base_path, minlength=n_base)[base_path] == 1) & (
        np.bincount(blend_path, minlength=n_blend)[blend_path] == 1)
    one_to_one = np.full(n_base, -1, dtype=np.int64)
    one_to_one[base_path[alone]] = blend_path[alone]
    return Alignment(base_path, blend_path, one_to_one)
