"""Losses for causal language models."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fedsim.train.batching import IGNORE_INDEX


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over target tokens: logits at t predict labels at t + 1;
    positions labelled -100 are ignored."""
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree")
    shifted_logits = logits[:, :-1, :]
    shifted_labels = labels[:, 1:]
    if not bool((shifted_labels != IGNORE_INDEX).any()):
        raise ValueError("no target tokens in this batch: every label is -100")
    return F.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.shape[-1]).float(),
        shifted_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
    )
