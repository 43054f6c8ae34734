"""ClientWorker: a Ray actor that hosts many virtual clients (a WorkerRuntime)."""
from __future__ import annotations

import os
from typing import Any

import ray

from actors.llm_client import ServeLLMClient
from actors.progress import BoardProgress
from fedsim.algorithms.base import ClientOutcome
from fedsim.config import ExperimentConfig
from fedsim.data.federated import FederatedData
from fedsim.engine.worker import ClientTask, WorkerRuntime


@ray.remote
class ClientWorker:
    """One process of the worker pool; the coordinator sends it one call per round."""

    def __init__(self, config: ExperimentConfig, algorithm_name: str, data: FederatedData,
                 run_dir: str | None, committed_round: int, llm_handle: Any = None,
                 progress_board: Any = None) -> None:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        progress = BoardProgress(progress_board) if progress_board is not None else None
        llm = None
        if llm_handle is not None:
            llm = ServeLLMClient(llm_handle, config.llm.request_timeout_s, config.llm.request_retries,
                                 progress=progress)
        self.runtime = WorkerRuntime(config, algorithm_name, data, run_dir, committed_round, llm, progress)

    def initial_payload(self, preset: str) -> Any:
        return self.runtime.initial_payload(preset)

    def run_clients(self, tasks: list[ClientTask], globals_by_preset: dict[str, Any]) -> list[ClientOutcome]:
        return self.runtime.run_clients(tasks, globals_by_preset)

    def secagg_stage(self, stage: str, inbox: dict[int, Any]) -> dict[int, Any]:
        return self.runtime.secagg_stage(stage, inbox)

    def evaluate(self, jobs: list[tuple[str, Any, tuple[int, int]]]) -> list[dict]:
        return [self.runtime.evaluate(*job) for job in jobs]

    def evaluate_clients(self, clients: list[tuple[int, str]], globals_by_preset: dict[str, Any]) -> dict[int, dict]:
        return self.runtime.evaluate_clients(clients, globals_by_preset)
