"""Selective distillation (algorithms.md §5.5): per example, which teacher a model learns from.

Candidates are models whose top-k lists were moved onto the learner's tokenization (one TopKResult per
example, padded with -inf where an entry is absent); candidate 0 is the learner itself. Each example's
candidates are compared by the NLL of the answer per character, which does not depend on how a
tokenizer cuts the text (a per-token mean would favour the tokenizer with more tokens).
- "greater": the candidate with the lowest NLL per character teaches the whole example; at a position
  where its list is empty the learner's own list stands in.
- "weighted_mean": the mixture sum_m w_m p_m with w = softmax over candidates of exp(-NLL per
  character), over the union of the kept ids.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch

from fedsim.models.topk import TopKResult
from fedsim.train.batching import IGNORE_INDEX

Strategy = Literal["greater", "weighted_mean"]
STRATEGIES: tuple[str, ...] = ("greater", "weighted_mean")


def answer_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed NLL of each row's target tokens ([B]): the logit at t scores labels[t+1] (§0.3)."""
    targets = labels[:, 1:]
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -(picked * (targets != IGNORE_INDEX)).sum(dim=1)


def topk_and_answer_nll(
    logits_of: Callable[[torch.Tensor], tuple[torch.Tensor, int]],
    encoded: dict[str, torch.Tensor],
    k: int,
    batch_size: int,
) -> tuple[list[TopKResult], np.ndarray]:
    """The k largest raw logits (fp16, descending) at every non-pad position of each right-padded row
    of `encoded`, and each row's summed answer NLL (float64; NaN when `encoded` has no labels), in
    batches of `batch_size` rows.

    `logits_of(rows)` returns the logits of those rows, trimmed to their longest row, and that width;
    the caller puts the model in eval mode and under no_grad.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top-k needs an int k >= 1, got {k!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"top-k needs an int batch_size >= 1, got {batch_size!r}")
    lengths = encoded["attention_mask"].sum(dim=1).tolist()
    results: list[TopKResult] = []
    nll: list[float] = []
    for start in range(0, len(lengths), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(lengths)))
        logits, width = logits_of(rows)
        if k > logits.shape[-1]:
            raise ValueError(f"top-k k={k} exceeds the model's vocabulary ({logits.shape[-1]})")
        if "labels" in encoded:
            nll += answer_nll(logits, encoded["labels"][rows, :width].to(logits.device)).double().tolist()
        else:
            nll += [float("nan")] * len(rows)
        values, ids = logits.float().topk(k, dim=-1)
        values = values.to(torch.float16).cpu().numpy()
        ids = ids.to(torch.int32).cpu().numpy()
        results += [TopKResult(ids=np.ascontiguousarray(ids[row, :n]), values=np.ascontiguousarray(values[row, :n]))
                    for row, n in enumerate(lengths[start: start + len(rows)])]
    return results, np.asarray(nll, dtype=np.float64)


def per_character(nll: np.ndarray, answer_chars: Sequence[int]) -> np.ndarray:
    """Summed answer NLL divided by each answer's length in characters."""
    chars = np.asarray(answer_chars, dtype=np.float64)
    if chars.shape != nll.shape[-1:] or (chars < 1).any():
        raise ValueError(f"need one answer length >= 1 per example, got {chars.shape} for {nll.shape}")
    return nll / chars


def select_teachers(
    candidates: Sequence[Sequence[TopKResult]],
    nll_per_char: np.ndarray,
    strategy: Strategy,
    temperature: float = 1.0,
) -> tuple[list[TopKResult], np.ndarray]:
    """One teacher TopKResult per example from `candidates` [M][N] (candidate 0: the learner itself),
    scored by `nll_per_char` [M, N]; and how many examples each candidate taught ([M]; for
    "weighted_mean", the summed weights)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"selective distillation strategy must be one of {STRATEGIES}, got {strategy!r}")
    scores = np.asarray(nll_per_char, dtype=np.float64)
    if scores.shape != (len(candidates), len(candidates[0])) or any(len(c) != scores.shape[1] for c in candidates):
        raise ValueError(f"need one score per candidate and example, got {scores.shape} for "
                         f"{[len(c) for c in candidates]}")
    if strategy == "greater":
        best = np.argmin(scores, axis=0)  # ties go to the lowest index: the learner itself first
        teachers = [_with_self_fallback(candidates[int(m)][n], candidates[0][n]) for n, m in enumerate(best)]
        return teachers, np.bincount(best, minlength=len(candidates)).astype(np.float64)
    rewards = np.exp(-scores)
    shifted = np.exp(rewards - rewards.max(axis=0))
    weights = shifted / shifted.sum(axis=0)  # softmax over the candidates of the rewards
    teachers = [_mixture([c[n] for c in candidates], weights[:, n], temperature) for n in range(scores.shape[1])]
    return teachers, weights.sum(axis=1)


def _with_self_fallback(teacher: TopKResult, own: TopKResult) -> TopKResult:
    """`teacher` with the learner's own list at each position where the teacher's list is empty."""
    if teacher is own:
        return own
    _check_same_positions([teacher, own])
    k = max(teacher.k, own.k)
    teacher_ids, teacher_values = _padded(teacher, k)
    own_ids, own_values = _padded(own, k)
    empty = ~np.isfinite(teacher_values).any(axis=1, keepdims=True)
    return TopKResult(ids=np.where(empty, own_ids, teacher_ids).astype(np.int32),
                      values=np.where(empty, own_values, teacher_values).astype(np.float16))


def _padded(result: TopKResult, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, values) widened to k entries per position (id 0, value -inf)."""
    extra = k - result.k
    return (np.pad(result.ids, ((0, 0), (0, extra))),
            np.pad(result.values, ((0, 0), (0, extra)), constant_values=-np.inf))


def _mixture(results: Sequence[TopKResult], weights: np.ndarray, temperature: float) -> TopKResult:
    """Per position, the union of the kept ids with values T * log(sum_m w_m p_m), so that the KD loss's
    softmax(values / T) is the mixture itself; as wide as the largest union."""
    _check_same_positions(results)
    rows: list[list[tuple[int, float]]] = []
    for position in range(results[0].n_positions):
        mass: dict[int, float] = {}
        for result, weight in zip(results, weights):
            values = result.values[position].astype(np.float64) / temperature
            kept = np.isfinite(values)
            if not kept.any():
                continue
            probs = np.exp(values[kept] - values[kept].max())
            for token, prob in zip(result.ids[position][kept].tolist(), (probs / probs.sum()).tolist()):
                mass[token] = mass.get(token, 0.0) + float(weight) * prob
        total = sum(mass.values())
        rows.append(sorted(((token, prob / total) for token, prob in mass.items()), key=lambda item: -item[1]))
    width = max(1, max(len(row) for row in rows))
    out_ids = np.zeros((len(rows), width), dtype=np.int32)
    out_values = np.full((len(rows), width), -np.inf, dtype=np.float16)
    for position, row in enumerate(rows):
        for slot, (token, prob) in enumerate(row):
            out_ids[position, slot] = token
            out_values[position, slot] = temperature * np.log(prob)
    return TopKResult(ids=out_ids, values=out_values)


def _check_same_positions(results: Sequence[TopKResult]) -> None:
    if len({result.n_positions for result in results}) != 1:
        raise ValueError(f"candidates disagree on the number of positions: {[r.n_positions for r in results]}")
