"""Move a sender's top-k lists onto the receiver's tokenization (algorithms.md §5.3).

Base = the receiver's tokens b_0..b_{n-1}, blend = the sender's c_0..c_{m-1}, both of the same
text. The logit at base i predicts b_{i+1} and the one at blend j predicts c_{j+1}, so base i takes
the sender's list at j only when i<->j and (i+1)<->(j+1) are both 1:1 on the DTW path and both
pairs agree (same text without the leading space, or the sender token maps onto the base token):
the fedsim next-token correction. Every other position with a next token (or whose sender list
is empty) is one-hot on b_{i+1}, or empty with `skip_unaligned`; the last position is empty.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedsim.align.dtw import align, same_text
from fedsim.models.topk import TopKResult


@dataclass(frozen=True, eq=False)
class ProjectedTopK:
    """The sender's lists on the receiver's positions, and how many positions they cover."""

    topk: TopKResult  # [len(base_ids), sender k]; an empty entry is id 0, value -inf
    matched: np.ndarray  # bool [len(base_ids)]: the position took the sender's list (a 1:1 next-token match)

    @property
    def n_matched(self) -> int:
        """Positions that took the sender's list."""
        return int(self.matched.sum())

    @property
    def n_predicting(self) -> int:
        """Positions with a next token: all but the last."""
        return max(self.matched.size - 1, 0)

    @property
    def coverage(self) -> float:
        """Share of the positions with a next token that took the sender's list (0.0 if none)."""
        return self.n_matched / self.n_predicting if self.n_predicting else 0.0


def _check_inputs(sender: TopKResult, base_ids: np.ndarray, blend_ids: np.ndarray, base_texts: Sequence[str],
                  blend_texts: Sequence[str], sender_to_base: np.ndarray) -> None:
    if len(base_texts) != base_ids.size or len(blend_texts) != blend_ids.size:
        raise ValueError(f"{base_ids.size} base ids with {len(base_texts)} texts, "
                         f"{blend_ids.size} blend ids with {len(blend_texts)} texts")
    if sender.n_positions != blend_ids.size:
        raise ValueError(f"the sender's top-k has {sender.n_positions} positions, its tokens {blend_ids.size}")
    if sender_to_base.ndim != 1 or not np.issubdtype(sender_to_base.dtype, np.integer):
        raise ValueError(f"sender_to_base must be a 1-D integer array, got {sender_to_base.dtype} "
                         f"{sender_to_base.shape}")
    for name, ids in (("top-k", sender.ids), ("blend", blend_ids)):
        if ids.size and not 0 <= ids.min() <= ids.max() < sender_to_base.size:
            raise ValueError(f"{name} ids must lie in [0, {sender_to_base.size}), the sender's vocabulary")


def _first_of_each_id(mapped: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Bool mask of the present entries that are the first (highest logit) of their id in their row."""
    keys = np.where(present, mapped, -1 - np.arange(mapped.shape[1]))  # absent entries: unique negative keys
    order = np.argsort(keys, axis=1, kind="stable")
    sorted_keys = np.take_along_axis(keys, order, axis=1)
    repeated_sorted = np.zeros(keys.shape, dtype=bool)
    repeated_sorted[:, 1:] = sorted_keys[:, 1:] == sorted_keys[:, :-1]
    repeated = np.zeros(keys.shape, dtype=bool)
    np.put_along_axis(repeated, order, repeated_sorted, axis=1)
    return present & ~repeated


def project_topk(sender: TopKResult, base_ids: Sequence[int] | np.ndarray, blend_ids: Sequence[int] | np.ndarray,
                 base_texts: Sequence[str], blend_texts: Sequence[str], sender_to_base: np.ndarray,
                 skip_unaligned: bool = False) -> ProjectedTopK:
    """Project `sender` (top-k over `blend_ids`, one row per blend token) onto `base_ids`.

    `base_texts` and `blend_texts` are the canonical texts of the two sequences' tokens (see
    `fedsim.align.vocab.token_texts`); `sender_to_base` maps sender vocabulary ids to base ids.
    A taken list keeps its logits in order, maps the sender's own next token c_{j+1} to b_{i+1}
    (they agree, possibly only once stripped of a leading space) and every other id through
    `sender_to_base`, drops absent entries and every repeat of a mapped id after its first
    (highest logit), and is padded to the sender's k with id 0 and value -inf.
    """
    base_ids = np.asarray(base_ids, dtype=np.int64)
    blend_ids = np.asarray(blend_ids, dtype=np.int64)
    _check_inputs(sender, base_ids, blend_ids, base_texts, blend_texts, sender_to_base)
    n_base, k = base_ids.size, sender.k
    ids = np.zeros((n_base, k), dtype=np.int32)
    values = np.full((n_base, k), -np.inf, dtype=np.float16)
    partner = align(base_texts, blend_texts).one_to_one
    has_partner = np.flatnonzero(partner >= 0)
    agrees = np.zeros(n_base, dtype=bool)
    agrees[has_partner] = [same_text(base_texts[i], blend_texts[partner[i]]) for i in has_partner]
    agrees[has_partner] |= sender_to_base[blend_ids[partner[has_partner]]] == base_ids[has_partner]
    matched = np.zeros(n_base, dtype=bool)
    matched[:-1] = (partner[:-1] >= 0) & (partner[1:] == partner[:-1] + 1) & agrees[:-1] & agrees[1:]
    rows = np.flatnonzero(matched)
    source_rows = partner[rows]
    sender_ids = sender.ids[source_rows]
    own_next = sender_ids == blend_ids[source_rows + 1][:, None]  # the sender's c_{j+1}: it stands for b_{i+1}
    mapped = np.where(own_next, base_ids[rows + 1][:, None], sender_to_base[sender_ids])
    kept = _first_of_each_id(mapped, ~np.isneginf(sender.values[source_rows]))
    slot = np.cumsum(kept, axis=1) - 1
    entry_row, entry_column = np.nonzero(kept)
    ids[rows[entry_row], slot[entry_row, entry_column]] = mapped[entry_row, entry_column]
    values[rows[entry_row], slot[entry_row, entry_column]] = sender.values[source_rows[entry_row], entry_column]
    matched[rows[~kept.any(axis=1)]] = False  # the sender's list there was empty
    if not skip_unaligned and k > 0:
        fallback = np.flatnonzero(~matched[:-1])
        ids[fallback, 0] = base_ids[fallback + 1]
        values[fallback, 0] = 0.0
    return ProjectedTopK(TopKResult(ids, values, sender.adapter_version), matched)
