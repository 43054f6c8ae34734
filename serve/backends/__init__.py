"""Server-LLM backends behind one interface (LLMBackend): hf (default), vllm, openai.

Backend modules are imported on demand, so choosing ``openai`` never imports torch and
choosing ``hf`` never needs vllm.
"""
from __future__ import annotations

import importlib
from typing import Any, Mapping

from serve.backends.base import LLMBackend, parse_options
from serve.errors import ServeConfigError

# name -> (module, backend class, options class)
_REGISTRY = {
    "hf": ("serve.backends.hf", "HFBackend", "HFOptions"),
    "vllm": ("serve.backends.vllm", "VLLMBackend", "VLLMOptions"),
    "openai": ("serve.backends.openai", "OpenAIBackend", "OpenAIOptions"),
}


def _lookup(name: str, attribute: int) -> Any:
    if name not in _REGISTRY:
        raise ServeConfigError(f"unknown serve.backend {name!r}; choose one of {sorted(_REGISTRY)}")
    module = importlib.import_module(_REGISTRY[name][0])
    return getattr(module, _REGISTRY[name][attribute])


def check_backend_options(name: str, options: Mapping[str, Any]) -> None:
    """Validate backend options without loading anything (fails early, in the driver)."""
    parse_options(_lookup(name, 2), options, f"serve.backend_options ({name})")


def create_backend(name: str, options: Mapping[str, Any]) -> LLMBackend:
    """Load the backend called ``name`` with its options."""
    return _lookup(name, 1)(options)


__all__ = ["LLMBackend", "check_backend_options", "create_backend"]
