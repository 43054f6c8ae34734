"""Cost mode: no cryptography and a plaintext sum, but the protocol's exact messages and sizes."""
from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedsim.comm import SERVER
from fedsim.secagg import sizes
from fedsim.secagg.cohort import SecAggCohort
from fedsim.secagg.config import SecAggConfig
from fedsim.secagg.encoding import META_LENGTH, AggregateResult, decode_sum
from fedsim.secagg.errors import SecAggProtocolError
from fedsim.secagg.messages import KEYS, MASKED_INPUT, SHARES, UNMASK, CostMessage
from fedsim.secagg.spec import TensorSpec


@dataclass(frozen=True)
class Dropouts:
    """Clients that stop at some stage (ids). before_shares: sent keys only. before_input: sent
    shares, so peers masked against it, but its masked input never arrives (left out of the sum).
    before_unmask: its masked input arrived (in the sum) but it sends no unmasking shares."""

    before_shares: frozenset = frozenset()
    before_input: frozenset = frozenset()
    before_unmask: frozenset = frozenset()

    def check(self, client_ids: Collection[Hashable]) -> None:
        """Raise if a dropout names a client outside the cohort or one client twice."""
        groups = {"before_shares": self.before_shares, "before_input": self.before_input,
                  "before_unmask": self.before_unmask}
        for name, group in groups.items():
            unknown = [client for client in group if client not in client_ids]
            if unknown:
                raise SecAggProtocolError(f"dropouts.{name} names clients outside the cohort: {unknown}")
        if len(set().union(*groups.values())) != sum(len(group) for group in groups.values()):
            raise SecAggProtocolError("a client can drop out at one stage only")

    def stage_sets(self, cohort: SecAggCohort) -> tuple[frozenset[int], ...]:
        """(U1, U2, U3, U5) as index sets."""
        self.check(cohort.index)
        advertised = frozenset(range(len(cohort)))
        shared = advertised - {cohort.index[c] for c in self.before_shares}
        masked = shared - {cohort.index[c] for c in self.before_input}
        responded = masked - {cohort.index[c] for c in self.before_unmask}
        return advertised, shared, masked, responded


def cost_messages(cohort: SecAggCohort, spec: TensorSpec, config: SecAggConfig, round_index: int,
                  dropouts: Dropouts) -> list[CostMessage]:
    """Every message the protocol sends for this cohort and these dropouts, with its exact size,
    in protocol order. Raises SecAggAbort where the protocol would."""
    advertised, shared, masked, responded = dropouts.stage_sets(cohort)
    ids, graph = cohort.ids, cohort.graph
    out = []

    def send(kind: str, stage: int, sender: Hashable, receiver: Hashable, size: int) -> None:
        out.append(CostMessage(sender, receiver, round_index, kind, stage, size))

    for u in sorted(advertised):
        send(KEYS, 0, ids[u], SERVER, sizes.public_keys_size())
    for u in sorted(advertised):
        send(KEYS, 0, SERVER, ids[u], sizes.peer_keys_size(len(graph[u] & advertised)))
    for u in sorted(shared):
        send(SHARES, 1, ids[u], SERVER, sizes.encrypted_shares_size(len(graph[u] & advertised)))
    for v in sorted(shared):
        send(SHARES, 1, SERVER, ids[v], sizes.encrypted_shares_size(len(graph[v] & shared)))
    for u in sorted(masked):
        send(MASKED_INPUT, 2, ids[u], SERVER, sizes.masked_input_size(spec.total, config.modulus_bits))
    cohort.check_recoverable(advertised, shared, masked, masked, "masked input")
    for u in sorted(masked):
        send(UNMASK, 3, SERVER, ids[u], sizes.unmask_request_size(len(graph[u] & masked)))
    for u in sorted(responded):
        send(UNMASK, 3, ids[u], SERVER, sizes.unmask_shares_size(len(graph[u] & shared) + 1))
    cohort.check_recoverable(advertised, shared, masked, responded, "unmasking")
    return out


def cost_aggregate(encoded: Mapping[Hashable, np.ndarray], client_ids: Sequence[Hashable],
                   tensor_spec: TensorSpec | Mapping[str, Sequence[int]], config: SecAggConfig, round_index: int,
                   dropouts: Dropouts = Dropouts()) -> tuple[AggregateResult, list[CostMessage]]:
    """Sum the encoded (quantised, weighted, unmasked) vectors of the clients whose input arrived,
    and list the messages the protocol would have sent. `encoded` holds encode_update outputs."""
    spec = TensorSpec.of(tensor_spec)
    cohort = SecAggCohort(client_ids, config, round_index)
    config.check_capacity(len(cohort), spec.total)
    _, _, masked, _ = dropouts.stage_sets(cohort)
    survivors = tuple(cohort.ids[u] for u in sorted(masked))
    if set(encoded) != set(survivors):
        raise SecAggProtocolError(f"cost mode: encoded inputs from {sorted(encoded, key=str)}, but the clients "
                                  f"whose input arrives are {list(survivors)}")
    messages = cost_messages(cohort, spec, config, round_index, dropouts)
    total = np.zeros(spec.total + META_LENGTH, dtype=config.dtype)
    for client in survivors:
        vector = encoded[client]
        if vector.dtype != config.dtype or vector.shape != total.shape:
            raise SecAggProtocolError(f"cost mode: encoded input of {client!r} must be {config.dtype} "
                                      f"of length {total.size}, got {vector.dtype} {vector.shape}")
        total += vector
    weighted_sum, total_weight, clipped = decode_sum(total, spec, config)
    dropped = tuple(client for client in cohort.ids if client not in set(survivors))
    result = AggregateResult(weighted_sum, total_weight, survivors, dropped, clipped,
                             len(survivors) * spec.total, "cost")
    return result, messages
