"""Batch encoding for causal-LM training: prompt + target + EOS in the format of fedsim.data.prompts.

Labels are -100 on the prompt and on padding; the target span (EOS included) is found from token
counts, never by comparing ids with the pad id, so the EOS target survives when pad == eos.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from transformers import PreTrainedTokenizerBase

from fedsim.data.prompts import Mode, render_prompt, render_target
from fedsim.data.task import Example

IGNORE_INDEX = -100


def encode_for_training(
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    target: Mode,
    max_len: int,
) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and labels (-100 outside the target span) of each
    example's prompt and target in mode `target`, as `encode_pairs` makes them."""
    if not examples:
        raise ValueError("encode_for_training needs at least one example")
    pairs = [(render_prompt(example, target), render_target(example, target)) for example in examples]
    return encode_pairs(tokenizer, pairs, max_len)


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[tuple[str, str]],
    max_len: int,
    cut: Literal["prompt", "target"] = "prompt",
) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and labels (-100 outside the target span) of
    (prompt, target) texts.

    Each row is prompt tokens + target tokens + EOS. With `cut` "prompt", a row longer than
    `max_len` loses prompt tokens from the left, so the target is kept, and a target (EOS
    included) longer than `max_len - 1` tokens is cut on the right. With "target", the prompt
    is kept whole (a prompt of `max_len` tokens or more raises) and the target is cut on the right.
    """
    if not pairs:
        raise ValueError("encode_pairs needs at least one (prompt, target) pair")
    if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer needs both an eos and a pad token")
    if max_len < 2:
        raise ValueError(f"max_len must be >= 2, got {max_len}")
    if cut not in ("prompt", "target"):
        raise ValueError(f"cut must be 'prompt' or 'target', got {cut!r}")
    rows: list[tuple[list[int], int]] = []  # (token ids, length of the prompt part)
    for prompt, target in pairs:
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
        target_ids = tokenizer.encode(target, add_special_tokens=False)
        target_ids = target_ids + [tokenizer.eos_token_id]
        if cut == "target":
            if len(prompt_ids) >= max_len:
                raise ValueError(f"a prompt of {len(prompt_ids)} tokens leaves no target token within "
                                 f"max_len {max_len}: {prompt[:60]!r}")
            target_ids = target_ids[: max_len - len(prompt_ids)]
        else:
            target_ids = target_ids[: max_len - 1]
            prompt_ids = prompt_ids[max(0, len(prompt_ids) - (max_len - len(target_ids))):]
        rows.append((prompt_ids + target_ids, len(prompt_ids)))
    encoded = right_padded([ids for ids, _ in rows], tokenizer.pad_token_id)
    for row, (ids, prompt_length) in enumerate(rows):
        encoded["labels"][row, prompt_length : len(ids)] = torch.tensor(ids[prompt_length:])
    return encoded


def right_padded(rows: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Token rows right-padded into input_ids and attention_mask, with every label ignored (the
    caller marks its targets)."""
    width = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "labels": torch.full_like(input_ids, IGNORE_INDEX)}
