"""Backend for an external OpenAI-compatible completions endpoint (POST {base}/v1/completions).

Rows sharing identical parameters go in one request (``prompt`` as a list); requests run
concurrently up to ``max_concurrency``. ``topk_logits`` asks for echoed prompt log-probs
with token ids as keys (vLLM's ``return_tokens_as_token_ids``); a server that refuses or
answers with token strings raises TopKUnsupportedError. Values are log-probabilities,
which differ from raw logits by one constant per position (see serve.backends.vllm).
"""
from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Mapping

import httpx
import numpy as np

from serve.backends.base import LLMBackend, parse_options
from serve.errors import AdapterError, EndpointError, RequestError, ServeConfigError, TopKUnsupportedError
from serve.params import Completion, GenerationParams, TokenizerInfo, TopKResult

TOKEN_ID_KEY = re.compile(r"^token_id:(\d+)$")


@dataclass(frozen=True)
class OpenAIOptions:
    """Options of the openai backend (serve.backend_options).

    base_url: e.g. http://127.0.0.1:8000 (a trailing /v1 is accepted); model: the name
    sent in each request; api_key_env: name of the environment variable holding the key.
    """

    base_url: str
    model: str
    api_key_env: str | None = None
    timeout_s: float = 60.0
    max_concurrency: int = 8
    max_prompts_per_request: int = 64

    def __post_init__(self) -> None:
        if not isinstance(self.base_url, str) or not self.base_url.startswith(("http://", "https://")):
            raise ServeConfigError(f"backend_options.base_url must start with http:// or https://, "
                                   f"got {self.base_url!r}")
        if not isinstance(self.model, str) or not self.model:
            raise ServeConfigError(f"backend_options.model must name the served model, got {self.model!r}")
        if not isinstance(self.timeout_s, (int, float)) or self.timeout_s <= 0:
            raise ServeConfigError(f"backend_options.timeout_s must be > 0, got {self.timeout_s!r}")
        for name in ("max_concurrency", "max_prompts_per_request"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ServeConfigError(f"backend_options.{name} must be an int >= 1, got {getattr(self, name)!r}")
        if self.api_key_env is not None and self.api_key_env not in os.environ:
            raise ServeConfigError(f"backend_options.api_key_env names {self.api_key_env!r}, "
                                   "which is not set in the environment")


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[start:start + size] for start in range(0, len(items), size)]


