"""The Ray side of the server-LLM deployment: a Serve handle as fedsim's LLM endpoint (fedsim.algorithms.llm)."""
from __future__ import annotations

import time
from typing import Any

from ray.exceptions import ActorDiedError, ActorUnavailableError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

from fedsim.engine.progress import NoProgress, Progress

# Failures of the serving system, not of the request: worth sending the request again.
TRANSIENT_ERRORS = (TimeoutError, BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError,
                    ActorDiedError, ActorUnavailableError)


class LLMRequestError(RuntimeError):
    """The server LLM did not answer a request within its attempts."""


class ServeLLMClient:
    """Calls the deployment through its handle; one call carries all of a client's prompts.

    A call that times out (``timeout_s``, cancelled on the server) or meets an unavailable
    replica is sent again, at most ``retries`` more times; after a failure that was not a
    timeout it first waits ``backoff_s``, doubled at each attempt, for Serve to replace the
    replica. Errors of the request itself (bad prompts or parameters) are raised at once.
    """

    def __init__(self, handle: Any, timeout_s: float | None = None, retries: int = 0,
                 backoff_s: float = 1.0, progress: Progress | None = None) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.handle = handle
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.progress = progress or NoProgress()

    def complete(self, prompts: list[str], params: dict[str, Any]) -> list[Any]:
        """The deployment's Completions for `prompts` (one request)."""
        self.progress.expect("llm prompts", len(prompts))
        completions = self._call("complete", f"{len(prompts)} prompts", list(prompts), dict(params))
        self.progress.advance("llm prompts", len(prompts))
        return completions

    def generate(self, prompts: list[str], params: dict[str, Any]) -> list[str]:
        """The texts of `complete`."""
        return [completion.text for completion in self.complete(prompts, params)]

    def topk_logits(self, token_batches: list[list[int]], k: int) -> list[Any]:
        """The deployment's TopKResults for the token sequences (one request)."""
        return self._call("topk_logits", f"{len(token_batches)} sequences", token_batches, k)

    def _call(self, method: str, what: str, *args: Any) -> Any:
        failures: list[str] = []
        for attempt in range(self.retries + 1):
            response = getattr(self.handle, method).remote(*args)
            try:
                return response.result(timeout_s=self.timeout_s)
            except TRANSIENT_ERRORS as exc:
                response.cancel()
                failures.append(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
                if attempt < self.retries and not isinstance(exc, TimeoutError):
                    time.sleep(self.backoff_s * 2 ** attempt)
        raise LLMRequestError(f"the server LLM did not answer a {method} request of {what} in "
                              f"{len(failures)} attempts (timeout {self.timeout_s} s each): {'; '.join(failures)}")
