"""An executor that runs its workers in this process, one after another.

Used by unit tests and as the benchmark's lower bound: the same client code with no Ray at all.
"""
from __future__ import annotations

from typing import Any

from fedsim.algorithms.base import ClientOutcome
from fedsim.algorithms.llm import LLMEndpoint
from fedsim.config import ExperimentConfig
from fedsim.data.federated import FederatedData
from fedsim.engine.worker import ClientTask, WorkerRuntime


class InProcessExecutor:
    """Plain WorkerRuntime objects called directly."""

    def __init__(self, config: ExperimentConfig, algorithm_name: str, data: FederatedData,
                 run_dir: str | None, num_workers: int = 1, committed_round: int = 0,
                 llm: LLMEndpoint | None = None) -> None:
        self.workers = [WorkerRuntime(config, algorithm_name, data, run_dir, committed_round, llm)
                        for _ in range(num_workers)]
        self.num_workers = num_workers

    def initial_payload(self, preset: str) -> Any:
        return self.workers[0].initial_payload(preset)

    def run_clients(self, per_worker: dict[int, list[ClientTask]],
                    globals_by_preset: dict[str, Any]) -> list[ClientOutcome]:
        return [outcome for worker, tasks in sorted(per_worker.items())
                for outcome in self.workers[worker].run_clients(tasks, globals_by_preset)]

    def secagg_stage(self, stage: str, per_worker: dict[int, dict[int, Any]]) -> dict[int, Any]:
        replies: dict[int, Any] = {}
        for worker, inbox in sorted(per_worker.items()):
            replies.update(self.workers[worker].secagg_stage(stage, inbox))
        return replies

    def evaluate(self, jobs: dict[int, list[tuple[str, Any, tuple[int, int]]]]) -> dict[int, list[dict]]:
        return {w: [self.workers[w].evaluate(*job) for job in worker_jobs] for w, worker_jobs in jobs.items()}

    def evaluate_clients(self, per_worker: dict[int, list[tuple[int, str]]],
                         globals_by_preset: dict[str, Any]) -> dict[int, dict]:
        merged: dict[int, dict] = {}
        for worker, clients in per_worker.items():
            merged.update(self.workers[worker].evaluate_clients(clients, globals_by_preset))
        return merged
