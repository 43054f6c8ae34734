"""The round engine: sampling, scheduling, aggregation, accounting, evaluation and checkpoints.

No Ray here: the engine talks to workers through an `Executor` (Ray actors in actors/, or plain
in-process workers for tests and the benchmark's lower bound).
"""
from __future__ import annotations

import dataclasses
import pickle
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fedsim.algorithms import make_algorithm
from fedsim.algorithms.base import POOLED_CLIENT, ClientOutcome
from fedsim.algorithms.fedavg import cast_for_wire, weighted_sum
from fedsim.clock import ClientProfiles, VirtualClock, plan_cohort, sample_online, sample_poisson
from fedsim.comm import SERVER, ByteLedger, Message, payload_nbytes
from fedsim.config import ExperimentConfig
from fedsim.data.federated import FederatedData
from fedsim.engine.privacy_gate import PrivacyGate
from fedsim.engine.secure_sum import SecAggAbort, dropped_after_masking, run_cost, run_protocol, secagg_config
from fedsim.engine.worker import ClientTask
from fedsim.privacy.ledger import PrivacyLedger
from fedsim.results import ROWS_JSONL, atomic_write, remove_temporaries, write_jsonl, write_rows
from fedsim.rng import numpy_stream

CHECKPOINT_FILE = "checkpoint.pkl"
PRIVACY_JSONL = "privacy.jsonl"


class Executor(Protocol):
    """How the engine reaches its workers."""

    num_workers: int

    def initial_payload(self, preset: str) -> Any: ...

    def run_clients(self, per_worker: dict[int, list[ClientTask]],
                    globals_by_preset: dict[str, Any]) -> list[ClientOutcome]: ...

    def evaluate(self, jobs: dict[int, list[tuple[str, Any, tuple[int, int]]]]) -> dict[int, list[dict]]: ...

    def evaluate_clients(self, per_worker: dict[int, list[tuple[int, str]]],
                         globals_by_preset: dict[str, Any]) -> dict[int, dict]: ...

    def secagg_stage(self, stage: str, per_worker: dict[int, dict[int, Any]]) -> dict[int, Any]: ...


def merge_counts(parts: list[dict[str, list[int]]]) -> dict[str, list[int]]:
    """Add per-domain [correct, total] counts."""
    merged: dict[str, list[int]] = {}
    for part in parts:
        for domain, (correct, total) in part.items():
            entry = merged.setdefault(domain, [0, 0])
            entry[0] += correct
            entry[1] += total
    return merged


def client_accuracy(counts: dict[str, list[int]], mixture: dict[str, float]) -> float:
    """A client's expected accuracy: per-domain accuracy weighted by its own domain mixture."""
    weights = {d: w for d, w in mixture.items() if d in counts and counts[d][1] > 0}
    total = sum(weights.values())
    if total <= 0:
        correct = sum(c for c, _ in counts.values())
        return correct / max(1, sum(t for _, t in counts.values()))
    return sum(w * counts[d][0] / counts[d][1] for d, w in weights.items()) / total


