"""Fixtures of the serve tests: one tiny random LLM saved to disk per test session."""
from pathlib import Path

import pytest

from serve.tiny import build_tiny_llm



@pytest.fixture(scope="session")
def tiny_llm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LlamaForCausalLM (hidden 64, 2 layers) and word-level tokenizer in a temp folder."""
    return build_tiny_llm(tmp_path_factory.mktemp("tiny-llm"))


@pytest.fixture(scope="session")
def lora_options() -> dict:
    """A small LoRA on the attention query and value projections."""
    return {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}


@pytest.fixture(scope="session")
def prompts() -> list[str]:
    """Four prompts in the tiny tokenizer's vocabulary, of different lengths."""
    return ["the cat sat on", "one two three four", "what is two plus two answer", "a big red dog"]
