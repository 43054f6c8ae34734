"""The server-LLM Ray Serve deployment: batched generate / topk_logits, adapter swaps,
stats, and an OpenAI-compatible POST /v1/completions route.

Each caller request carries many items (prompts or token sequences); @serve.batch merges
concurrent requests into one backend call. All backend work, adapter replacements
included, runs on one worker thread, one batch at a time: a batch sees either the old or
the new adapter, never both. A request that fails inside a merged batch is retried alone,
so one caller's bad input cannot fail the others. Each batch first asks the application's
adapter store (serve.adapter_store) for a newer published adapter and swaps it in; every
Completion and TopKResult names the adapter version that computed it.
"""
# No `from __future__ import annotations` here: FastAPI reads the route's body type at runtime.
import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Awaitable, Callable, Mapping, Sequence, TypeVar

import numpy as np
import ray
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from ray import serve as ray_serve
from ray.serve import Application

from serve.adapter_store import find_store
from serve.backends import create_backend
from serve.backends.base import check_adapter_arrays
from serve.errors import RequestError
from serve.openai_api import CompletionRequest, completion_response, error_body
from serve.params import Completion, GenerationParams, TokenizerInfo, TopKResult
from serve.settings import ServeSettings
from serve.stats import MethodStats

RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")
http_api = FastAPI(title="fedsim server LLM", docs_url=None, redoc_url=None)


def _run_isolated(run: Callable[[list[RequestT]], list[ResultT]],
                  requests: list[RequestT]) -> list[ResultT | Exception]:
    """Run all requests together; if that fails, run each alone and keep its own outcome."""
    try:
        return run(requests)
    except Exception as exc:  # noqa: BLE001 - handed back to the caller that caused it
        if len(requests) == 1:
            return [exc]
    outcomes: list[ResultT | Exception] = []
    for request in requests:
        try:
            outcomes.append(run([request])[0])
        except Exception as exc:  # noqa: BLE001 - handed back to its caller
            outcomes.append(exc)
    return outcomes


def _split(flat: list[ResultT], sizes: list[int]) -> list[list[ResultT]]:
    """Cut a flat list into consecutive pieces of the given sizes."""
    pieces, start = [], 0
    for size in sizes:
        pieces.append(flat[start:start + size])
        start += size
    return pieces


def _as_params(params: GenerationParams | Mapping[str, Any] | None) -> GenerationParams:
    if params is None:
        return GenerationParams()
    if isinstance(params, GenerationParams):
        return params
    if isinstance(params, Mapping):
        return GenerationParams(**params)
    raise RequestError(f"params must be GenerationParams or a mapping, got {type(params).__name__}")