class OpenAIBackend(LLMBackend):
    """Talks to an OpenAI-compatible server over HTTP; the model lives there."""

    def __init__(self, options: Mapping[str, Any] | OpenAIOptions,
                 transport: httpx.BaseTransport | None = None):
        self.options = parse_options(OpenAIOptions, options, "serve.backend_options (openai)")
        base = self.options.base_url.rstrip("/")
        self._base_url = base[:-3] if base.endswith("/v1") else base
        headers = {}
        if self.options.api_key_env is not None:
            headers["Authorization"] = f"Bearer {os.environ[self.options.api_key_env]}"
        self._client = httpx.Client(base_url=self._base_url, headers=headers, transport=transport,
                                    timeout=httpx.Timeout(self.options.timeout_s))
        self._pool = ThreadPoolExecutor(max_workers=self.options.max_concurrency,
                                        thread_name_prefix="fedsim-openai")

    @property
    def _url(self) -> str:
        return f"{self._base_url}/v1/completions"

    def _post(self, payload: dict[str, Any]) -> httpx.Response:
        try:
            return self._client.post("/v1/completions", json=payload)
        except httpx.TimeoutException as exc:
            raise EndpointError(f"{self._url} did not answer within {self.options.timeout_s} s") from exc
        except httpx.HTTPError as exc:
            raise EndpointError(f"cannot reach {self._url}: {exc}") from exc

    def _read(self, response: httpx.Response, expected: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The choices, sorted by index, and the usage block of a completions answer."""
        if response.status_code != 200:
            raise EndpointError(f"{self._url} answered HTTP {response.status_code}: {response.text[:300]}")
        try:
            body = response.json()
            choices = sorted(body["choices"], key=lambda choice: choice["index"])
        except (ValueError, KeyError, TypeError) as exc:
            raise EndpointError(f"{self._url} answered without a valid 'choices' list: "
                                f"{response.text[:300]}") from exc
        if len(choices) != expected:
            raise EndpointError(f"{self._url} returned {len(choices)} choices for {expected} prompts")
        return choices, body.get("usage") or {}

    def tokenizer_info(self) -> TokenizerInfo:
        return TokenizerInfo(name=self.options.model)

    def adapter_shapes(self) -> dict[str, tuple[int, ...]]:
        return {}

    def set_adapter(self, arrays: Mapping[str, np.ndarray]) -> None:
        raise AdapterError("the openai backend serves a model behind an external endpoint; "
                           "its LoRA adapter cannot be replaced from fedsim")

    def _complete(self, prompts: list[str], params: GenerationParams) -> list[Completion]:
        payload: dict[str, Any] = {"model": self.options.model, "prompt": prompts, "n": 1,
                                   "max_tokens": params.max_new_tokens, "temperature": params.temperature,
                                   "top_p": params.top_p}
        if params.stop:
            payload["stop"] = list(params.stop)
        if params.seed is not None:
            payload["seed"] = params.seed
        choices, usage = self._read(self._post(payload), len(prompts))
        single = len(prompts) == 1 and "prompt_tokens" in usage
        return [Completion(text=str(choice.get("text", "")),
                           finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
                           prompt_tokens=int(usage["prompt_tokens"]) if single else None,
                           completion_tokens=int(usage.get("completion_tokens", 0)) if single else None)
                for choice in choices]

    def generate(self, prompts: list[str], params: list[GenerationParams]) -> list[Completion]:
        if len(prompts) != len(params):
            raise RequestError(f"got {len(prompts)} prompts but {len(params)} parameter sets")
        rows_by_params: dict[GenerationParams, list[int]] = {}
        for row, row_params in enumerate(params):
            rows_by_params.setdefault(row_params, []).append(row)
        jobs = [(chunk, row_params) for row_params, rows in rows_by_params.items()
                for chunk in _chunks(rows, self.options.max_prompts_per_request)]
        futures = [self._pool.submit(self._complete, [prompts[row] for row in chunk], row_params)
                   for chunk, row_params in jobs]
        completions: list[Completion | None] = [None] * len(prompts)
        for (chunk, _), future in zip(jobs, futures):
            for row, completion in zip(chunk, future.result()):
                completions[row] = completion
        return completions

    def _topk(self, token_batches: list[list[int]], k: int) -> list[TopKResult]:
        payload = {"model": self.options.model, "prompt": token_batches, "max_tokens": 1,
                   "temperature": 0.0, "echo": True, "logprobs": k, "return_tokens_as_token_ids": True}
        response = self._post(payload)
        if 400 <= response.status_code < 500:
            raise TopKUnsupportedError(f"{self._url} refused a prompt-logprobs request (HTTP "
                                       f"{response.status_code}: {response.text[:300]}); top-k logits "
                                       "need a server with echo + logprobs, e.g. vLLM")
        choices, _ = self._read(response, len(token_batches))
        results = []
        for tokens, choice in zip(token_batches, choices):
            top = (choice.get("logprobs") or {}).get("top_logprobs")
            if not isinstance(top, list) or len(top) < len(tokens) + 1:
                raise TopKUnsupportedError(f"{self._url} did not return echoed prompt log-probs; "
                                           "top-k logits need a server with echo + logprobs, e.g. vLLM")
            ids = np.empty((len(tokens), k), dtype=np.int32)
            values = np.empty((len(tokens), k), dtype=np.float16)
            for row, entries in enumerate(top[1:len(tokens) + 1]):
                if not isinstance(entries, dict):
                    raise TopKUnsupportedError(f"{self._url} returned no log-probs at position {row}")
                best = sorted(entries.items(), key=lambda item: -item[1])[:k]
                if len(best) < k:
                    raise TopKUnsupportedError(f"{self._url} returned {len(best)} log-probs per position, "
                                               f"fewer than k={k}")
                for column, (key, logprob) in enumerate(best):
                    match = TOKEN_ID_KEY.match(key)
                    if match is None:
                        raise TopKUnsupportedError(f"{self._url} keys log-probs by token text ({key!r}), "
                                                   "not by id; run vLLM with --return-tokens-as-token-ids")
                    ids[row, column] = int(match.group(1))
                    values[row, column] = logprob
            results.append(TopKResult(ids=ids, values=values))
        return results

    def topk_logits(self, token_batches: list[list[int]], k: int) -> list[TopKResult]:
        if any(len(tokens) == 0 for tokens in token_batches):
            raise RequestError("token sequences must not be empty")
        chunks = _chunks(list(range(len(token_batches))), self.options.max_prompts_per_request)
        futures = [self._pool.submit(self._topk, [token_batches[row] for row in chunk], k) for chunk in chunks]
        return [result for future in futures for result in future.result()]
