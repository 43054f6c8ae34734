"""Cohort selection: who trains this round, on which worker.

Sampling (uniform over online clients or Poisson), over-commit and the deadline, privacy admission,
and placement on the worker pool (a client stays on the worker it first landed on).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedsim.algorithms.base import POOLED_CLIENT
from fedsim.clock import ClientProfiles, plan_cohort, sample_online, sample_poisson
from fedsim.comm import payload_nbytes
from fedsim.config import ExperimentConfig
from fedsim.engine.privacy_gate import PrivacyGate


@dataclass(frozen=True)
class Cohort:
    """One round's clients: sampled, kept, left out (and why), and where each kept one runs."""

    sampled: list[int]
    selected: list[int]
    per_worker: dict[int, list[int]]
    presets: dict[int, str]
    stragglers: list[int] = field(default_factory=list)
    missed_deadline: list[int] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)


class CohortSelector:
    """Samples and places each round's cohort; remembers every client's worker."""

    def __init__(self, config: ExperimentConfig, profiles: ClientProfiles, privacy: PrivacyGate,
                 num_workers: int) -> None:
        self.config = config
        self.profiles = profiles
        self.privacy = privacy
        self.num_workers = num_workers
        self.worker_of: dict[int, int] = {}

    def pooled(self, preset: str) -> Cohort:
        """The one pooled client of centralized training."""
        return Cohort([POOLED_CLIENT], [POOLED_CLIENT], {0: [POOLED_CLIENT]}, {POOLED_CLIENT: preset})

    def select(self, round_index: int, wire: dict[str, Any]) -> Cohort:
        """Sample, keep the fastest that meet the deadline, admit under the privacy budget, place."""
        clients = self.config.clients
        if clients.sampling == "poisson":
            sampled = sample_poisson(self.profiles, self.config.seed, round_index, self.config.sample_rate())
            keep = len(sampled)
        else:
            sampled = sample_online(self.profiles, self.config.seed, round_index, self.config.sampled_per_round())
            keep = clients.per_round
        planned = self._planned_seconds(sampled, wire)
        plan = plan_cohort(self.profiles, sampled, keep, planned, clients.deadline_s)
        selected = plan.selected if self.privacy.admit_round(round_index) else []
        selected, refused = self.privacy.admit_clients(round_index, selected)
        return Cohort(sampled, selected, self._assign(selected, planned),
                      {c: self.profiles.preset_of(c) for c in selected},
                      plan.stragglers, plan.missed_deadline, refused)

    def _planned_seconds(self, clients: list[int], wire: dict[str, Any]) -> dict[int, float]:
        """Each client's expected round time, from its profile and the broadcast's size."""
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
        load = [0.0] * self.num_workers
        per_worker: dict[int, list[int]] = {}
        placed = [c for c in clients if c in self.worker_of]
        new = sorted((c for c in clients if c not in self.worker_of), key=lambda c: (-planned.get(c, 0.0), c))
        for client in placed + new:
            if client not in self.worker_of:
                dedicated = self.config.engine.dedicated
                self.worker_of[client] = client % self.num_workers if dedicated else int(np.argmin(load))
            worker = self.worker_of[client]
            load[worker] += planned.get(client, 1.0)
            per_worker.setdefault(worker, []).append(client)
        return per_worker

    def worker_for(self, client: int) -> int:
        """The worker a client runs on (its home worker if it has not run yet)."""
        return self.worker_of.get(client, client % self.num_workers)