class RoundEngine:
    """Runs one algorithm's rounds over a federation and keeps every number it reports."""

    def __init__(self, config: ExperimentConfig, algorithm_name: str, data: FederatedData,
                 executor: Executor, run_dir: str | None) -> None:
        self.config = config
        self.algorithm = make_algorithm(algorithm_name, config)
        self.data = data
        self.executor = executor
        self.run_dir = Path(run_dir) if run_dir else None
        self.profiles = ClientProfiles.draw(config.clients, config.seed)
        self.completed = 0
        self.clock = VirtualClock()
        self.bytes = ByteLedger()
        self.rows: list[dict[str, Any]] = []
        self.worker_of: dict[int, int] = {}
        self.eval_clients = self._pick_eval_clients()
        secure = config.secagg.mode != "off" and self.algorithm.summed_kind is not None
        self.secagg = secagg_config(config.secagg) if secure else None
        self.privacy = PrivacyGate(config, data.sizes, self.algorithm)
        presets = sorted(set(self.profiles.presets)) if not self.algorithm.pooled else [self.profiles.presets[0]]
        self.globals: dict[str, Any] = {preset: executor.initial_payload(preset) for preset in presets}

    # ----- state -------------------------------------------------------------------------------
    def _pick_eval_clients(self) -> list[int]:
        n = self.profiles.num_clients
        count = min(n, self.config.eval.max_clients)
        if count == n:
            return list(range(n))
        rng = numpy_stream(self.config.seed, SERVER, 0, "eval-clients")
        return sorted(int(c) for c in rng.choice(n, size=count, replace=False))

    def checkpoint(self) -> None:
        """Write the engine's state after a completed round (atomically)."""
        if self.run_dir is None:
            return
        state = {"completed": self.completed, "globals": self.globals, "clock": self.clock.now_s,
                 "bytes": self.bytes.to_dict(), "rows": self.rows, "worker_of": self.worker_of,
                 "ledger": self.privacy.ledger.to_dict()}
        atomic_write(self.run_dir / CHECKPOINT_FILE, lambda handle: pickle.dump(state, handle))

    def restore(self) -> bool:
        """Continue this run folder from its last checkpoint, if it has one; returns whether it had.

        Whatever an interrupted attempt left goes first: `.tmp` files of unfinished writes, and the
        rows and privacy ledger it wrote past the checkpoint (rows.jsonl and privacy.jsonl are
        rewritten from the checkpoint; without one, nothing was committed and both are removed).
        Client state versions past the checkpoint stay on disk, unused (see ClientStateStore)."""
        if self.run_dir is None:
            return False
        remove_temporaries(self.run_dir)
        path = self.run_dir / CHECKPOINT_FILE
        if not path.is_file():
            for name in (ROWS_JSONL, PRIVACY_JSONL):
                (self.run_dir / name).unlink(missing_ok=True)
            return False
        with open(path, "rb") as handle:
            state = pickle.load(handle)
        self.completed = state["completed"]
        self.globals = state["globals"]
        self.clock = VirtualClock(state["clock"])
        self.bytes = ByteLedger.from_dict(state["bytes"])
        self.rows = state["rows"]
        self.privacy.ledger = PrivacyLedger.from_dict(state["ledger"])
        self.worker_of = {c: w % self.executor.num_workers for c, w in state["worker_of"].items()}
        self._write_outputs()
        return True

    def _write_outputs(self) -> None:
        """Rewrite rows.jsonl and, when privacy is accounted, privacy.jsonl (every ledger row)."""
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_rows(self.run_dir, self.rows)
        if self.privacy.active:
            write_jsonl(self.run_dir / PRIVACY_JSONL, [dataclasses.asdict(r) for r in self.privacy.ledger.rows()])

    @property
    def done(self) -> bool:
        return self.completed >= self.config.rounds

    # ----- one round ---------------------------------------------------------------------------
    def _wire_payloads(self) -> dict[str, Any]:
        kind = self.algorithm.download_kind()
        if kind is None:
            return {}
        if kind == "adapter":
            return {p: cast_for_wire(g, self.config.comm.adapter_dtype) for p, g in self.globals.items()}
        return dict(self.globals)

    def _planned_seconds(self, clients: list[int], wire: dict[str, Any]) -> dict[int, float]:
        samples = self.config.train.local_steps * self.config.train.batch_size
        planned = {}
        for client in clients:
            preset = self.profiles.preset_of(client)
            size = payload_nbytes(wire[preset]) if preset in wire else 0
            compute, transfer = self.profiles.completion_time(client, samples, size, size)
            planned[client] = compute + transfer
        return planned

    def _assign(self, clients: list[int], planned: dict[int, float]) -> dict[int, list[int]]:
        """Keep each client on its worker; place new clients on the least-loaded worker."""
        workers = self.executor.num_workers
        load = [0.0] * workers
        per_worker: dict[int, list[int]] = {}
        placed = [c for c in clients if c in self.worker_of]
        new = sorted((c for c in clients if c not in self.worker_of), key=lambda c: (-planned.get(c, 0.0), c))
        for client in placed + new:
            if client not in self.worker_of:
                self.worker_of[client] = client % workers if self.config.engine.dedicated else int(np.argmin(load))
            worker = self.worker_of[client]
            load[worker] += planned.get(client, 1.0)
            per_worker.setdefault(worker, []).append(client)
        return per_worker

    def run_round(self) -> dict[str, Any]:
        """Run the next round and return its result row."""
        started = time.perf_counter()
        round_index = self.completed
        wire = self._wire_payloads()
        if self.algorithm.pooled:
            sampled, selected, stragglers, late, refused = [POOLED_CLIENT], [POOLED_CLIENT], [], [], []
            per_worker = {0: [POOLED_CLIENT]}
            presets = {POOLED_CLIENT: next(iter(self.globals))}
        else:
            if self.config.clients.sampling == "poisson":
                sampled = sample_poisson(self.profiles, self.config.seed, round_index, self.config.sample_rate())
                keep = len(sampled)
            else:
                sampled = sample_online(self.profiles, self.config.seed, round_index,
                                        self.config.sampled_per_round())
                keep = self.config.clients.per_round
            planned = self._planned_seconds(sampled, wire)
            cohort = plan_cohort(self.profiles, sampled, keep, planned, self.config.clients.deadline_s)
            selected, stragglers, late = cohort.selected, cohort.stragglers, cohort.missed_deadline
            if not self.privacy.admit_round(round_index):
                selected = []
            selected, refused = self.privacy.admit_clients(round_index, selected)
            per_worker = self._assign(selected, planned)
            presets = {c: self.profiles.preset_of(c) for c in selected}

        kind = self.algorithm.download_kind()
        downloads = {c: Message(kind, SERVER, c, wire[presets[c]]) for c in selected if kind is not None}
        tasks = {w: [ClientTask(c, round_index, presets[c], downloads.get(c),
                                self.privacy.dp_sgd_sigma(c) if c != POOLED_CLIENT else None) for c in clients]
                 for w, clients in per_worker.items()}
        outcomes = self.executor.run_clients(tasks, self.globals)

        messages = list(downloads.values()) + [m for outcome in outcomes for m in outcome.messages]
        by_preset: dict[str, list[ClientOutcome]] = {}
        for outcome in outcomes:
            by_preset.setdefault(presets[outcome.client], []).append(outcome)
        dropped: set[int] = set()
        aborted: list[str] = []
        for preset, group in sorted(by_preset.items()):
            if self.algorithm.summed_kind is None:
                self.globals[preset] = self.algorithm.aggregate(preset, self.globals[preset], group)
                continue
            try:
                total, weight, lost = self._sum_updates(round_index, preset, group, messages)
            except SecAggAbort:
                aborted.append(preset)  # the previous global state stays
                dropped.update(outcome.client for outcome in group)
                continue
            dropped.update(lost)
            mean = self.privacy.release_mean(round_index, preset, total, weight)
            self.globals[preset] = self.algorithm.apply_mean(preset, self.globals[preset], mean)
        sim_round_s = self._account(round_index, messages, outcomes)

        self.completed += 1
        row = self._row(round_index, started, sim_round_s, sampled, selected, stragglers, late, outcomes)
        row.update({"secagg": self.config.secagg.mode if self.secagg else "off",
                    "clients_dropped": len(dropped), "secagg_aborted": aborted, "clients_refused": len(refused)})
        row.update(self.privacy.row_fields(round_index))
        row["clients_succeeded"] -= len(dropped)
        self.rows.append(row)
        self._write_outputs()
        self.checkpoint()
        return row

    def evaluate_start(self) -> dict[str, Any] | None:
        """Row 0: the starting model, evaluated before any training, when evaluation is on (once per
        run: a run restored from a checkpoint has it already). Returns the row, or None."""
        if self.rows or self.completed or not self._should_evaluate():
            return None
        started = time.perf_counter()
        evaluated = self.evaluate()
        row: dict[str, Any] = {
            "round": 0, "algorithm": self.algorithm.name, "accuracy": evaluated.pop("accuracy"), "loss": None,
            "clients_sampled": 0, "clients_selected": 0, "clients_succeeded": 0, "clients_straggled": 0,
            "clients_missed_deadline": 0,
            "bytes_up": 0, "bytes_down": 0,
            "bytes_up_total": self.bytes.direction_total("up"), "bytes_down_total": self.bytes.direction_total("down"),
            "sim_round_s": 0.0, "sim_time_s": self.clock.now_s,
        }
        row.update(evaluated)
        row["wall_s"] = time.perf_counter() - started
        self.rows.append(row)
        self._write_outputs()
        self.checkpoint()
        return row

    def _sum_updates(self, round_index: int, preset: str, group: list[ClientOutcome],
                     messages: list[Message]) -> tuple[dict[str, np.ndarray], int, frozenset[int]]:
        """(Σ w_k Δ_k, Σ w_k, dropped clients), through secure aggregation when it is on."""
        if self.secagg is None:
            total, weight = weighted_sum(group, self.algorithm.summed_kind)
            return total, weight, frozenset()
        from fedsim.secagg import Dropouts, TensorSpec

        spec = TensorSpec.from_update(self.globals[preset])
        handed = {outcome.client: outcome.secagg for outcome in group}
        dropped = dropped_after_masking(sorted(handed), self.config.secagg.dropout_rate, self.config.seed,
                                        round_index)
        dropouts = Dropouts(before_input=dropped)
        if self.secagg.mode == "protocol":
            result = run_protocol(self.secagg, round_index, spec, handed, dropouts, self._stage_call, messages)
        else:
            result = run_cost(self.secagg, round_index, spec, handed, dropouts, messages)
        return result.weighted_sum, result.total_weight, dropped

    def _stage_call(self, stage: str, inbox: dict[int, Any]) -> dict[int, Any]:
        per_worker: dict[int, dict[int, Any]] = {}
        for client, message in inbox.items():
            per_worker.setdefault(self.worker_of[client], {})[client] = message
        return self.executor.secagg_stage(stage, per_worker)

    def _account(self, round_index: int, messages: list[Message], outcomes: list[ClientOutcome]) -> float:
        """Count every message's bytes; return the round's simulated duration."""
        up: dict[int, int] = {}
        down: dict[int, int] = {}
        for message in messages:
            nbytes = self.bytes.record_message(round_index, message)
            if message.direction == "up":
                up[message.sender] = up.get(message.sender, 0) + nbytes
            else:
                down[message.receiver] = down.get(message.receiver, 0) + nbytes
        duration = 0.0
        for outcome in outcomes:
            if outcome.client == POOLED_CLIENT:
                seconds = outcome.samples_processed * self.config.clients.seconds_per_sample.median
            else:
                compute, transfer = self.profiles.completion_time(outcome.client, outcome.samples_processed,
                                                                  down.get(outcome.client, 0),
                                                                  up.get(outcome.client, 0))
                seconds = compute + transfer
            duration = max(duration, seconds)
        self.clock.advance(duration)
        return duration

    # ----- evaluation and rows -----------------------------------------------------------------
    def _should_evaluate(self) -> bool:
        every = self.config.eval.every
        return self.algorithm.needs_model and every > 0 and (self.completed % every == 0 or self.done)

    def evaluate(self) -> dict[str, float]:
        """Mean client accuracy over the evaluation clients (per decoding mode when eval.mode is
        'both'; the headline 'accuracy' is then answer-only decoding), and each global model's
        test accuracy."""
        mixtures = {c: dict(zip(self.data.domains, self.data.domain_weights[c].tolist()))
                    for c in self.eval_clients}
        modes = ["answer", "rationale"] if self.config.eval.mode == "both" else [self.config.eval.mode]
        fields: dict[str, float] = {}
        if self.algorithm.keeps_client_state:
            counts = self._starting_client_counts() if self.completed == 0 else self._client_counts()
            for mode in modes:
                fields[f"accuracy/{mode}"] = float(np.mean([client_accuracy(counts[c][mode], mixtures[c])
                                                            for c in self.eval_clients]))
        else:
            workers = self.executor.num_workers
            bounds = np.linspace(0, len(self.data.test), workers + 1).astype(int)
            preset_names = sorted(self.globals)
            jobs = {w: [(p, self.globals[p], (int(bounds[w]), int(bounds[w + 1]))) for p in preset_names]
                    for w in range(workers) if bounds[w + 1] > bounds[w]}
            results = self.executor.evaluate(jobs)
            for mode in modes:
                per_preset = {p: merge_counts([results[w][i][mode] for w in results])
                              for i, p in enumerate(preset_names)}
                for preset, counts in per_preset.items():
                    correct, total = sum(c for c, _ in counts.values()), sum(t for _, t in counts.values())
                    fields[f"test_accuracy/{preset}/{mode}"] = correct / max(1, total)
                if self.algorithm.pooled:
                    fields[f"accuracy/{mode}"] = fields[f"test_accuracy/{preset_names[0]}/{mode}"]
                else:
                    fields[f"accuracy/{mode}"] = float(np.mean([
                        client_accuracy(per_preset[self.profiles.preset_of(c)], mixtures[c])
                        for c in self.eval_clients]))
        fields["accuracy"] = fields[f"accuracy/{modes[0]}"]
        return fields

    def _client_counts(self) -> dict[int, dict]:
        """Per decoding mode, per-domain counts of each evaluation client's own model."""
        per_worker: dict[int, list[tuple[int, str]]] = {}
        for client in self.eval_clients:
            worker = self.worker_of.get(client, client % self.executor.num_workers)
            per_worker.setdefault(worker, []).append((client, self.profiles.preset_of(client)))
        return self.executor.evaluate_clients(per_worker, self.globals)

    def _starting_client_counts(self) -> dict[int, dict]:
        """`_client_counts` before any training: every client's model is then its preset's starting
        global model, so each preset is scored once, on the same test slice evaluate_clients uses."""
        size = min(len(self.data.test), self.config.eval.client_test_size)
        presets = sorted({self.profiles.preset_of(c) for c in self.eval_clients})
        jobs: dict[int, list[tuple[str, Any, tuple[int, int]]]] = {}
        for i, preset in enumerate(presets):
            jobs.setdefault(i % self.executor.num_workers, []).append((preset, self.globals[preset], (0, size)))
        results = self.executor.evaluate(jobs)
        by_preset = {job[0]: counts for w, worker_jobs in jobs.items() for job, counts in zip(worker_jobs, results[w])}
        return {c: by_preset[self.profiles.preset_of(c)] for c in self.eval_clients}

    def _row(self, round_index: int, started: float, sim_round_s: float, sampled: list[int],
             selected: list[int], stragglers: list[int], late: list[int],
             outcomes: list[ClientOutcome]) -> dict[str, Any]:
        losses = [o.metrics["loss"] for o in outcomes if "loss" in o.metrics]
        evaluated = self.evaluate() if self._should_evaluate() else {}
        row: dict[str, Any] = {
            "round": round_index + 1,
            "algorithm": self.algorithm.name,
            "accuracy": evaluated.pop("accuracy", None),
            "loss": float(np.mean(losses)) if losses else None,
            "clients_sampled": len(sampled) if not self.algorithm.pooled else 0,
            "clients_selected": len(selected) if not self.algorithm.pooled else 0,
            "clients_succeeded": len(outcomes) if not self.algorithm.pooled else 0,
            "clients_straggled": len(stragglers),
            "clients_missed_deadline": len(late),
            "bytes_up": self.bytes.direction_total("up", round_index),
            "bytes_down": self.bytes.direction_total("down", round_index),
            "bytes_up_total": self.bytes.direction_total("up"),
            "bytes_down_total": self.bytes.direction_total("down"),
            "sim_round_s": sim_round_s,
            "sim_time_s": self.clock.now_s,
        }
        row.update({f"bytes/{key}": value for key, value in self.bytes.round_bytes(round_index).items()})
        row.update(evaluated)
        row["wall_s"] = time.perf_counter() - started
        return row
