"""The engine's executor over a pool of ClientWorker actors: one call per worker, futures via ray.wait."""
from __future__ import annotations

from typing import Any

import ray

from fedsim.algorithms.base import ClientOutcome
from fedsim.engine.worker import ClientTask


def _gather(futures: dict[Any, int]) -> dict[int, Any]:
    """Wait on futures as they complete (no polling); map worker index to result."""
    results: dict[int, Any] = {}
    pending = list(futures)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        results[futures[ready[0]]] = ray.get(ready[0])
    return results


class RayExecutor:
    """Reaches a fixed list of ClientWorker actor handles."""

    def __init__(self, workers: list[Any]) -> None:
        self.workers = workers
        self.num_workers = len(workers)

    def initial_payload(self, preset: str) -> Any:
        return ray.get(self.workers[0].initial_payload.remote(preset))

    def run_clients(self, per_worker: dict[int, list[ClientTask]],
                    globals_by_preset: dict[str, Any]) -> list[ClientOutcome]:
        shared = ray.put(globals_by_preset)
        futures = {self.workers[w].run_clients.remote(tasks, shared): w for w, tasks in per_worker.items()}
        results = _gather(futures)
        return [outcome for w in sorted(results) for outcome in results[w]]

    def secagg_stage(self, stage: str, per_worker: dict[int, dict[int, Any]]) -> dict[int, Any]:
        futures = {self.workers[w].secagg_stage.remote(stage, inbox): w for w, inbox in per_worker.items()}
        replies: dict[int, Any] = {}
        for part in _gather(futures).values():
            replies.update(part)
        return replies

    def evaluate(self, jobs: dict[int, list[tuple[str, Any, tuple[int, int]]]]) -> dict[int, list[dict]]:
        futures = {self.workers[w].evaluate.remote(worker_jobs): w for w, worker_jobs in jobs.items()}
        return _gather(futures)

    def evaluate_clients(self, per_worker: dict[int, list[tuple[int, str]]],
                         globals_by_preset: dict[str, Any]) -> dict[int, dict]:
        shared = ray.put(globals_by_preset)
        futures = {self.workers[w].evaluate_clients.remote(clients, shared): w for w, clients in per_worker.items()}
        merged: dict[int, dict] = {}
        for part in _gather(futures).values():
            merged.update(part)
        return merged
