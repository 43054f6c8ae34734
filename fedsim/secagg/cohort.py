"""The clients of one aggregation: ids, indices, graph, thresholds, and whether secrets are recoverable.

Clients are numbered 0..n-1 in the order the server was given; messages refer to peers by index.
Stage sets (indices): advertised = U1 (sent keys), shared = U2 (sent shares), masked = U3 (sent a
masked input), responded = U5 (sent unmasking shares).
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence

from fedsim.comm import SERVER
from fedsim.secagg.config import SecAggConfig
from fedsim.secagg.errors import SecAggAbort, SecAggConfigError
from fedsim.secagg.graph import neighbour_graph


class SecAggCohort:
    """Ids, indices and neighbour graph of the clients of one aggregation round."""

    def __init__(self, client_ids: Sequence[Hashable], config: SecAggConfig, round_index: int) -> None:
        self.ids = tuple(client_ids)
        if len(set(self.ids)) != len(self.ids):
            raise SecAggConfigError(f"client ids of one aggregation must be distinct, got {list(self.ids)}")
        if SERVER in self.ids:
            raise SecAggConfigError(f"client id {SERVER!r} is reserved for the server")
        self.index = {client_id: i for i, client_id in enumerate(self.ids)}
        self.config = config
        self.graph = neighbour_graph(len(self.ids), config.neighbours, config.graph_seed, round_index)
        for u, peers in enumerate(self.graph):
            if config.threshold_for(len(peers) + 1) > len(peers) + 1:
                raise SecAggConfigError(
                    f"secagg.threshold {config.threshold} exceeds the {len(peers) + 1} share holders "
                    f"of client {self.ids[u]!r} (degree {len(peers)} + itself)")

    def __len__(self) -> int:
        return len(self.ids)

    def share_count(self, u: int, advertised: frozenset[int]) -> int:
        """How many shares client u makes of each secret: its neighbours in U1 and itself."""
        return len(self.graph[u] & advertised) + 1

    def threshold(self, u: int, advertised: frozenset[int]) -> int:
        """Shamir threshold of client u's secrets."""
        return self.config.threshold_for(self.share_count(u, advertised))

    def holders(self, u: int, shared: frozenset[int]) -> frozenset[int]:
        """Clients holding a share of u's secrets: itself and its neighbours that got forwarded shares."""
        return (self.graph[u] & shared) | {u}

    def secrets_needed(self, shared: frozenset[int], masked: frozenset[int]) -> dict[int, str]:
        """Which secret of which client the server must rebuild: the self-mask seed of every
        client in U3, the mask key of every client in U2 \\ U3 that a client in U3 masked against."""
        needed = {u: "self-mask seed" for u in masked}
        for v in shared - masked:
            if self.graph[v] & masked:
                needed[v] = "mask key"
        return needed

    def check_recoverable(self, advertised: frozenset[int], shared: frozenset[int], masked: frozenset[int],
                          answering: frozenset[int], stage: str) -> None:
        """Raise SecAggAbort if some needed secret has fewer than t holders among `answering`."""
        if not masked:
            raise SecAggAbort(f"secure aggregation aborted at {stage}: no masked input arrived")
        for u, secret in sorted(self.secrets_needed(shared, masked).items()):
            alive = len(self.holders(u, shared) & answering)
            need = self.threshold(u, advertised)
            if alive < need:
                raise SecAggAbort(
                    f"secure aggregation aborted at {stage}: the {secret} of client {self.ids[u]!r} needs "
                    f"{need} shares but only {alive} of its share holders are left")
