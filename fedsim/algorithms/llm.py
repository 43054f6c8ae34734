"""The one way algorithms reach the server LLM: a metered client over the LLM endpoint.

Every request a client makes and every response it gets becomes a Message here, with its kind,
direction and real payload, so the engine counts it in the byte ledger like any other message; an
algorithm cannot send LLM traffic that goes uncounted. Calls the server makes itself (client SERVER)
are internal to the server: timed, not communication. The time the LLM spends on a client's
requests enters the virtual clock, from a declared throughput (`llm.time: declared`, tokens per
second over prompt and generated tokens) or the measured wall time (`llm.time: measured`).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from fedsim.comm import SERVER, Message
from fedsim.config import LLMSettings
from fedsim.models.topk import TopKResult


class CompletionLike(Protocol):
    """One generated text as the endpoint returns it (serve.params.Completion)."""

    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    adapter_version: int


class LLMEndpoint(Protocol):
    """The served LLM itself: the Serve deployment through its handle, or an in-process backend."""

    def complete(self, prompts: list[str], params: dict[str, Any]) -> list[CompletionLike]: ...

    def topk_logits(self, token_batches: list[list[int]], k: int) -> list[TopKResult]: ...


class MeteredLLM:
    """An LLM client for one caller: it makes, and keeps for the engine, the messages of every call.

    `messages` and `seconds` accumulate over the calls; `adapter_version` is the version of the
    served adapter named by the last response.
    """

    def __init__(self, endpoint: LLMEndpoint, caller: int, settings: LLMSettings,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.endpoint = endpoint
        self.caller = caller
        self.settings = settings
        self.clock = clock
        self.messages: list[Message] = []
        self.seconds = 0.0
        self.adapter_version: int | None = None

    def generate(self, prompts: Sequence[str], params: dict[str, Any], request_kind: str = "prompts",
                 reply_kind: str = "completions") -> list[str]:
        """The LLM's texts for `prompts`, in one request."""
        started = self.clock()
        completions = self.endpoint.complete(list(prompts), dict(params))
        wall = self.clock() - started
        if len(completions) != len(prompts):
            raise RuntimeError(f"the LLM answered {len(completions)} of {len(prompts)} prompts")
        texts = [completion.text for completion in completions]
        counts = [(c.prompt_tokens, c.completion_tokens) for c in completions]
        tokens = None if any(n is None for pair in counts for n in pair) else sum(a + b for a, b in counts)
        self._record(request_kind, list(prompts), reply_kind, texts, tokens, wall,
                     [completion.adapter_version for completion in completions])
        return texts

    def topk_logits(self, token_batches: Sequence[Sequence[int]], k: int, request_kind: str = "topk_tokens",
                    reply_kind: str = "topk") -> list[TopKResult]:
        """Top-k next-token logits at every position of each token sequence, in one request."""
        batches = [list(map(int, sequence)) for sequence in token_batches]
        started = self.clock()
        results = self.endpoint.topk_logits(batches, k)
        wall = self.clock() - started
        if len(results) != len(batches):
            raise RuntimeError(f"the LLM scored {len(results)} of {len(batches)} sequences")
        self._record(request_kind, batches, reply_kind, results, sum(len(s) for s in batches), wall,
                     [result.adapter_version for result in results])
        return results

    def _record(self, request_kind: str, request: Any, reply_kind: str, reply: Any, tokens: int | None,
                wall_s: float, versions: list[int]) -> None:
        if self.caller != SERVER:
            self.messages += [Message(request_kind, self.caller, SERVER, request),
                              Message(reply_kind, SERVER, self.caller, reply)]
        declared = self.settings.time == "declared" and tokens is not None
        self.seconds += tokens / self.settings.tokens_per_s if declared else wall_s
        if versions:
            self.adapter_version = max(versions)

    def take(self) -> tuple[list[Message], float]:
        """The messages and LLM seconds since the last take, clearing both."""
        messages, seconds = self.messages, self.seconds
        self.messages, self.seconds = [], 0.0
        return messages, seconds
