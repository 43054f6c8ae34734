"""Request parameters and result types of the server LLM (no Ray, no torch).

``GenerationParams`` describes one generate request; ``TopKResult`` carries the sparse
top-k logits of one token sequence in the wire format of algorithms.md §0.4 (ids int32,
values fp16, shape [n_positions, k]); ``Completion`` is one generated text with its token
counts, as the OpenAI-compatible route reports them.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from fedsim.models.topk import TopKResult
from serve.errors import RequestError

__all__ = ["Completion", "FinishReason", "GenerationParams", "TokenizerInfo", "TopKResult", "derive_row_seed"]

FinishReason = Literal["stop", "length"]


def derive_row_seed(request_seed: int, row: int) -> int:
    """Seed of row ``row`` of a request seeded with ``request_seed`` (independent streams)."""
    state = np.random.SeedSequence([request_seed, row]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


@dataclass(frozen=True)
class GenerationParams:
    """Decoding parameters of one request.

    temperature 0 means greedy decoding. With temperature > 0, tokens are sampled from
    the top-p nucleus; row i of a request seeded with ``seed`` draws from its own stream
    ``derive_row_seed(seed, i)``, so a seeded request gives the same texts whatever other
    requests it is batched with. ``stop``: the text is cut before the first stop string.
    """

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        object.__setattr__(self, "stop", stop)
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) \
                or self.max_new_tokens < 1:
            raise RequestError(f"max_new_tokens must be an int >= 1, got {self.max_new_tokens!r}")
        if not isinstance(self.temperature, (int, float)) or not 0.0 <= self.temperature <= 100.0:
            raise RequestError(f"temperature must be a number in [0, 100], got {self.temperature!r}")
        if not isinstance(self.top_p, (int, float)) or not 0.0 < self.top_p <= 1.0:
            raise RequestError(f"top_p must be a number in (0, 1], got {self.top_p!r}")
        if any(not isinstance(s, str) or not s for s in stop):
            raise RequestError(f"stop must hold non-empty strings, got {self.stop!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or self.seed < 0):
            raise RequestError(f"seed must be None or an int >= 0, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        """True when decoding picks the most likely token (temperature 0)."""
        return self.temperature == 0.0

    def rows(self, n_rows: int) -> list[GenerationParams]:
        """Per-row parameters of a request with ``n_rows`` prompts.

        Greedy rows carry no seed (it would not matter and would only split batches);
        sampled rows get their own derived seed, drawn at random if the request has none.
        """
        if self.greedy:
            return [replace(self, seed=None)] * n_rows
        base = self.seed if self.seed is not None else secrets.randbits(63)
        return [replace(self, seed=derive_row_seed(base, i)) for i in range(n_rows)]


@dataclass(frozen=True)
class Completion:
    """One generated text; token counts are None when the backend cannot know them."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    adapter_version: int = 0  # the version of the LoRA adapter the replica served it with


@dataclass(frozen=True)
class TokenizerInfo:
    """What a caller needs to know about the served model's tokenizer."""

    name: str
    vocab_size: int | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
