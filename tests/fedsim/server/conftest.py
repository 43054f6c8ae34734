"""Shared data of the server-trainer tests: a few dozen encoded rows of the built-in task."""
import pytest
import torch

from fedsim.data.task import generate_examples
from fedsim.train.batching import encode_for_training


@pytest.fixture(scope="session")
def encoded(tokenizer) -> dict[str, torch.Tensor]:
    """24 right-padded answer-mode rows (input_ids, attention_mask, labels)."""
    return encode_for_training(tokenizer, generate_examples(24, seed=3, split="public", min_steps=1), "answer",
                               max_len=48)
