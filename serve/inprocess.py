"""The server LLM in this process: the LLM endpoint of in-process runs (tests, benchmarks), where Ray
runs use the Serve deployment. It answers with the same Hugging Face backend as the deployment."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from serve.backends.hf import HFBackend
from serve.params import Completion, GenerationParams, TopKResult


class InProcessLLM:
    """An LLM endpoint over the project's Hugging Face backend, loaded in this process.

    `calls` holds every complete call as (prompts, replies), in order; `options` are the backend's
    (e.g. {"lora": {...}} to serve a LoRA adapter that `publish` replaces)."""

    def __init__(self, model_dir: str | Path, max_batch_items: int = 64, options: dict[str, Any] | None = None) -> None:
        self.backend = HFBackend({"model_path": str(model_dir), "max_batch_items": max_batch_items, **(options or {})})
        self.calls: list[tuple[list[str], list[str]]] = []
        self.version = 0

    def complete(self, prompts: list[str], params: dict[str, Any]) -> list[Completion]:
        rows = GenerationParams(**params).rows(len(prompts))
        completions = [replace(c, adapter_version=self.version) for c in self.backend.generate(list(prompts), rows)]
        self.calls.append((list(prompts), [completion.text for completion in completions]))
        return completions

    def generate(self, prompts: list[str], params: dict[str, Any]) -> list[str]:
        return [completion.text for completion in self.complete(prompts, params)]

    def topk_logits(self, token_batches: list[list[int]], k: int) -> list[TopKResult]:
        return [replace(result, adapter_version=self.version) for result in self.backend.topk_logits(token_batches, k)]

    def publish(self, arrays: dict[str, Any]) -> int:
        """Serve `arrays` as the next adapter version from the next call on; returns that version."""
        self.backend.set_adapter(arrays)
        self.version += 1
        return self.version
