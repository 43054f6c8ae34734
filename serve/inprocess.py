"""The server LLM in this process: the LLMClient of in-process runs (tests, benchmarks), where Ray runs
use the Serve deployment. It answers `generate` with the same Hugging Face backend as the deployment."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from serve.backends.hf import HFBackend
from serve.params import GenerationParams


class InProcessLLM:
    """An LLMClient over the project's Hugging Face backend, loaded in this process.

    `calls` holds every generate call as (prompts, replies), in order."""

    def __init__(self, model_dir: str | Path, max_batch_items: int = 64) -> None:
        self.backend = HFBackend({"model_path": str(model_dir), "max_batch_items": max_batch_items})
        self.calls: list[tuple[list[str], list[str]]] = []

    def generate(self, prompts: list[str], params: dict[str, Any]) -> list[str]:
        rows = GenerationParams(**params).rows(len(prompts))
        replies = [completion.text for completion in self.backend.generate(list(prompts), rows)]
        self.calls.append((list(prompts), replies))
        return replies
