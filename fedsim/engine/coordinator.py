"""The round engine: one round is select, send, train, aggregate, account, evaluate, checkpoint.

No Ray here: the engine talks to workers through an `Executor` (Ray actors in actors/, or plain
in-process workers for tests and the benchmark's lower bound). Each responsibility has its own
module: cohort selection (cohort.py), the aggregation pipeline with secure aggregation and central
DP as layers (aggregation.py), bytes and the virtual clock (accounting.py), evaluation
(evaluation.py) and checkpoints (checkpoint.py).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fedsim.algorithms import make_algorithm
from fedsim.algorithms.base import Algorithm, ClientOutcome, ServerContext
from fedsim.algorithms.llm import LLMEndpoint, MeteredLLM
from fedsim.algorithms.fedavg import cast_for_wire
from fedsim.clock import ClientProfiles
from fedsim.comm import SERVER, Message
from fedsim.config import ExperimentConfig
from fedsim.data.federated import FederatedData
from fedsim.engine.accounting import RoundAccounting
from fedsim.engine.aggregation import AggregationPipeline
from fedsim.engine.checkpoint import load_checkpoint, save_checkpoint, write_outputs
from fedsim.engine.cohort import Cohort, CohortSelector
from fedsim.engine.evaluation import EvalJobs, Evaluator
from fedsim.engine.privacy_gate import PrivacyGate
from fedsim.engine.worker import ClientTask
from fedsim.privacy.ledger import PrivacyLedger


class Executor(Protocol):
    """How the engine reaches its workers."""

    num_workers: int

    def initial_payload(self, preset: str) -> Any: ...

    def run_clients(self, per_worker: dict[int, list[ClientTask]],
                    globals_by_preset: dict[str, Any]) -> list[ClientOutcome]: ...

    def evaluate(self, jobs: EvalJobs) -> dict[int, list[dict]]: ...

    def evaluate_clients(self, per_worker: dict[int, list[tuple[int, str]]],
                         globals_by_preset: dict[str, Any]) -> dict[int, dict]: ...

    def secagg_stage(self, stage: str, per_worker: dict[int, dict[int, Any]]) -> dict[int, Any]: ...


class RoundEngine:
    """Runs one algorithm's rounds over a federation and keeps every number it reports."""

    def __init__(self, config: ExperimentConfig, algorithm_name: str, data: FederatedData,
                 executor: Executor, run_dir: str | None, llm: LLMEndpoint | None = None,
                 trainer: Any = None) -> None:
        self.config = config
        self.algorithm = make_algorithm(algorithm_name, config)
        self.data = data
        self.executor = executor
        self.run_dir = Path(run_dir) if run_dir else None
        self.completed = 0
        self.rows: list[dict[str, Any]] = []
        profiles = ClientProfiles.draw(config.clients, config.seed)
        self.profiles = profiles
        self.privacy = PrivacyGate(config, data.sizes, self.algorithm)
        self.cohorts = CohortSelector(config, profiles, self.privacy, executor.num_workers)
        self.aggregation = AggregationPipeline(config, self.algorithm, self.privacy, self._stage_call)
        self.accounting = RoundAccounting(config, profiles)
        self.evaluator = Evaluator(config, self.algorithm, data, profiles, executor)
        presets = sorted(set(profiles.presets)) if not self.algorithm.pooled else [profiles.presets[0]]
        self.globals: dict[str, Any] = {preset: executor.initial_payload(preset) for preset in presets}
        self.server_llm = MeteredLLM(llm, SERVER, config.llm) if llm is not None else None
        self.trainer = trainer
        if self.algorithm.needs_trainer:
            if trainer is None:
                raise ValueError(f"{algorithm_name} trains on the server: the engine needs a server trainer")
            self.algorithm.prepare_trainer(trainer)
        self.server_state = self.algorithm.initial_server_state()
        self.has_server_step = type(self.algorithm).server_step is not Algorithm.server_step

    @property
    def done(self) -> bool:
        return self.completed >= self.config.rounds

    @property
    def worker_of(self) -> dict[int, int]:
        """Each client that has run, and the worker it runs on."""
        return self.cohorts.worker_of

    # ----- one round ---------------------------------------------------------------------------
    def run_round(self) -> dict[str, Any]:
        """Run the next round and return its result row."""
        started = time.perf_counter()
        round_index = self.completed
        wire = self._wire_payloads()
        cohort = self._select(round_index, wire)
        downloads = self._downloads(cohort, wire)
        outcomes = self.executor.run_clients(self._tasks(round_index, cohort, downloads), self.globals)
        messages = [m for sent in downloads.values() for m in sent] + [m for o in outcomes for m in o.messages]
        aggregated = self.aggregation.run(round_index, self.globals, cohort.presets, outcomes, messages)
        self.globals = aggregated.globals
        server_fields = self._server_step(round_index, outcomes, messages)
        sim_round_s = self.accounting.account(round_index, messages, outcomes, server_fields.get("server_step_s", 0.0))
        self.completed += 1
        row = self._row(round_index, cohort, outcomes, sim_round_s)
        row.update(server_fields)
        row.update({"secagg": self.config.secagg.mode if self.aggregation.secagg else "off",
                    "clients_dropped": len(aggregated.dropped), "secagg_aborted": aggregated.aborted,
                    "clients_refused": len(cohort.refused)})
        row.update(self.privacy.row_fields(round_index))
        row["clients_succeeded"] -= len(aggregated.dropped)
        row["wall_s"] = time.perf_counter() - started
        self._commit(row)
        return row

    def _wire_payloads(self) -> dict[str, Any]:
        """Each preset's global payload as it travels to the clients (adapters in the wire dtype)."""
        kind = self.algorithm.download_kind()
        if kind is None:
            return {}
        if kind == "adapter":
            return {p: cast_for_wire(g, self.config.comm.adapter_dtype) for p, g in self.globals.items()}
        return dict(self.globals)

    def _select(self, round_index: int, wire: dict[str, Any]) -> Cohort:
        if self.algorithm.pooled:
            return self.cohorts.pooled(next(iter(self.globals)))
        return self.cohorts.select(round_index, wire)

    def _downloads(self, cohort: Cohort, wire: dict[str, Any]) -> dict[int, list[Message]]:
        """The messages each selected client receives."""
        return {c: self.algorithm.downloads(c, cohort.presets[c], wire, self.server_state) for c in cohort.selected}

    def _tasks(self, round_index: int, cohort: Cohort,
               downloads: dict[int, list[Message]]) -> dict[int, list[ClientTask]]:
        return {w: [ClientTask(c, round_index, cohort.presets[c], downloads.get(c, []),
                               self.privacy.dp_sgd_sigma(c) if not self.algorithm.pooled else None)
                    for c in clients]
                for w, clients in cohort.per_worker.items()}

    def _server_step(self, round_index: int, outcomes: list[ClientOutcome], messages: list[Message]) -> dict[str, Any]:
        """Run the algorithm's server step (when it has one); its messages to clients join `messages`.

        Returns the row fields it adds: its metrics and `server_step_s`, its measured wall time, which
        also enters the virtual clock (the next round starts after the server is done)."""
        if not self.has_server_step:
            return {}
        started = time.perf_counter()
        ctx = ServerContext(round_index, self.config, self.globals, self.data.public, self.server_state, outcomes,
                            self.server_llm, self.trainer)
        self.algorithm.server_step(ctx)
        self.globals, self.server_state = ctx.globals, ctx.state
        messages += ctx.sends
        return {**ctx.metrics, "server_step_s": time.perf_counter() - started}

    def _stage_call(self, stage: str, inbox: dict[int, Any]) -> dict[int, Any]:
        """One secure-aggregation stage, sent to each client's worker."""
        per_worker: dict[int, dict[int, Any]] = {}
        for client, message in inbox.items():
            per_worker.setdefault(self.worker_of[client], {})[client] = message
        return self.executor.secagg_stage(stage, per_worker)

    # ----- rows, evaluation and checkpoints -----------------------------------------------------
    def evaluate_start(self) -> dict[str, Any] | None:
        """Row 0: the starting model, evaluated before any training, when evaluation is on (once per
        run: a run restored from a checkpoint has it already). Returns the row, or None."""
        if self.rows or self.completed or not self.evaluator.due(0):
            return None
        started = time.perf_counter()
        evaluated = self.evaluate()
        row: dict[str, Any] = {
            "round": 0, "algorithm": self.algorithm.name, "accuracy": evaluated.pop("accuracy"), "loss": None,
            "clients_sampled": 0, "clients_selected": 0, "clients_succeeded": 0, "clients_straggled": 0,
            "clients_missed_deadline": 0,
            **self.accounting.row_fields(None),
            "sim_round_s": 0.0, "sim_time_s": self.accounting.clock.now_s,
        }
        row.update(evaluated)
        row["wall_s"] = time.perf_counter() - started
        self._commit(row)
        return row

    def evaluate(self) -> dict[str, float]:
        """The evaluation fields of the current global (and client) models, and of the server's models.
        Without client models, the headline accuracy is the server LLM's."""
        fields = self.evaluator.evaluate(self.globals, self.completed, self.worker_of) if self.algorithm.needs_model else {}
        if self.trainer is not None:
            server = self.algorithm.evaluate_server(self.trainer, self.data.test)
            fields.update(server)
            if "accuracy" not in fields:
                fields["accuracy"] = server[f"llm_accuracy/{self.evaluator.modes[0]}"]
        return fields

    def _row(self, round_index: int, cohort: Cohort, outcomes: list[ClientOutcome],
             sim_round_s: float) -> dict[str, Any]:
        losses = [o.metrics["loss"] for o in outcomes if "loss" in o.metrics]
        evaluated = self.evaluate() if self.evaluator.due(self.completed) else {}
        pooled = self.algorithm.pooled
        row: dict[str, Any] = {
            "round": round_index + 1,
            "algorithm": self.algorithm.name,
            "accuracy": evaluated.pop("accuracy", None),
            "loss": float(np.mean(losses)) if losses else None,
            "clients_sampled": len(cohort.sampled) if not pooled else 0,
            "clients_selected": len(cohort.selected) if not pooled else 0,
            "clients_succeeded": len(outcomes) if not pooled else 0,
            "clients_straggled": len(cohort.stragglers),
            "clients_missed_deadline": len(cohort.missed_deadline),
            "sim_round_s": sim_round_s,
            "sim_time_s": self.accounting.clock.now_s,
        }
        row.update(self.accounting.row_fields(round_index))
        row.update(evaluated)
        return row

    def _commit(self, row: dict[str, Any]) -> None:
        """Keep the row, rewrite the run folder's outputs, then checkpoint."""
        self.rows.append(row)
        if self.run_dir is None:
            return
        write_outputs(self.run_dir, self.rows, self.privacy.ledger if self.privacy.active else None)
        self.checkpoint()

    def checkpoint(self) -> None:
        """Write the engine's state after a completed round (atomically)."""
        if self.run_dir is None:
            return
        state = {"completed": self.completed, "globals": self.globals, "rows": self.rows, "worker_of": self.worker_of,
                 "ledger": self.privacy.ledger.to_dict(), "server_state": self.server_state, **self.accounting.state()}
        if self.trainer is not None:
            state["trainer"] = self.trainer.state_dict()
        save_checkpoint(self.run_dir, state)

    def restore(self) -> bool:
        """Continue this run folder from its last checkpoint, if it has one; returns whether it had.

        Rows and privacy ledger written past the checkpoint are rewritten from it. Client state
        versions past the checkpoint stay on disk, unused (see ClientStateStore)."""
        if self.run_dir is None:
            return False
        state = load_checkpoint(self.run_dir)
        if state is None:
            return False
        self.completed = state["completed"]
        self.globals = state["globals"]
        self.rows = state["rows"]
        self.accounting.load_state(state)
        self.server_state = state["server_state"]
        if self.trainer is not None:
            self.trainer.load_state_dict(state["trainer"])  # adapters, optimizer moments, RNG; republishes
        self.privacy.ledger = PrivacyLedger.from_dict(state["ledger"])
        self.cohorts.worker_of = {c: w % self.executor.num_workers for c, w in state["worker_of"].items()}
        write_outputs(self.run_dir, self.rows, self.privacy.ledger if self.privacy.active else None)
        return True
