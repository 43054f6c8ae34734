"""The coordinator's privacy accounting: every private release is checked against its unit's budget
before it happens, recorded in the ledger, and reported per round.

Units: "client/<k>" for DP-SGD on client k's records (add/remove one record), "server/users" for
central DP-FedAvg (add/remove one user). Without a DP mechanism nothing private is released and no
budget can be set.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from dp_accounting.dp_event import GaussianDpEvent, PoissonSampledDpEvent, SelfComposedDpEvent
from dp_accounting.privacy_accountant import NeighboringRelation

from fedsim.algorithms.base import Algorithm, PlannedRelease
from fedsim.algorithms.fedavg import mean_of
from fedsim.comm import SERVER
from fedsim.config import ExperimentConfig
from fedsim.errors import FedsimError
from fedsim.privacy.accounting import calibrate_noise_multiplier
from fedsim.privacy.central import central_dp_average, central_dp_event
from fedsim.privacy.ledger import SERVER_USER_UNIT, PrivacyLedger, client_unit
from fedsim.rng import numpy_stream

ADD_REMOVE = NeighboringRelation.ADD_OR_REMOVE_ONE


class PrivacyConfigError(FedsimError, ValueError):
    """A privacy setting that cannot be honoured."""


class PrivacyGate:
    """Budgets, mechanism parameters and the ledger of one algorithm's run."""

    def __init__(self, config: ExperimentConfig, client_sizes: np.ndarray, algorithm: Algorithm) -> None:
        privacy = config.privacy
        self.algorithm = algorithm
        self.releases_text = type(algorithm).planned_release is not Algorithm.planned_release
        if not self.active_for(config) and math.isfinite(privacy.budget_eps):
            raise PrivacyConfigError("privacy.budget_eps is finite but no DP mechanism is configured "
                                     "(privacy.dp_sgd or privacy.central): every release would be non-private")
        self.config = config
        self.sizes = client_sizes
        self.ledger = PrivacyLedger(privacy.budget_eps, privacy.budget_delta)
        self._sigma_by_rate: dict[float, float] = {}
        self.central_sigma: float | None = None
        if privacy.central is not None:
            self.ledger.set_budget(SERVER_USER_UNIT, privacy.server_budget_eps, privacy.budget_delta)
            central = privacy.central
            self.central_sigma = central.noise_multiplier if central.noise_multiplier is not None else \
                calibrate_noise_multiplier(central.target_eps, privacy.budget_delta, config.sample_rate(),
                                           config.rounds)

    def active_for(self, config: ExperimentConfig) -> bool:
        return config.privacy.dp_sgd is not None or config.privacy.central is not None or self.releases_text

    @property
    def active(self) -> bool:
        return self.active_for(self.config)

    # ----- DP-SGD on client records --------------------------------------------------------------
    def dp_sgd_rate(self, client: int) -> float:
        """Poisson sampling rate of the client's DP-SGD batches: batch size over its data size."""
        return min(1.0, self.config.train.batch_size / max(1, int(self.sizes[client])))

    def dp_sgd_sigma(self, client: int) -> float | None:
        """The client's DP-SGD noise multiplier (given, or calibrated for every planned step)."""
        settings = self.config.privacy.dp_sgd
        if settings is None:
            return None
        if settings.noise_multiplier is not None:
            return settings.noise_multiplier
        rate = self.dp_sgd_rate(client)
        if rate not in self._sigma_by_rate:
            planned_steps = self.config.rounds * self.config.train.local_steps
            self._sigma_by_rate[rate] = calibrate_noise_multiplier(
                settings.target_eps, self.config.privacy.budget_delta, rate, planned_steps)
        return self._sigma_by_rate[rate]

    def _planned(self, client: int, round_index: int) -> list[PlannedRelease]:
        """Every private release the client will make this round."""
        planned = []
        if self.config.privacy.dp_sgd is not None:
            sigma, rate = self.dp_sgd_sigma(client), self.dp_sgd_rate(client)
            event = SelfComposedDpEvent(PoissonSampledDpEvent(rate, GaussianDpEvent(sigma)),
                                        self.config.train.local_steps)
            planned.append(PlannedRelease("dp_sgd", event, ADD_REMOVE, "proven",
                                          {"noise_multiplier": sigma, "sample_rate": rate,
                                           "steps": self.config.train.local_steps}))
        released = {entry.mechanism for entry in self.ledger.entries(client_unit(client))}
        algorithm_release = self.algorithm.planned_release(client, round_index, released)
        if algorithm_release is not None:
            planned.append(algorithm_release)
        return planned

    def admit_clients(self, round_index: int, clients: list[int]) -> tuple[list[int], list[int]]:
        """Record each client's planned releases for this round; refuse (and skip) a client over budget.

        Releases are recorded in order; when a later one is refused the earlier ones stay recorded,
        which over-counts and so errs on the safe side.
        """
        admitted, refused = [], []
        for client in clients:
            accepted = all(self.ledger.record(client_unit(client), round_index, p.mechanism, p.release,
                                              adjacency=p.adjacency, status=p.status, params=p.params).accepted
                           for p in self._planned(client, round_index))
            (admitted if accepted else refused).append(client)
        return admitted, refused

    # ----- central DP on the aggregate -----------------------------------------------------------
    def admit_round(self, round_index: int) -> bool:
        """Record the round's central-DP release on the user-level unit (False: over budget)."""
        if self.config.privacy.central is None:
            return True
        event = central_dp_event(self.central_sigma, self.config.sample_rate())
        return self.ledger.record(SERVER_USER_UNIT, round_index, "central_dp", event, adjacency=ADD_REMOVE,
                                  params={"noise_multiplier": self.central_sigma,
                                          "sample_rate": self.config.sample_rate()}).accepted

    def release_mean(self, round_index: int, preset: str, total: dict[str, np.ndarray],
                     weight: float) -> dict[str, np.ndarray] | None:
        """The mean update to apply: plain Σ/weight, or under central DP the noised Σ over q·N."""
        central = self.config.privacy.central
        if central is None:
            return mean_of(total, weight)
        rng = numpy_stream(self.config.seed, SERVER, round_index, f"central-noise/{preset}")
        expected = self.config.sample_rate() * self.config.clients.num
        noised = central_dp_average({k: v.astype(np.float64) for k, v in total.items()}, self.central_sigma,
                                    central.clip_norm, expected, rng)
        return {k: v.astype(np.float32) for k, v in noised.items()}

    # ----- reporting -----------------------------------------------------------------------------
    def row_fields(self, round_index: int) -> dict[str, Any]:
        """Epsilon spent so far (PLD headline, RDP cross-check) and this round's refusals."""
        if not self.active:
            return {}
        summary = self.ledger.summary()
        headline = summary["client_eps"] or {}  # the smaller valid bound of PLD and RDP, per unit
        return {
            "eps_client_max": headline.get("max"), "eps_client_median": headline.get("median"),
            "eps_client_max_pld": (summary["client_eps_pld"] or {}).get("max"),
            "eps_client_max_rdp": (summary["client_eps_rdp"] or {}).get("max"),
            "eps_server": summary["server_eps_pld"], "eps_server_rdp": summary["server_eps_rdp"],
            "privacy_refused": sum(row.refused for row in self.ledger.rows() if row.round == round_index),
            "delta": summary["delta"],
            "dp_sgd_sigma_max": max(self._sigma_by_rate.values(), default=self.config.privacy.dp_sgd.noise_multiplier)
            if self.config.privacy.dp_sgd is not None else None,
        }
