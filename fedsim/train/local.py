"""A short local training loop: AdamW over trainable parameters, minibatches drawn with a
caller-supplied generator so the caller controls determinism."""
from __future__ import annotations

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


def train_steps(
    model: torch.nn.Module,
    encoded: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    steps: int,
    batch_size: int,
    generator: torch.Generator,
    max_grad_norm: float | None = 1.0,
) -> TrainStats:
    """Run `steps` optimizer steps on minibatches of `encoded` (from encode_for_training).

    Minibatches walk through successive random permutations of the rows drawn from
    `generator` (epochs without replacement); each batch is trimmed to its longest row.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    num_rows = encoded["input_ids"].shape[0]
    batch_size = min(batch_size, num_rows)
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.train()
    order = torch.randperm(num_rows, generator=generator)
    position = 0
    losses, tokens = [], 0
    for _ in range(steps):
        if position + batch_size > num_rows:
            order = torch.randperm(num_rows, generator=generator)
            position = 0
        rows = order[position : position + batch_size]
        position += batch_size
        attention_mask = encoded["attention_mask"][rows]
        width = int(attention_mask.sum(dim=1).max())
        labels = encoded["labels"][rows, :width]
        logits = model(input_ids=encoded["input_ids"][rows, :width],
                       attention_mask=attention_mask[:, :width]).logits
        loss = causal_lm_loss(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
        optimizer.step()
        losses.append(loss.item())
        tokens += int((labels[:, 1:] != IGNORE_INDEX).sum())
    return TrainStats(steps=steps, samples=steps * batch_size, tokens=tokens,
                      mean_loss=sum(losses) / len(losses), final_loss=losses[-1])