@ray_serve.deployment
@ray_serve.ingress(http_api)
class LLMServer:
    """One replica of the server LLM."""

    def __init__(self, settings: ServeSettings):
        self._settings = settings
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedsim-llm")
        # The backend is built on the worker thread that will run all of its calls.
        self._backend = self._executor.submit(create_backend, settings.backend,
                                              settings.backend_options).result()
        self._tokenizer_info = self._executor.submit(self._backend.tokenizer_info).result()
        self._stats = {"generate": MethodStats(), "topk_logits": MethodStats()}
        self._adapter_version = 0
        self._store = find_store(ray_serve.get_replica_context().app_name)
        self._executor.submit(self._catch_up).result()  # a replica (re)started mid-run serves the current adapter
        for batched in (self._generate_batch, self._topk_batch):
            batched.set_max_batch_size(settings.max_batch_size)
            batched.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)

    async def _on_worker(self, function: Callable[..., ResultT], *args: Any) -> ResultT:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def _run_batch(self, method: str, requests: list[RequestT],
                         run: Callable[[list[RequestT]], list[ResultT]]) -> list[ResultT | Exception]:
        """Record the batch, then run it on the worker thread (one outcome per request)."""
        self._stats[method].record_batch(len(requests), sum(len(request[0]) for request in requests))
        return await self._on_worker(self._run_current, run, requests)

    def _run_current(self, run: Callable[[list[RequestT]], list[ResultT]],
                     requests: list[RequestT]) -> list[ResultT | Exception]:
        """Catch up with the published adapter, then run the requests (worker thread)."""
        self._catch_up()
        return _run_isolated(run, requests)

    async def _timed(self, method: str, outcome: Awaitable[ResultT | Exception]) -> ResultT:
        start = time.perf_counter()
        result = await outcome
        failed = isinstance(result, Exception)
        self._stats[method].record_request(time.perf_counter() - start, ok=not failed)
        if failed:
            raise result
        return result

    # ---- generate -------------------------------------------------------------------
    async def generate(self, prompts: Sequence[str],
                       params: GenerationParams | Mapping[str, Any] | None = None) -> list[str]:
        """One generated text per prompt."""
        return [completion.text for completion in await self.complete(prompts, params)]

    async def complete(self, prompts: Sequence[str],
                       params: GenerationParams | Mapping[str, Any] | None = None) -> list[Completion]:
        """Like generate, with finish reasons and token counts."""
        if isinstance(prompts, str) or not all(isinstance(prompt, str) for prompt in prompts):
            raise RequestError("prompts must be a list of strings")
        if len(prompts) == 0:
            return []
        row_params = _as_params(params).rows(len(prompts))
        return await self._timed("generate", self._generate_batch(list(prompts), row_params))

    @ray_serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _generate_batch(self, prompts: list[list[str]], row_params: list[list[GenerationParams]]
                              ) -> list[list[Completion] | Exception]:
        return await self._run_batch("generate", list(zip(prompts, row_params)), self._generate_requests)

    def _generate_requests(self, requests: list[tuple[list[str], list[GenerationParams]]]) -> list[list[Completion]]:
        """One backend generate over the prompts of several requests (worker thread)."""
        flat = self._backend.generate([prompt for prompts, _ in requests for prompt in prompts],
                                      [row for _, rows in requests for row in rows])
        flat = [replace(completion, adapter_version=self._adapter_version) for completion in flat]
        return _split(flat, [len(prompts) for prompts, _ in requests])

    # ---- top-k logits ---------------------------------------------------------------
    async def topk_logits(self, token_batches: Sequence[Sequence[int]], k: int) -> list[TopKResult]:
        """Top-k raw logits (fp16) and ids (int32), [n_positions, k], per token sequence."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise RequestError(f"k must be an int >= 1, got {k!r}")
        try:
            sequences = [[int(token) for token in tokens] for tokens in token_batches]
        except (TypeError, ValueError) as exc:
            raise RequestError("token_batches must be a list of token-id lists") from exc
        vocab = self._tokenizer_info.vocab_size
        for index, tokens in enumerate(sequences):
            if not tokens:
                raise RequestError(f"token sequence {index} is empty")
            if vocab is not None and (min(tokens) < 0 or max(tokens) >= vocab):
                raise RequestError(f"token sequence {index} has ids outside [0, {vocab})")
        if not sequences:
            return []
        return await self._timed("topk_logits", self._topk_batch(sequences, int(k)))

    @ray_serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _topk_batch(self, sequences: list[list[list[int]]], ks: list[int]
                          ) -> list[list[TopKResult] | Exception]:
        return await self._run_batch("topk_logits", list(zip(sequences, ks)), self._topk_requests)

    def _topk_requests(self, requests: list[tuple[list[list[int]], int]]) -> list[list[TopKResult]]:
        """One backend top-k call per distinct k over several requests (worker thread)."""
        results: dict[int, list[TopKResult]] = {}
        for k in sorted({k for _, k in requests}):
            group = [index for index, (_, request_k) in enumerate(requests) if request_k == k]
            flat = self._backend.topk_logits([seq for index in group for seq in requests[index][0]], k)
            flat = [replace(result, adapter_version=self._adapter_version) for result in flat]
            results.update(zip(group, _split(flat, [len(requests[index][0]) for index in group])))
        return [results[index] for index in range(len(requests))]

    # ---- adapter, info, stats -------------------------------------------------------
    async def set_adapter(self, arrays: Mapping[str, np.ndarray], version: int | None = None) -> int:
        """Publish `arrays` as adapter `version` (default: the next one) for every replica, and serve it
        here from the next batch on; returns the version. Other replicas load it before their next
        batch; serve.app.publish_adapter also waits until every running replica has."""
        checked = check_adapter_arrays(arrays, self._backend.adapter_shapes())
        published = await self._store.publish.remote(version, checked)
        await self.sync_adapter()
        return published

    async def sync_adapter(self) -> int:
        """Load the published adapter now if it is newer than this replica's; returns the version served."""
        return await self._on_worker(self._catch_up)

    def _catch_up(self) -> int:
        """Swap in the store's adapter if it is newer, weights and version together (worker thread,
        between batches); returns the version this replica serves."""
        newer = ray.get(self._store.newer_than.remote(self._adapter_version))
        if newer is not None:
            version, arrays = newer
            self._backend.set_adapter(arrays)
            self._adapter_version = version
        return self._adapter_version

    def adapter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Names and shapes set_adapter expects (as fedsim.models.lora.get_adapter names them)."""
        return self._backend.adapter_shapes()

    def tokenizer_info(self) -> TokenizerInfo:
        """Vocabulary size and special token ids of the served model."""
        return self._tokenizer_info

    def stats(self) -> dict[str, Any]:
        """Per-method counts, mean batch sizes (requests, items) and p50/p95 latency."""
        return {"generate": self._stats["generate"].summary(),
                "topk_logits": self._stats["topk_logits"].summary(),
                "adapter_version": self._adapter_version,
                "max_batch_size": self._settings.max_batch_size,
                "batch_wait_timeout_s": self._settings.batch_wait_timeout_s}

    def reset_stats(self) -> None:
        """Forget recorded batches and latencies (e.g. after a warm-up)."""
        for method_stats in self._stats.values():
            method_stats.reset()

    # ---- OpenAI-compatible HTTP route -----------------------------------------------
    @http_api.post("/v1/completions")
    async def openai_completions(self, request: CompletionRequest) -> JSONResponse:
        """POST /v1/completions in the OpenAI legacy completions format."""
        problem = request.unsupported()
        if problem is not None:
            return JSONResponse(error_body(problem), status_code=400)
        if request.model is not None and request.model != self._settings.model_name:
            return JSONResponse(error_body(f"model {request.model!r} is not served here; this server "
                                           f"serves {self._settings.model_name!r}", "model_not_found"),
                                status_code=404)
        try:
            completions = await self.complete(request.prompts(), request.generation_params())
        except RequestError as exc:
            return JSONResponse(error_body(str(exc)), status_code=400)
        return JSONResponse(completion_response(self._settings.model_name, completions))


def build_llm_app(settings: ServeSettings) -> Application:
    """The Serve application of one LLMServer deployment sized by ``settings``."""
    return LLMServer.options(
        num_replicas=settings.num_replicas,
        max_ongoing_requests=settings.max_ongoing_requests,
        max_constructor_retry_count=settings.max_constructor_retries,
        graceful_shutdown_wait_loop_s=0.2,
        health_check_period_s=settings.health_check_period_s,
        ray_actor_options={"num_cpus": settings.num_cpus, "num_gpus": settings.num_gpus},
    ).bind(settings)
