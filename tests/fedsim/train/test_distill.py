"""Tests of the sparse top-k distillation loss."""
from collections.abc import Callable

import numpy as np
import pytest
import torch

from fedsim.models.topk import TopKResult
from fedsim.train.distill import (
    KD_REDUCTION,
    TeacherBatch,
    distillation_objective,
    kd_positions,
    kl_divergence,
    sparse_kd_loss,
    student_log_probs,
    teacher_batch,
    teacher_log_probs,
)

KdLoss = Callable[[torch.Tensor, TeacherBatch, torch.Tensor, float], tuple[torch.Tensor, int]]


def topk_of(logits: torch.Tensor, k: int) -> TopKResult:
    """The TopKResult of one sequence's [n, V] logits."""
    values, ids = logits.topk(k, dim=-1)
    return TopKResult(ids=ids.to(torch.int32).numpy(), values=values.to(torch.float16).numpy())


def example(vocab: int = 7, k: int = 3, seed: int = 0) -> tuple[TeacherBatch, torch.Tensor, torch.Tensor]:
    """Two right-padded rows (lengths 5 and 3), their labels and a teacher holding each row's positions."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.tensor([[-100, -100, 4, 2, 1], [-100, 3, 5, -100, -100]])
    results = [topk_of(torch.randn(n, vocab, generator=generator), k) for n in (5, 3)]
    return teacher_batch(results, length=5, vocab_size=vocab), labels, torch.randn(2, 5, vocab, generator=generator)


def detached_kd_loss(student_logits: torch.Tensor, teacher: TeacherBatch, labels: torch.Tensor,
                     temperature: float) -> tuple[torch.Tensor, int]:
    """The reference's bug: the student's log-probabilities re-wrapped in a new tensor (detached)."""
    positions = kd_positions(labels, teacher.valid)
    log_q = student_log_probs(student_logits[positions], teacher.ids[positions], temperature)
    rewrapped = torch.tensor(log_q.tolist())
    log_p = teacher_log_probs(teacher.values[positions], temperature)
    return kl_divergence(log_p, rewrapped).sum() / int(positions.sum()), int(positions.sum())


def gradient_reaches_student(loss_fn: KdLoss) -> bool:
    """Whether the KD loss (next to an LM term, as in training) gives every KD position of the
    student's logits a non-zero gradient and every other position none."""
    teacher, labels, logits = example()
    logits.requires_grad_(True)
    kd_loss, _ = loss_fn(logits, teacher, labels, 2.0)
    lm_stand_in = (logits * 0.0).sum()  # the LM term's graph, contributing zero gradient
    distillation_objective(lm_stand_in, kd_loss, kd_lambda=1.0, temperature=2.0).backward()
    per_position = logits.grad.abs().sum(dim=-1)
    positions = kd_positions(labels, teacher.valid)
    return bool((per_position[positions] > 0).all() and (per_position[~positions] == 0).all())


def test_gradients_reach_the_student_and_the_detached_variant_is_caught():
    assert gradient_reaches_student(sparse_kd_loss)
    assert not gradient_reaches_student(detached_kd_loss)


def test_equals_dense_kl_when_k_is_the_vocabulary():
    vocab = 6
    teacher, labels, logits = example(vocab=vocab, k=vocab, seed=1)
    temperature = 1.7
    loss, count = sparse_kd_loss(logits, teacher, labels, temperature)
    positions = kd_positions(labels, teacher.valid)
    dense_teacher = torch.zeros(2, 5, vocab).scatter(-1, teacher.ids, teacher.values)  # a test-side dense copy
    p = torch.softmax(dense_teacher[positions] / temperature, dim=-1)
    log_q = torch.log_softmax(logits[positions] / temperature, dim=-1)
    dense = (p * (p.log() - log_q)).sum(dim=-1).mean()
    assert count == int(positions.sum()) == 5
    assert torch.allclose(loss, dense, atol=1e-6)
    assert KD_REDUCTION == "mean over answer positions"


def test_temperature_squared_scales_the_kd_term():
    lm, kd = torch.tensor(2.0), torch.tensor(0.5)
    assert distillation_objective(lm, kd, kd_lambda=0.4, temperature=1.0).item() == pytest.approx(2.0 + 0.4 * 0.5)
    assert distillation_objective(lm, kd, kd_lambda=0.4, temperature=3.0).item() == pytest.approx(2.0 + 0.4 * 9 * 0.5)


def test_teacher_ids_beyond_the_student_vocabulary_are_dropped_and_renormalised():
    ids = np.array([[1, 9, 2], [8, 0, 3]], dtype=np.int32)  # 9 and 8 exceed a 5-token student
    values = np.array([[3.0, 2.0, 1.0], [4.0, 2.0, 0.5]], dtype=np.float16)
    teacher = teacher_batch([TopKResult(ids=ids, values=values)], length=3, vocab_size=5)
    assert teacher.valid.tolist() == [[True, True, False]]
    p = teacher_log_probs(teacher.values, 1.0).exp()
    assert torch.allclose(p[0, 0], torch.tensor([np.exp(3) / (np.exp(3) + np.exp(1)), 0.0,
                                                  np.exp(1) / (np.exp(3) + np.exp(1))], dtype=torch.float32))
    assert torch.allclose(p[0, :2].sum(dim=-1), torch.ones(2))
    assert int(teacher.ids.max()) < 5
    labels = torch.tensor([[-100, 1, 2]])
    logits = torch.randn(1, 3, 5, requires_grad=True)
    loss, count = sparse_kd_loss(logits, teacher, labels)
    assert count == 2 and torch.isfinite(loss)


def test_shift_uses_the_next_label():
    vocab = 4
    # Row of length 4: targets at tokens 2 and 3, so positions 1 and 2 distil; 0 and 3 do not.
    labels = torch.tensor([[-100, -100, 2, 3]])
    assert kd_positions(labels, torch.ones(1, 4, dtype=torch.bool)).tolist() == [[False, True, True, False]]
    teacher_logits = torch.tensor([[0.0, 0.0, 9.0, 0.0]] * 4)
    teacher = teacher_batch([topk_of(teacher_logits, 1)], length=4, vocab_size=vocab)
    logits = torch.zeros(1, 4, vocab)
    logits[0, 0] = torch.tensor([0.0, 0.0, -50.0, 0.0])  # wildly off, but position 0 is not distilled
    logits[0, 3] = torch.tensor([0.0, 0.0, -50.0, 0.0])  # likewise the last position
    loss, count = sparse_kd_loss(logits, teacher, labels)
    assert count == 2
    assert loss.item() == pytest.approx(np.log(vocab), rel=1e-6)  # -log q(2) at the uniform positions 1, 2
    logits[0, 1, 2] = 50.0  # now position 1 matches the one-hot teacher: only position 2 costs log(V)
    assert sparse_kd_loss(logits, teacher, labels)[0].item() == pytest.approx(np.log(vocab) / 2, rel=1e-6)


def test_positions_beyond_a_teacher_row_are_invalid():
    teacher, labels, logits = example()
    assert teacher.valid[1].tolist() == [True, True, True, False, False]
    with pytest.raises(ValueError, match="positions"):
        teacher_batch([topk_of(torch.randn(6, 7), 3)], length=5, vocab_size=7)
