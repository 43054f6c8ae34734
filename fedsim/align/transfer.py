"""Top-k lists of one tokenizer moved onto another's tokenization of the same sequences (FedMKT's
public examples): the per-sequence tokens and texts are prepared once, then each round's lists are
projected with the next-token correction (fedsim.align.project)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedsim.align.project import project_topk
from fedsim.models.topk import TopKResult


@dataclass(frozen=True)
class Projection:
    """Lists on the receiver's positions, one per sequence, and the share of positions with a 1:1
    next-token match (the rest are one-hot on the next token, or empty with skip_unaligned)."""

    lists: list[TopKResult]
    matched_positions: int
    predicting_positions: int

    @property
    def coverage(self) -> float:
        return self.matched_positions / self.predicting_positions if self.predicting_positions else 0.0


class ListTransfer:
    """Moves a sender's lists over `sender_ids[n]` onto `receiver_ids[n]` (two tokenizations of the same
    n-th text), given each side's canonical token texts (fedsim.align.vocab.token_texts) and the
    sender-to-receiver vocabulary map."""

    def __init__(self, sender_ids: Sequence[np.ndarray], receiver_ids: Sequence[np.ndarray],
                 sender_vocab_texts: Sequence[str], receiver_vocab_texts: Sequence[str],
                 sender_to_receiver: np.ndarray, skip_unaligned: bool = False) -> None:
        if len(sender_ids) != len(receiver_ids):
            raise ValueError(f"{len(sender_ids)} sender sequences for {len(receiver_ids)} receiver sequences")
        self.sender_ids = [np.asarray(ids, dtype=np.int64) for ids in sender_ids]
        self.receiver_ids = [np.asarray(ids, dtype=np.int64) for ids in receiver_ids]
        self.sender_texts = [[sender_vocab_texts[i] for i in ids.tolist()] for ids in self.sender_ids]
        self.receiver_texts = [[receiver_vocab_texts[i] for i in ids.tolist()] for ids in self.receiver_ids]
        self.sender_to_receiver = np.asarray(sender_to_receiver)
        self.skip_unaligned = skip_unaligned

    def project(self, lists: Sequence[TopKResult]) -> Projection:
        """The sender's lists (one per sequence, over its tokens) on the receiver's tokens."""
        if len(lists) != len(self.sender_ids):
            raise ValueError(f"{len(lists)} lists for {len(self.sender_ids)} sequences")
        projected, matched, predicting = [], 0, 0
        for n, sender in enumerate(lists):
            result = project_topk(sender, self.receiver_ids[n], self.sender_ids[n], self.receiver_texts[n],
                                  self.sender_texts[n], self.sender_to_receiver, self.skip_unaligned)
            projected.append(result.topk)
            matched += result.n_matched
            predicting += result.n_predicting
        return Projection(projected, matched, predicting)
