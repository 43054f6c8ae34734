"""Fixtures of the serve tests (the tiny LLM itself is in tests/conftest.py)."""
import pytest


@pytest.fixture(scope="session")
def lora_options() -> dict:
    """A small LoRA on the attention query and value projections."""
    return {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}


@pytest.fixture(scope="session")
def prompts() -> list[str]:
    """Four prompts in the tiny tokenizer's vocabulary, of different lengths."""
    return ["the cat sat on", "one two three four", "what is two plus two answer", "a big red dog"]
