"""Sparse top-k knowledge distillation (algorithms.md §0.4, §3.3).

The teacher is a list of TopKResult (k raw logits per position); the student is a causal LM's full
logits. KL(p || q) is taken over the teacher's kept ids S: p = softmax(z_teacher / T) over S (no
gradient), log q = log_softmax(z_student / T) over the full vocabulary gathered at S (gradients
flow). Positions are those whose next token is a target, P = {t : labels[t+1] != -100} (§0.3), and
the loss is the mean over P. No dense [B, L, V] teacher is ever built.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fedsim.models.topk import TopKResult
from fedsim.train.batching import IGNORE_INDEX
from fedsim.train.local import batch_logits, check_steps, minibatches, optimizer_step
from fedsim.train.losses import causal_lm_loss

KD_REDUCTION = "mean over answer positions"  # P = {t : label[t+1] != -100}, pooled over the batch


@dataclass(frozen=True)
class TeacherBatch:
    """A batch of sparse teacher logits padded to [B, L, k].

    ``values`` are float32 raw logits with -inf where an entry is absent (beyond a row's k, or an id
    the student's vocabulary lacks); ``ids`` are 0 there. ``valid`` [B, L] marks positions that
    hold at least one kept entry.
    """

    ids: torch.Tensor
    values: torch.Tensor
    valid: torch.Tensor

    def to(self, device: torch.device | str) -> TeacherBatch:
        """The same batch on `device`."""
        return TeacherBatch(self.ids.to(device), self.values.to(device), self.valid.to(device))


def teacher_batch(results: Sequence[TopKResult], length: int, vocab_size: int) -> TeacherBatch:
    """Pad one TopKResult per row of a right-padded batch of width `length`.

    Teacher ids >= `vocab_size` (the student's) are dropped, so the teacher's softmax renormalises
    over the ids it keeps; positions beyond a row's n_positions are invalid.
    """
    if not results:
        raise ValueError("teacher_batch needs at least one TopKResult")
    k = max(result.k for result in results)
    ids = torch.zeros((len(results), length, k), dtype=torch.long)
    values = torch.full((len(results), length, k), float("-inf"), dtype=torch.float32)
    for row, result in enumerate(results):
        if result.n_positions > length:
            raise ValueError(f"teacher row {row} has {result.n_positions} positions, the batch only {length}")
        row_ids = torch.from_numpy(result.ids.astype("int64"))
        row_values = torch.from_numpy(result.values.astype("float32"))
        kept = row_ids < vocab_size
        ids[row, : result.n_positions, : result.k] = torch.where(kept, row_ids, 0)
        values[row, : result.n_positions, : result.k] = torch.where(kept, row_values, float("-inf"))
    return TeacherBatch(ids=ids, values=values, valid=torch.isfinite(values).any(dim=-1))


def kd_positions(labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Bool [B, L]: position t distils when labels[:, t+1] is a target and the teacher holds t."""
    positions = torch.zeros_like(valid)
    positions[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return positions & valid


def teacher_log_probs(values: torch.Tensor, temperature: float) -> torch.Tensor:
    """log p = log_softmax(values / T) over the kept entries (-inf where absent), without gradient."""
    with torch.no_grad():
        return torch.log_softmax(values.float() / temperature, dim=-1)


def student_log_probs(student_logits: torch.Tensor, ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """log q = log_softmax(logits / T) over the full vocabulary, gathered at `ids` (differentiable).

    `student_logits` is [n, V] and `ids` [n, k]."""
    return torch.log_softmax(student_logits.float() / temperature, dim=-1).gather(-1, ids)


def kl_divergence(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Per-position KL(p || q) = sum_v p (log p - log q); entries with p = 0 contribute nothing."""
    p = log_p.exp()
    kept = p > 0
    return torch.where(kept, p * (torch.where(kept, log_p, 0.0) - log_q), 0.0).sum(dim=-1)


def sparse_kd_loss(
    student_logits: torch.Tensor,
    teacher: TeacherBatch,
    labels: torch.Tensor,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, int]:
    """KL(p_teacher || q_student) averaged over the KD positions, and their number.

    `student_logits` [B, L, V], `labels` [B, L] with -100 on non-targets, `teacher` [B, L, k]. With
    no KD position the loss is a zero that still backpropagates (to zero gradients).
    """
    if student_logits.shape[:2] != labels.shape or teacher.valid.shape != labels.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)}, labels {tuple(labels.shape)} and "
                         f"teacher {tuple(teacher.ids.shape)} disagree")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    positions = kd_positions(labels, teacher.valid)
    count = int(positions.sum())
    if count == 0:
        return student_logits.sum() * 0.0, 0
    log_q = student_log_probs(student_logits[positions], teacher.ids[positions], temperature)
    log_p = teacher_log_probs(teacher.values[positions], temperature)
    return kl_divergence(log_p, log_q).sum() / count, count


def distillation_objective(
    lm_loss: torch.Tensor, kd_loss: torch.Tensor, kd_lambda: float, temperature: float, lm_weight: float = 1.0
) -> torch.Tensor:
    """L = lm_weight * L_LM + lambda * T^2 * KL (T^2 keeps the KD gradient scale comparable when T != 1;
    it is 1 at T = 1). FedCoLLM uses lm_weight 1; FedMKT's alpha L_LM + (1 - alpha) T^2 KL is
    lm_weight alpha, lambda 1 - alpha."""
    return lm_weight * lm_loss + kd_lambda * temperature**2 * kd_loss


@dataclass(frozen=True)
class DistillStats:
    """What a call to distill_steps did."""

    steps: int
    samples: int
    mean_lm_loss: float
    mean_kd_loss: float


def distill_steps(
    model: torch.nn.Module,
    encoded: dict[str, torch.Tensor],
    teachers: Sequence[TopKResult],
    optimizer: torch.optim.Optimizer,
    steps: int,
    batch_size: int,
    generator: torch.Generator,
    kd_lambda: float,
    temperature: float,
    lm_weight: float = 1.0,
    max_grad_norm: float | None = 1.0,
) -> DistillStats:
    """`steps` optimizer steps of distillation_objective on minibatches of `encoded` (one teacher
    TopKResult per row), drawn by fedsim.train.local.minibatches; each batch is trimmed to its longest row."""
    check_steps(steps, batch_size)
    num_rows = int(encoded["input_ids"].shape[0])
    if len(teachers) != num_rows:
        raise ValueError(f"{len(teachers)} teacher rows for {num_rows} training rows")
    model.train()
    batches = minibatches(num_rows, batch_size, generator)
    lm_losses, kd_losses = [], []
    for _ in range(steps):
        rows = next(batches)
        logits, width = batch_logits(model, encoded, rows)
        labels = encoded["labels"][rows, :width]
        lm_loss = causal_lm_loss(logits, labels)
        target = teacher_batch([teachers[row] for row in rows.tolist()], width, logits.shape[-1])
        kd_loss, _ = sparse_kd_loss(logits, target, labels, temperature)
        optimizer_step(optimizer, distillation_objective(lm_loss, kd_loss, kd_lambda, temperature, lm_weight),
                       max_grad_norm)
        lm_losses.append(lm_loss.item())
        kd_losses.append(kd_loss.item())
    return DistillStats(steps=steps, samples=steps * min(batch_size, num_rows),
                        mean_lm_loss=sum(lm_losses) / steps, mean_kd_loss=sum(kd_losses) / steps)
