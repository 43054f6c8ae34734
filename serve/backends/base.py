"""The interface every server-LLM backend implements, and option parsing shared by them."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import fields
from typing import Any, Mapping, TypeVar

import numpy as np

from serve.errors import AdapterError, ServeConfigError
from serve.params import Completion, GenerationParams, TokenizerInfo, TopKResult

OptionsT = TypeVar("OptionsT")


def parse_options(options_type: type[OptionsT], values: Mapping[str, Any], where: str) -> OptionsT:
    """Build an options dataclass from a mapping, naming unknown or missing keys."""
    if isinstance(values, options_type):
        return values
    if not isinstance(values, Mapping):
        raise ServeConfigError(f"{where} must be a mapping, got {type(values).__name__}")
    known = {f.name for f in fields(options_type)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ServeConfigError(f"unknown {where} {unknown}; allowed: {sorted(known)}")
    try:
        return options_type(**dict(values))
    except TypeError as exc:  # a required option is missing
        raise ServeConfigError(f"{where}: {exc}") from exc


class LLMBackend(ABC):
    """A loaded LLM that generates text and scores token sequences.

    Methods are synchronous and called from one thread at a time (the deployment
    serialises them), so set_adapter never interleaves with a forward pass.
    """

    @abstractmethod
    def generate(self, prompts: list[str], params: list[GenerationParams]) -> list[Completion]:
        """One completion per prompt; ``params[i]`` (already row-seeded) applies to prompt i."""

    @abstractmethod
    def topk_logits(self, token_batches: list[list[int]], k: int) -> list[TopKResult]:
        """Top-k next-token logits at every position of every sequence."""

    @abstractmethod
    def set_adapter(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Replace the LoRA adapter weights; names and shapes must match adapter_shapes()."""

    @abstractmethod
    def adapter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Names and shapes of the replaceable LoRA arrays (empty without a LoRA)."""

    @abstractmethod
    def tokenizer_info(self) -> TokenizerInfo:
        """Vocabulary size and special token ids of the served model."""


def check_adapter_arrays(arrays: Mapping[str, Any],
                         expected: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Validate a full adapter replacement against the expected names and shapes.

    Returns the arrays as float32 numpy arrays; raises AdapterError naming the first
    problems (missing or unexpected names, wrong shapes, non-finite values).
    """
    if not expected:
        raise AdapterError("no LoRA adapter is attached to the served model; "
                           "set serve.backend_options.lora to serve a replaceable adapter")
    missing = sorted(set(expected) - set(arrays))
    unexpected = sorted(set(arrays) - set(expected))
    if missing or unexpected:
        raise AdapterError(f"adapter names do not match the served LoRA: missing {missing[:3]}"
                           f"{' ...' if len(missing) > 3 else ''} ({len(missing)} in all), unexpected "
                           f"{unexpected[:3]}{' ...' if len(unexpected) > 3 else ''} ({len(unexpected)} in all)")
    checked: dict[str, np.ndarray] = {}
    for name, shape in expected.items():
        array = np.asarray(arrays[name], dtype=np.float32)
        if array.shape != tuple(shape):
            raise AdapterError(f"adapter array {name!r} has shape {array.shape}, expected {tuple(shape)}")
        if not np.isfinite(array).all():
            raise AdapterError(f"adapter array {name!r} holds NaN or infinite values")
        checked[name] = array
    return checked
