"""The aggregation pipeline: the layers a summed update passes through, client side and server side.

Client side (on the worker, after the algorithm's client step), in order:
  central-DP clipping: the summed update is clipped to the central-DP norm and weighs 1;
  secure aggregation: the update stays on the worker, and only what the protocol lets leave goes.
Server side (on the coordinator), per preset:
  summation: Σ w_k Δ_k and Σ w_k, in plaintext or through secure aggregation (protocol or cost mode);
  release: the mean, or under central DP the noised sum over the expected cohort (PrivacyGate);
  the algorithm's `apply_mean` turns the mean into the new global payload.
Algorithms without a summed kind aggregate their outcomes themselves (`Algorithm.aggregate`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fedsim.algorithms.base import Algorithm, ClientOutcome
from fedsim.algorithms.fedavg import weighted_sum
from fedsim.comm import Message
from fedsim.config import ExperimentConfig
from fedsim.engine.privacy_gate import PrivacyGate
from fedsim.engine.secure_sum import (ClientSide, SecAggAbort, StageCall, dropped_after_masking, run_cost,
                                      run_protocol, secagg_config)
from fedsim.privacy.central import clip_update
from fedsim.secagg import Dropouts, SecAggConfig, TensorSpec


def secure_aggregation(config: ExperimentConfig, algorithm: Algorithm) -> SecAggConfig | None:
    """The secure-aggregation settings when they apply: switched on, and the algorithm sums updates."""
    if config.secagg.mode == "off" or algorithm.summed_kind is None:
        return None
    return secagg_config(config.secagg)


# ----- client side ---------------------------------------------------------------------------------
class ClientLayer(Protocol):
    """A step a client's outcome passes through before it leaves the worker."""

    def process(self, round_index: int, outcome: ClientOutcome) -> None: ...


class CentralDPClip:
    """Clip the summed update to the central-DP norm and give it weight 1 (sensitivity C)."""

    def __init__(self, kind: str, clip_norm: float) -> None:
        self.kind = kind
        self.clip_norm = clip_norm

    def process(self, round_index: int, outcome: ClientOutcome) -> None:
        outcome.messages = [Message(m.kind, m.sender, m.receiver, clip_update(m.payload, self.clip_norm)[0])
                            if m.kind == self.kind else m for m in outcome.messages]
        outcome.num_samples = 1


class SecureAggregationClient:
    """Keep the summed update on the worker; the outcome carries what the protocol lets leave."""

    def __init__(self, kind: str, config: SecAggConfig, seed: int) -> None:
        self.kind = kind
        self.config = config
        self.seed = seed
        self.side = ClientSide()

    def process(self, round_index: int, outcome: ClientOutcome) -> None:
        update = next(m.payload for m in outcome.messages if m.kind == self.kind)
        outcome.messages = [m for m in outcome.messages if m.kind != self.kind]
        outcome.secagg = self.side.hold(outcome.client, round_index, update, outcome.num_samples, self.config,
                                        self.seed)


def client_layers(config: ExperimentConfig, algorithm: Algorithm) -> list[ClientLayer]:
    """The client-side layers of the experiment, in the order an outcome passes through them."""
    kind = algorithm.summed_kind
    if kind is None:
        return []
    layers: list[ClientLayer] = []
    if config.privacy.central is not None:
        layers.append(CentralDPClip(kind, config.privacy.central.clip_norm))
    secure = secure_aggregation(config, algorithm)
    if secure is not None:
        layers.append(SecureAggregationClient(kind, secure, config.seed))
    return layers


# ----- server side ---------------------------------------------------------------------------------
@dataclass
class Aggregated:
    """What aggregation produced: the new global payloads and who fell out on the way."""

    globals: dict[str, Any]
    dropped: set[int] = field(default_factory=set)
    aborted: list[str] = field(default_factory=list)


class AggregationPipeline:
    """Turns a round's outcomes into new global payloads, preset by preset."""

    def __init__(self, config: ExperimentConfig, algorithm: Algorithm, privacy: PrivacyGate,
                 stage: StageCall) -> None:
        self.config = config
        self.algorithm = algorithm
        self.privacy = privacy
        self.stage = stage  # reaches the clients' workers for the protocol's stages
        self.secagg = secure_aggregation(config, algorithm)

    def run(self, round_index: int, globals_by_preset: dict[str, Any], presets: dict[int, str],
            outcomes: list[ClientOutcome], messages: list[Message]) -> Aggregated:
        """Aggregate each preset's outcomes; secure aggregation's messages are appended to `messages`."""
        result = Aggregated(dict(globals_by_preset))
        by_preset: dict[str, list[ClientOutcome]] = {}
        for outcome in outcomes:
            by_preset.setdefault(presets[outcome.client], []).append(outcome)
        for preset, group in sorted(by_preset.items()):
            current = globals_by_preset[preset]
            if self.algorithm.summed_kind is None:
                result.globals[preset] = self.algorithm.aggregate(preset, current, group)
                continue
            try:
                total, weight, lost = self._sum(round_index, current, group, messages)
            except SecAggAbort:
                result.aborted.append(preset)  # the previous global state stays
                result.dropped.update(outcome.client for outcome in group)
                continue
            result.dropped.update(lost)
            mean = self.privacy.release_mean(round_index, preset, total, weight)
            result.globals[preset] = self.algorithm.apply_mean(preset, current, mean)
        return result

    def _sum(self, round_index: int, current: dict[str, np.ndarray], group: list[ClientOutcome],
             messages: list[Message]) -> tuple[dict[str, np.ndarray], int, frozenset[int]]:
        """(Σ w_k Δ_k, Σ w_k, dropped clients), through secure aggregation when it is on."""
        if self.secagg is None:
            total, weight = weighted_sum(group, self.algorithm.summed_kind)
            return total, weight, frozenset()
        spec = TensorSpec.from_update(current)
        handed = {outcome.client: outcome.secagg for outcome in group}
        dropped = dropped_after_masking(sorted(handed), self.config.secagg.dropout_rate, self.config.seed,
                                        round_index)
        dropouts = Dropouts(before_input=dropped)
        if self.secagg.mode == "protocol":
            summed = run_protocol(self.secagg, round_index, spec, handed, dropouts, self.stage, messages)
        else:
            summed = run_cost(self.secagg, round_index, spec, handed, dropouts, messages)
        return summed.weighted_sum, summed.total_weight, dropped
