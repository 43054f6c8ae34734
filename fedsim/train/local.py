"""A short local training loop: AdamW over trainable parameters, minibatches drawn with a
caller-supplied generator so the caller controls determinism."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from fedsim.train.batching import IGNORE_INDEX
from fedsim.train.losses import causal_lm_loss


@dataclass(frozen=True)
class TrainStats:
    """What a call to train_steps did."""

    steps: int
    samples: int
    tokens: int  # target tokens the loss was computed on
    mean_loss: float
    final_loss: float


def make_optimizer(
    model: torch.nn.Module,
    lr: float,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.95),
) -> torch.optim.AdamW:
    """AdamW over the parameters that require gradients."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay, betas=betas)


def minibatches(num_rows: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Row indices of successive minibatches, walking through random permutations of the rows
    drawn from `generator` (epochs without replacement; a short tail is skipped)."""
    batch_size = min(batch_size, num_rows)
    while True:
        order = torch.randperm(num_rows, generator=generator)
        for position in range(0, num_rows - batch_size + 1, batch_size):
            yield order[position: position + batch_size]


def batch_logits(model: torch.nn.Module, encoded: dict[str, torch.Tensor], rows: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Logits of `rows` of `encoded`, trimmed to their longest row, and that width."""
    attention_mask = encoded["attention_mask"][rows]
    width = int(attention_mask.sum(dim=1).max())
    return model(input_ids=encoded["input_ids"][rows, :width], attention_mask=attention_mask[:, :width]).logits, width


def batch_loss(model: torch.nn.Module, encoded: dict[str, torch.Tensor], rows: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Token-mean causal-LM loss of `rows` of `encoded` (trimmed to their longest row) and its
    number of target tokens."""
    logits, width = batch_logits(model, encoded, rows)
    labels = encoded["labels"][rows, :width]
    return causal_lm_loss(logits, labels), int((labels[:, 1:] != IGNORE_INDEX).sum())


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, max_grad_norm: float | None) -> None:
    """Backpropagate `loss`, clip the optimizer's parameters' gradient norm, and step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]],
                                       max_grad_norm)
    optimizer.step()


def check_steps(steps: int, batch_size: int) -> None:
    """Raise ValueError unless both are at least 1."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")


def train_steps(
    model: torch.nn.Module,
    encoded: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    steps: int,
    batch_size: int,
    generator: torch.Generator,
    max_grad_norm: float | None = 1.0,
) -> TrainStats:
    """Run `steps` optimizer steps on minibatches of `encoded` (from encode_for_training), drawn
    by `minibatches`; each batch is trimmed to its longest row."""
    check_steps(steps, batch_size)
    num_rows = encoded["input_ids"].shape[0]
    model.train()
    batches = minibatches(num_rows, batch_size, generator)
    losses, tokens = [], 0
    for _ in range(steps):
        loss, count = batch_loss(model, encoded, next(batches))
        optimizer_step(optimizer, loss, max_grad_norm)
        losses.append(loss.item())
        tokens += count
    return TrainStats(steps=steps, samples=steps * min(batch_size, num_rows), tokens=tokens,
                      mean_loss=sum(losses) / len(losses), final_loss=losses[-1])
