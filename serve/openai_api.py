"""The OpenAI legacy completions schema served at POST /v1/completions (no Ray).

Supported: prompt (string or list of strings), max_tokens, temperature, top_p, stop, seed.
Refused with HTTP 400: n != 1, echo, logprobs, stream, token-id prompts.
"""
from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict

from serve.params import Completion, GenerationParams


class CompletionRequest(BaseModel):
    """Body of POST /v1/completions; unknown OpenAI fields (user, ...) are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = 1
    echo: bool = False
    logprobs: int | None = None
    stream: bool = False

    def unsupported(self) -> str | None:
        """Why this server cannot answer the request, or None."""
        if self.logprobs is not None or self.echo:
            return "logprobs and echo are not supported by this server"
        if self.stream:
            return "stream is not supported by this server"
        if self.n != 1:
            return "only n=1 is supported by this server"
        if not isinstance(self.prompt, str) and any(not isinstance(item, str) for item in self.prompt):
            return "token-id prompts are not supported by this server; send text"
        return None

    def prompts(self) -> list[str]:
        """The prompt(s) as a list of strings."""
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def generation_params(self) -> GenerationParams:
        """Decoding parameters (raises RequestError on out-of-range values)."""
        stop = () if self.stop is None else self.stop
        return GenerationParams(max_new_tokens=self.max_tokens, temperature=self.temperature,
                                top_p=self.top_p, stop=stop, seed=self.seed)


def completion_response(model: str, completions: list[Completion]) -> dict[str, Any]:
    """An OpenAI text_completion object; usage is null when a token count is unknown."""
    counts_known = all(c.prompt_tokens is not None and c.completion_tokens is not None for c in completions)
    usage = None
    if counts_known:
        prompt_tokens = sum(c.prompt_tokens for c in completions)
        completion_tokens = sum(c.completion_tokens for c in completions)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"text": c.text, "index": i, "logprobs": None, "finish_reason": c.finish_reason}
                    for i, c in enumerate(completions)],
        "usage": usage,
    }


def error_body(message: str, code: str | None = None) -> dict[str, Any]:
    """An OpenAI-style error object."""
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
