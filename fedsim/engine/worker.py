"""The worker runtime: hosts many virtual clients on one process (no Ray here).

A worker keeps one base model per SLM preset and swaps each client's adapter in and out; client
state (adapter, optimizer moments) lives in a store that is also written to the run folder, so it
survives resume and can be reloaded by whichever worker a client lands on.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fedsim.algorithms import make_algorithm
from fedsim.algorithms.base import POOLED_CLIENT, ClientContext, ClientOutcome
from fedsim.algorithms.llm import LLMEndpoint, MeteredLLM
from fedsim.comm import SERVER, Message
from fedsim.config import ExperimentConfig
from fedsim.data.federated import FederatedData
from fedsim.engine.aggregation import SecureAggregationClient, client_layers
from fedsim.engine.progress import NoProgress, Progress
from fedsim.results import atomic_write
from fedsim.rng import base_seed, seed_torch_global

STATE_VERSIONS_KEPT = 2


@dataclass
class ClientTask:
    """One client's work in a round, as the coordinator hands it to a worker."""

    client: int
    round_index: int
    preset: str
    downloads: list[Message]
    dp_noise_multiplier: float | None = None


class ClientStateStore:
    """Per-client state in memory, with versioned copies on disk (the last two rounds).

    Round i (0-based) writes version `r{i:06d}.pt` of each client it changes. A store that starts
    after `committed_round` completed rounds may load from disk only versions i < committed_round:
    a version i >= committed_round was written by an attempt at round i that never completed (its
    checkpoint was not written), and round i must be redone from the state before it. Whatever the
    store writes afterwards it also keeps in memory, where later rounds of this process read it.
    """

    def __init__(self, directory: Path | None, committed_round: int) -> None:
        self.directory = directory
        self.committed_round = committed_round
        self.states: dict[int, dict[str, Any]] = {}

    def _versions(self, client: int) -> list[Path]:
        folder = self.directory / str(client)
        return sorted(folder.glob("r*.pt")) if folder.is_dir() else []

    def get(self, client: int) -> dict[str, Any]:
        """The client's state: from memory, else the newest committed version on disk, else empty."""
        if client not in self.states:
            state: dict[str, Any] = {}
            if self.directory is not None:
                usable = [p for p in self._versions(client) if int(p.stem[1:]) < self.committed_round]
                if usable:
                    state = torch.load(usable[-1], weights_only=False)
            self.states[client] = state
        return self.states[client]

    def put(self, client: int, round_index: int, state: dict[str, Any]) -> None:
        """Keep the state and write it (fsynced, atomically) as version `round_index`, dropping older ones."""
        self.states[client] = state
        if self.directory is None:
            return
        folder = self.directory / str(client)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / f"r{round_index:06d}.pt", lambda handle: torch.save(state, handle))
        for old in self._versions(client)[:-STATE_VERSIONS_KEPT]:
            old.unlink()


