"""ServeSettings: how the server-LLM deployment is sized, batched and backed (no Ray)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from serve.errors import ServeConfigError

BACKEND_NAMES = ("hf", "vllm", "openai")


@dataclass(frozen=True)
class ServeSettings:
    """Settings of the LLM deployment.

    max_batch_size counts caller requests (each may carry many prompts) merged into one
    backend call; batch_wait_timeout_s is how long the first request of a batch waits for
    others. Serve checks each replica every health_check_period_s and replaces a dead one.
    backend_options are passed to the backend named by ``backend`` (see
    serve.backends). model_name is the name the OpenAI-compatible route answers to.
    """

    backend: str = "hf"
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    model_name: str = "fedsim-llm"
    max_batch_size: int = 16
    batch_wait_timeout_s: float = 0.01
    max_ongoing_requests: int = 64
    num_replicas: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_constructor_retries: int = 1
    health_check_period_s: float = 10.0

    def __post_init__(self) -> None:
        if self.backend not in BACKEND_NAMES:
            raise ServeConfigError(f"serve.backend must be one of {BACKEND_NAMES}, got {self.backend!r}")
        if not isinstance(self.backend_options, Mapping):
            raise ServeConfigError(f"serve.backend_options must be a mapping, got "
                                   f"{type(self.backend_options).__name__}")
        if not isinstance(self.model_name, str) or not self.model_name:
            raise ServeConfigError(f"serve.model_name must be a non-empty string, got {self.model_name!r}")
        for name in ("max_batch_size", "max_ongoing_requests", "num_replicas", "max_constructor_retries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ServeConfigError(f"serve.{name} must be an int >= 1, got {value!r}")
        if self.max_ongoing_requests < self.max_batch_size:
            raise ServeConfigError(
                f"serve.max_ongoing_requests ({self.max_ongoing_requests}) must be >= "
                f"serve.max_batch_size ({self.max_batch_size}), or batches can never fill")
        if isinstance(self.health_check_period_s, bool) or not isinstance(self.health_check_period_s, (int, float)) \
                or self.health_check_period_s <= 0:
            raise ServeConfigError(f"serve.health_check_period_s must be a number > 0, got {self.health_check_period_s!r}")
        for name in ("batch_wait_timeout_s", "num_cpus", "num_gpus"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ServeConfigError(f"serve.{name} must be a number >= 0, got {value!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ServeSettings:
        """Build from a plain mapping (a YAML section); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ServeConfigError(f"unknown serve setting(s) {unknown}; allowed: {sorted(known)}")
        return cls(**dict(values))
