"""Coordinator: the Ray actor that runs the rounds (a RoundEngine over the ClientWorker pool)."""
from __future__ import annotations

from typing import Any

import ray

from actors.executor import RayExecutor
from actors.llm_client import ServeLLMClient
from fedsim.config import ExperimentConfig
from fedsim.data.federated import FederatedData
from fedsim.engine.coordinator import RoundEngine


@ray.remote(num_cpus=0)
class Coordinator:
    """Owns sampling, aggregation, the byte ledger, the virtual clock, evaluation and checkpoints."""

    def __init__(self, config: ExperimentConfig, algorithm_name: str, data: FederatedData,
                 workers: list[Any], run_dir: str | None, llm_handle: Any = None, trainer: Any = None) -> None:
        llm = ServeLLMClient(llm_handle, config.llm.request_timeout_s, config.llm.request_retries) \
            if llm_handle is not None else None
        self.engine = RoundEngine(config, algorithm_name, data, RayExecutor(workers), run_dir, llm, trainer)
        self.engine.restore()  # continue from the run folder's checkpoint, if it has one

    def completed_rounds(self) -> int:
        return self.engine.completed

    def evaluate_start(self) -> dict[str, Any] | None:
        return self.engine.evaluate_start()

    def run_round(self) -> dict[str, Any]:
        return self.engine.run_round()

    def rows(self) -> list[dict[str, Any]]:
        return self.engine.rows
