"""Greedy generation with left padding, and exact-match accuracy of extracted answers."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from fedsim.data.prompts import Mode, extract_answer, render_prompt
from fedsim.data.task import Example

DEFAULT_MAX_NEW_TOKENS = {"answer": 16, "rationale": 96}


@torch.no_grad()
def generate_texts(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int = 64,
    on_batch: Callable[[int], object] | None = None,
) -> list[str]:
    """Greedy continuations of `prompts` (special tokens dropped, cut at EOS), in order;
    `on_batch(n)` is called after each batch of n prompts (a progress bar's update)."""
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}")
    was_training = model.training
    model.eval()
    texts: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            input_ids, attention_mask = _left_padded(tokenizer, prompts[start : start + batch_size])
            output = model.generate(
                input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            )
            for row in output[:, input_ids.shape[1]:].tolist():
                if tokenizer.eos_token_id in row:
                    row = row[: row.index(tokenizer.eos_token_id)]
                texts.append(tokenizer.decode(row, skip_special_tokens=True))
            if on_batch is not None:
                on_batch(input_ids.shape[0])
    finally:
        model.train(was_training)
    return texts


def exact_match(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    mode: Mode,
    batch_size: int = 64,
    max_new_tokens: int | None = None,
    on_batch: Callable[[int], object] | None = None,
) -> float:
    """Share of examples whose extracted answer equals the gold answer (after stripping).

    mode "answer" asks for the answer directly; mode "rationale" lets the model write its steps
    and reads the answer after the marker. `on_batch` as in `generate_texts`.
    """
    if not examples:
        raise ValueError("exact_match needs at least one example")
    if mode not in DEFAULT_MAX_NEW_TOKENS:
        raise ValueError(f"mode must be 'answer' or 'rationale', got {mode!r}")
    prompts = [render_prompt(example, mode) for example in examples]
    outputs = generate_texts(model, tokenizer, prompts, max_new_tokens or DEFAULT_MAX_NEW_TOKENS[mode], batch_size,
                             on_batch)
    hits = sum(extract_answer(text) == example.answer.strip() for text, example in zip(outputs, examples))
    return hits / len(examples)


def domain_counts(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    mode: Mode,
    batch_size: int = 64,
    on_batch: Callable[[int], object] | None = None,
) -> dict[str, list[int]]:
    """[correct, total] exact-match counts per domain of `examples` (see exact_match)."""
    counts: dict[str, list[int]] = {}
    for domain in sorted({example.domain for example in examples}):
        subset = [example for example in examples if example.domain == domain]
        accuracy = exact_match(model, tokenizer, subset, mode, batch_size, on_batch=on_batch)
        counts[domain] = [round(accuracy * len(subset)), len(subset)]
    return counts


def _left_padded(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad without touching the (possibly shared) tokenizer's padding side."""
    encoded = [tokenizer.encode(prompt, add_special_tokens=False) for prompt in prompts]
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids):] = 1
    return input_ids, attention_mask