class WorkerRuntime:
    """Runs client steps and evaluations for the clients assigned to one worker."""

    def __init__(self, config: ExperimentConfig, algorithm_name: str, data: FederatedData,
                 run_dir: str | None, committed_round: int = 0, llm: LLMEndpoint | None = None,
                 progress: Progress | None = None) -> None:
        torch.set_num_threads(max(1, int(config.engine.num_cpus_per_worker)))  # the CPUs it was given
        self.progress = progress or NoProgress()
        self.config = config
        self.llm = llm
        self.algorithm = make_algorithm(algorithm_name, config)
        self.data = data
        state_dir = Path(run_dir) / "client_state" if run_dir and self.algorithm.keeps_client_state else None
        self.store = ClientStateStore(state_dir, committed_round)
        self.models: dict[str, tuple[Any, Any]] = {}
        self.initial: dict[str, Any] = {}
        self.layers = client_layers(config, self.algorithm)  # central-DP clipping, secure aggregation
        self.secure = next((layer for layer in self.layers if isinstance(layer, SecureAggregationClient)), None)

    def _model(self, preset: str) -> tuple[Any, Any]:
        """The worker's base model for a preset with LoRA attached (built once, seeded)."""
        if preset not in self.models:
            from fedsim.algorithms.server_models import lora_settings
            from fedsim.models.lora import attach_lora, get_adapter
            from fedsim.models.presets import load_model

            model, tokenizer = load_model(preset, base_seed(self.config.seed, preset))
            seed_torch_global(self.config.seed, SERVER, 0, f"lora-init/{preset}")
            model = attach_lora(model, lora_settings(self.config.lora))
            self.models[preset] = (model, tokenizer)
            self.initial[preset] = get_adapter(model)
        return self.models[preset]

    def initial_payload(self, preset: str) -> Any:
        """The global payload a preset starts from (the same on every worker)."""
        if not self.algorithm.needs_model:
            return self.algorithm.initial_payload()
        self._model(preset)
        return self.initial[preset]

    def run_clients(self, tasks: list[ClientTask], globals_by_preset: dict[str, Any]) -> list[ClientOutcome]:
        """Run the algorithm's client step for each task, in order; keep changed client state.

        Each outcome then passes through the client-side aggregation layers: under secure aggregation a
        client's summed update stays here, and the outcome carries only what the protocol lets leave
        the client (public keys, or in cost mode the quantised vector).
        """
        if self.secure is not None:
            self.secure.side.clear()
        self.progress.expect("clients", len(tasks))
        outcomes = []
        for task in tasks:
            model, tokenizer = self._model(task.preset) if self.algorithm.needs_model else (None, None)
            if task.client == POOLED_CLIENT:
                examples = self.data.pooled_examples()
            elif self.algorithm.needs_model:
                examples = self.data.client_examples(task.client)
            else:
                examples = []
            state = self.store.get(task.client) if self.algorithm.keeps_client_state else {}
            llm = MeteredLLM(self.llm, task.client, self.config.llm) if self.llm is not None else None
            ctx = ClientContext(task.client, task.round_index, self.config, task.preset, examples, task.downloads,
                                state, globals_by_preset.get(task.preset), model, tokenizer,
                                task.dp_noise_multiplier, llm, self.data.public)
            outcome = self.algorithm.client_step(ctx)
            if llm is not None:  # the client's LLM traffic, as the metered client made it
                llm_messages, outcome.llm_seconds = llm.take()
                outcome.messages = llm_messages + outcome.messages
            if outcome.state_changed:
                self.store.put(task.client, task.round_index, state)
            for layer in self.layers:
                layer.process(task.round_index, outcome)
            outcomes.append(outcome)
            self.progress.advance("clients")
        return outcomes

    def secagg_stage(self, stage: str, inbox: dict[int, Any]) -> dict[int, Any]:
        """One secure-aggregation stage for this worker's clients."""
        if self.secure is None:
            raise RuntimeError(f"secure aggregation stage {stage!r} reached a worker without secure aggregation")
        return self.secure.side.stage(stage, inbox)

    def evaluate(self, preset: str, adapter: Any, shard: tuple[int, int]) -> dict[str, dict[str, list[int]]]:
        """Per decoding mode, correct and total counts per domain of one adapter on a slice of the test set."""
        from fedsim.models.lora import set_adapter
        from fedsim.train.evaluate import domain_counts

        model, tokenizer = self._model(preset)
        set_adapter(model, adapter)
        modes = ["answer", "rationale"] if self.config.eval.mode == "both" else [self.config.eval.mode]
        counts: dict[str, dict[str, list[int]]] = {}
        examples = self.data.test[shard[0]:shard[1]]
        self.progress.expect("evaluation", len(modes) * len(examples))
        for mode in modes:
            counts[mode] = domain_counts(model, tokenizer, examples, mode, self.config.eval.batch_size,
                                         on_batch=lambda n: self.progress.advance("evaluation", n))
        return counts

    def evaluate_clients(self, clients: list[tuple[int, str]], globals_by_preset: dict[str, Any]) -> dict[int, dict]:
        """Per-domain counts of each listed client's own adapter on the first eval.client_test_size
        test examples (the test set is drawn at random, so this is a random subset, the same for all)."""
        results = {}
        size = min(len(self.data.test), self.config.eval.client_test_size)
        for client, preset in clients:
            state = self.store.get(client)
            adapter = state.get("adapter", globals_by_preset[preset])
            results[client] = self.evaluate(preset, adapter, (0, size))
        return results
