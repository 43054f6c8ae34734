"""Evaluation: each global model's test accuracy and the mean accuracy of the evaluation clients."""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from fedsim.algorithms.base import Algorithm
from fedsim.clock import ClientProfiles
from fedsim.comm import SERVER
from fedsim.config import ExperimentConfig
from fedsim.data.federated import FederatedData
from fedsim.rng import numpy_stream

EvalJobs = dict[int, list[tuple[str, Any, tuple[int, int]]]]  # worker -> [(preset, payload, test slice)]


class EvaluationWorkers(Protocol):
    """The part of the executor evaluation uses."""

    num_workers: int

    def evaluate(self, jobs: EvalJobs) -> dict[int, list[dict]]: ...

    def evaluate_clients(self, per_worker: dict[int, list[tuple[int, str]]],
                         globals_by_preset: dict[str, Any]) -> dict[int, dict]: ...


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


class Evaluator:
    """Scores global models on the test split and client models on each client's domain mixture."""

    def __init__(self, config: ExperimentConfig, algorithm: Algorithm, data: FederatedData,
                 profiles: ClientProfiles, workers: EvaluationWorkers) -> None:
        self.config = config
        self.algorithm = algorithm
        self.data = data
        self.profiles = profiles
        self.workers = workers
        self.clients = self._pick_clients()
        self.modes = ["answer", "rationale"] if config.eval.mode == "both" else [config.eval.mode]

    def _pick_clients(self) -> list[int]:
        n = self.profiles.num_clients
        count = min(n, self.config.eval.max_clients)
        if count == n:
            return list(range(n))
        rng = numpy_stream(self.config.seed, SERVER, 0, "eval-clients")
        return sorted(int(c) for c in rng.choice(n, size=count, replace=False))

    def due(self, completed: int) -> bool:
        """Whether evaluation runs after `completed` rounds (every eval.every rounds, and at the end)."""
        every = self.config.eval.every
        scored = self.algorithm.needs_model or self.algorithm.needs_trainer
        return scored and every > 0 and (completed % every == 0 or completed >= self.config.rounds)

    def evaluate(self, globals_by_preset: dict[str, Any], completed: int,
                 worker_of: dict[int, int]) -> dict[str, float]:
        """Mean client accuracy over the evaluation clients (per decoding mode when eval.mode is
        'both'; the headline 'accuracy' is then answer-only decoding), and each global model's
        test accuracy."""
        mixtures = {c: dict(zip(self.data.domains, self.data.domain_weights[c].tolist())) for c in self.clients}
        fields: dict[str, float] = {}
        if self.algorithm.keeps_client_state:
            counts = self._starting_client_counts(globals_by_preset) if completed == 0 else \
                self.client_counts(globals_by_preset, worker_of)
            presets = {c: self.profiles.preset_of(c) for c in self.clients}
            for mode in self.modes:
                accuracy = {c: client_accuracy(counts[c][mode], mixtures[c]) for c in self.clients}
                fields[f"accuracy/{mode}"] = float(np.mean(list(accuracy.values())))
                if len(set(presets.values())) > 1:  # heterogeneous clients: each architecture's mean too
                    for preset in sorted(set(presets.values())):
                        fields[f"accuracy_by_preset/{preset}/{mode}"] = float(np.mean(
                            [value for c, value in accuracy.items() if presets[c] == preset]))
        else:
            per_preset = self._global_counts(globals_by_preset)
            for mode in self.modes:
                for preset, counts in per_preset[mode].items():
                    correct, total = sum(c for c, _ in counts.values()), sum(t for _, t in counts.values())
                    fields[f"test_accuracy/{preset}/{mode}"] = correct / max(1, total)
                fields[f"accuracy/{mode}"] = float(np.mean([
                    client_accuracy(per_preset[mode][self._scored_preset(c, globals_by_preset)], mixtures[c])
                    for c in self.clients]))
        fields["accuracy"] = fields[f"accuracy/{self.modes[0]}"]
        return fields

    def _scored_preset(self, client: int, globals_by_preset: dict[str, Any]) -> str:
        """The preset whose global model stands for `client`: its own, or the one model of a pooled run
        (scored, like every other, with each evaluation client's domain mixture)."""
        return min(globals_by_preset) if self.algorithm.pooled else self.profiles.preset_of(client)

    def _global_counts(self, globals_by_preset: dict[str, Any]) -> dict[str, dict[str, dict[str, list[int]]]]:
        """Per mode and preset, per-domain counts of the global model on the whole test split."""
        workers = self.workers.num_workers
        bounds = np.linspace(0, len(self.data.test), workers + 1).astype(int)
        preset_names = sorted(globals_by_preset)
        jobs = {w: [(p, globals_by_preset[p], (int(bounds[w]), int(bounds[w + 1]))) for p in preset_names]
                for w in range(workers) if bounds[w + 1] > bounds[w]}
        results = self.workers.evaluate(jobs)
        return {mode: {p: merge_counts([results[w][i][mode] for w in results]) for i, p in enumerate(preset_names)}
                for mode in self.modes}

    def client_counts(self, globals_by_preset: dict[str, Any], worker_of: dict[int, int]) -> dict[int, dict]:
        """Per decoding mode, per-domain counts of each evaluation client's own model."""
        per_worker: dict[int, list[tuple[int, str]]] = {}
        for client in self.clients:
            worker = worker_of.get(client, client % self.workers.num_workers)
            per_worker.setdefault(worker, []).append((client, self.profiles.preset_of(client)))
        return self.workers.evaluate_clients(per_worker, globals_by_preset)

    def _starting_client_counts(self, globals_by_preset: dict[str, Any]) -> dict[int, dict]:
        """`client_counts` before any training: every client's model is then its preset's starting
        global model, so each preset is scored once, on the same test slice evaluate_clients uses."""
        size = min(len(self.data.test), self.config.eval.client_test_size)
        presets = sorted({self.profiles.preset_of(c) for c in self.clients})
        jobs: EvalJobs = {}
        for i, preset in enumerate(presets):
            jobs.setdefault(i % self.workers.num_workers, []).append((preset, globals_by_preset[preset], (0, size)))
        results = self.workers.evaluate(jobs)
        by_preset = {job[0]: counts for w, worker_jobs in jobs.items() for job, counts in zip(worker_jobs, results[w])}
        return {c: by_preset[self.profiles.preset_of(c)] for c in self.clients}
