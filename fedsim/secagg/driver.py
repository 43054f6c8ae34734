"""Run every stage of one aggregation in this process (tests, benchmarks, small runs)."""
from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np

from fedsim.rng import stream_seed
from fedsim.secagg.client import SecAggClient
from fedsim.secagg.config import SecAggConfig
from fedsim.secagg.cost import Dropouts, cost_aggregate
from fedsim.secagg.encoding import AggregateResult, capped_weight, encode_update
from fedsim.secagg.errors import TensorSpecError
from fedsim.secagg.messages import SecAggMessage
from fedsim.secagg.server import SecAggServer
from fedsim.secagg.spec import TensorSpec

QUANTIZATION_PURPOSE = "secagg-quantize"
"""Purpose of each client's stochastic-rounding stream (fedsim.rng.stream_seed)."""


def run_secure_aggregation(updates: Mapping[Hashable, Mapping[str, np.ndarray]], weights: Mapping[Hashable, int],
                           config: SecAggConfig, round_index: int, drop_after_masking: frozenset = frozenset(),
                           seed: int = 0, *, drop_before_shares: frozenset = frozenset(),
                           drop_before_unmask: frozenset = frozenset()) -> tuple[AggregateResult, list[SecAggMessage]]:
    """Aggregate {client: {name: array}} with integer weights in config.mode; return the result and
    every message sent (empty in "off" mode). Client k rounds with the stream
    fedsim.rng.stream_seed(seed, k, round_index, QUANTIZATION_PURPOSE), so "protocol" and "cost"
    give the same aggregate bit for bit.

    drop_after_masking: clients whose peers masked against them but whose masked input never
    arrives (left out of the sum, their masks are removed from the survivors' shares).
    drop_before_shares: clients that only advertised keys. drop_before_unmask: clients whose
    masked input arrived but that send no unmasking shares (still in the sum).
    """
    client_ids = list(updates)
    if set(weights) != set(client_ids):
        raise TensorSpecError(f"weights are given for {sorted(weights, key=str)}, updates for "
                              f"{sorted(client_ids, key=str)}")
    if not client_ids:
        raise TensorSpecError("secure aggregation needs at least one client update")
    spec = TensorSpec.from_update(updates[client_ids[0]])
    dropouts = Dropouts(frozenset(drop_before_shares), frozenset(drop_after_masking), frozenset(drop_before_unmask))
    dropouts.check(updates)
    if config.mode == "off":
        return _plaintext_sum(updates, weights, config, spec, dropouts), []
    if config.mode == "cost":
        absent = dropouts.before_shares | dropouts.before_input
        encoded = {client: encode_update(updates[client], weights[client], spec, config,
                                         np.random.default_rng(stream_seed(seed, client, round_index,
                                                                           QUANTIZATION_PURPOSE)),
                                         f"client {client!r}")
                   for client in client_ids if client not in absent}
        return cost_aggregate(encoded, client_ids, spec, config, round_index, dropouts)
    return _run_protocol(updates, weights, config, round_index, spec, dropouts, seed)


def _run_protocol(updates, weights, config: SecAggConfig, round_index: int, spec: TensorSpec, dropouts: Dropouts,
                  seed: int) -> tuple[AggregateResult, list[SecAggMessage]]:
    client_ids = list(updates)
    server = SecAggServer(config, round_index, client_ids, spec)
    dropouts.stage_sets(server.cohort)
    clients = {client: SecAggClient(client, round_index, spec, config,
                                    stream_seed(seed, client, round_index, QUANTIZATION_PURPOSE))
               for client in client_ids}
    log: list[SecAggMessage] = []

    def deliver_up(message: SecAggMessage, receive) -> None:
        log.append(message)
        receive(message)

    for client in client_ids:
        deliver_up(clients[client].advertise_keys(), server.receive_keys)
    peer_keys = server.broadcast_keys()
    log.extend(peer_keys)
    for message in peer_keys:
        if message.receiver not in dropouts.before_shares:
            deliver_up(clients[message.receiver].share_keys(message), server.receive_shares)
    forwarded = server.forward_shares()
    log.extend(forwarded)
    for message in forwarded:
        if message.receiver not in dropouts.before_input:
            client = message.receiver
            deliver_up(clients[client].masked_input(updates[client], weights[client], message),
                       server.receive_masked_input)
    requests = server.request_unmask()
    log.extend(requests)
    for message in requests:
        if message.receiver not in dropouts.before_unmask:
            deliver_up(clients[message.receiver].unmask(message), server.receive_unmask)
    return server.finish(), log


def _plaintext_sum(updates, weights, config: SecAggConfig, spec: TensorSpec, dropouts: Dropouts) -> AggregateResult:
    absent = dropouts.before_shares | dropouts.before_input
    survivors = tuple(client for client in updates if client not in absent)
    weighted_sum = {name: np.zeros(shape, dtype=np.float64) for name, shape in zip(spec.names, spec.shapes)}
    total_weight = 0
    for client in survivors:
        spec.check(updates[client], f"client {client!r}")
        weight = capped_weight(weights[client], config, f"client {client!r}")
        total_weight += weight
        for name in spec.names:
            weighted_sum[name] += weight * np.asarray(updates[client][name], dtype=np.float64)
    dropped = tuple(client for client in updates if client in absent)
    return AggregateResult(weighted_sum, total_weight, survivors, dropped, 0, len(survivors) * spec.total, "off")
