"""Secure aggregation inside the engine: the coordinator plays the server, workers play the clients.

Protocol mode runs the four message rounds of Bonawitz et al. across the worker pool (one batched
call per worker per stage); the coordinator never receives a client's update, only public keys,
ciphertexts, masked vectors and shares. Cost mode sums the clients' quantised vectors in plaintext
and counts the messages the protocol would send, with their exact sizes. With one ClientSide as
`stage`, the same functions run a whole aggregation in one process.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedsim.comm import Message
from fedsim.config import SecAggSettings
from fedsim.rng import stream_seed
from fedsim.secagg import (AggregateResult, Dropouts, SecAggAbort, SecAggClient, SecAggConfig, SecAggMessage,
                           SecAggServer, TensorSpec, cost_aggregate, encode_update)

StageCall = Callable[[str, dict[int, Any]], dict[int, Any]]
QUANTIZATION_PURPOSE = "secagg-quantize"
"""Purpose of each client's stochastic-rounding stream (fedsim.rng.stream_seed)."""


def secagg_config(settings: SecAggSettings) -> SecAggConfig:
    """The fedsim.secagg configuration for the experiment's settings."""
    return SecAggConfig(clip_range=settings.clip_range, quant_bits=settings.quant_bits,
                        modulus_bits=settings.modulus_bits, threshold=settings.threshold,
                        neighbours=settings.neighbours, max_weight=settings.max_weight, mode=settings.mode)


def quantization_rng(seed: int, client: int, round_index: int) -> np.random.Generator:
    """The client's stochastic-rounding stream (the same in protocol and cost mode)."""
    return np.random.default_rng(stream_seed(seed, client, round_index, QUANTIZATION_PURPOSE))


@dataclass
class ClientSide:
    """What one worker holds for its clients during a round's secure aggregation."""

    updates: dict[int, tuple[dict[str, np.ndarray], int]] = field(default_factory=dict)
    clients: dict[int, SecAggClient] = field(default_factory=dict)

    def hold(self, client: int, round_index: int, update: dict[str, np.ndarray], weight: int,
             config: SecAggConfig, seed: int) -> Any:
        """Keep a client's update on the worker; return what leaves it (public keys, or the encoded vector)."""
        spec = TensorSpec.from_update(update)
        if config.mode == "cost":
            return encode_update(update, weight, spec, config, quantization_rng(seed, client, round_index),
                                 f"client {client}")
        self.updates[client] = (update, weight)
        self.clients[client] = SecAggClient(client, round_index, spec, config,
                                            stream_seed(seed, client, round_index, QUANTIZATION_PURPOSE))
        return self.clients[client].advertise_keys()

    def stage(self, name: str, inbox: dict[int, Any]) -> dict[int, Any]:
        """Answer one protocol stage for the listed clients."""
        if name == "share":
            return {c: self.clients[c].share_keys(m) for c, m in inbox.items()}
        if name == "mask":
            return {c: self.clients[c].masked_input(*self.updates.pop(c), m) for c, m in inbox.items()}
        if name == "unmask":
            return {c: self.clients.pop(c).unmask(m) for c, m in inbox.items()}
        raise ValueError(f"unknown secure aggregation stage {name!r}")

    def clear(self) -> None:
        self.updates.clear()
        self.clients.clear()


def dropped_after_masking(clients: list[int], rate: float, seed: int, round_index: int) -> frozenset[int]:
    """Clients whose masked input never arrives this round (each its own keyed draw)."""
    return frozenset(c for c in clients if stream_seed(seed, c, round_index, "secagg-drop") / float(1 << 63) < rate)


def _wrap(envelopes: list[SecAggMessage]) -> list[Message]:
    return [Message(e.kind, e.sender, e.receiver, e) for e in envelopes]


def run_protocol(config: SecAggConfig, round_index: int, spec: TensorSpec, keys: dict[int, Any],
                 dropouts: Dropouts, stage: StageCall, sent: list[Message]) -> AggregateResult:
    """Drive the server through the four rounds; `stage` reaches the clients on their workers.

    `keys` holds every cohort client's PublicKeys; a client in `dropouts` is not asked again from
    the stage it drops at. Every message is appended to `sent` as it goes, so an aborted
    aggregation still counts its bytes.
    """
    server = SecAggServer(config, round_index, sorted(keys), spec)
    dropouts.stage_sets(server.cohort)
    sent += _wrap([keys[c] for c in sorted(keys)])
    for c in sorted(keys):
        server.receive_keys(keys[c])
    peer_keys = server.broadcast_keys()
    shares = stage("share", {m.receiver: m for m in peer_keys if m.receiver not in dropouts.before_shares})
    sent += _wrap(peer_keys + [shares[c] for c in sorted(shares)])
    for c in sorted(shares):
        server.receive_shares(shares[c])
    forwarded = server.forward_shares()
    masked = stage("mask", {m.receiver: m for m in forwarded if m.receiver not in dropouts.before_input})
    sent += _wrap(forwarded + [masked[c] for c in sorted(masked)])
    for c in sorted(masked):
        server.receive_masked_input(masked[c])
    requests = server.request_unmask()
    replies = stage("unmask", {m.receiver: m for m in requests if m.receiver not in dropouts.before_unmask})
    sent += _wrap(requests + [replies[c] for c in sorted(replies)])
    for c in sorted(replies):
        server.receive_unmask(replies[c])
    return server.finish()


def run_cost(config: SecAggConfig, round_index: int, spec: TensorSpec, encoded: dict[int, np.ndarray],
             dropouts: Dropouts, sent: list[Message]) -> AggregateResult:
    """Plaintext sum of the quantised vectors that arrive; the protocol's messages are appended to `sent`."""
    absent = dropouts.before_shares | dropouts.before_input
    arrived = {c: v for c, v in encoded.items() if c not in absent}
    result, messages = cost_aggregate(arrived, sorted(encoded), spec, config, round_index, dropouts)
    sent += _wrap(messages)
    return result


__all__ = ["ClientSide", "QUANTIZATION_PURPOSE", "SecAggAbort", "dropped_after_masking", "quantization_rng",
           "run_cost", "run_protocol", "secagg_config"]
