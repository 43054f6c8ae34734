"""Who shares keys and masks with whom: the complete graph, or a sparse SecAgg+ style graph."""
from __future__ import annotations

import math

import numpy as np

from fedsim.secagg.errors import SecAggConfigError

GRAPH_STREAM = 0x5EC46
"""Purpose tag of the random stream that places clients on the ring."""


def resolve_degree(neighbours: int | str | None, n_clients: int) -> int:
    """Number of neighbours per client: n-1 for None, 2*ceil(log2 n) for "log", else the int rounded up
    to even (the ring graph is 2h-regular); never more than n-1."""
    if neighbours is None:
        wanted = n_clients - 1
    elif neighbours == "log":
        wanted = 2 * math.ceil(math.log2(max(n_clients, 2)))
    elif isinstance(neighbours, int) and not isinstance(neighbours, bool) and neighbours >= 1:
        wanted = neighbours + neighbours % 2
    else:
        raise SecAggConfigError(f"secagg.neighbours must be None, 'log' or an int >= 1, got {neighbours!r}")
    return min(wanted, n_clients - 1)


def neighbour_graph(n_clients: int, neighbours: int | str | None, seed: int, round_index: int) -> list[frozenset[int]]:
    """Neighbours of each client index 0..n-1.

    Sparse graphs are Harary-like: clients sit on a ring in a random order drawn from (seed, round)
    and each is joined to the h nearest on either side, so every degree is 2h and the graph stays
    2h-connected. When 2h >= n - 1 this is the complete graph.
    """
    if n_clients < 1:
        raise SecAggConfigError(f"secure aggregation needs at least one client, got {n_clients}")
    degree = resolve_degree(neighbours, n_clients)
    if degree >= n_clients - 1:
        everyone = frozenset(range(n_clients))
        return [everyone - {i} for i in range(n_clients)]
    order = np.random.default_rng([seed, round_index, GRAPH_STREAM]).permutation(n_clients)
    half = degree // 2
    graph = []
    position = np.empty(n_clients, dtype=np.int64)
    position[order] = np.arange(n_clients)
    for client in range(n_clients):
        p = int(position[client])
        graph.append(frozenset(int(order[(p + offset) % n_clients])
                               for offset in range(-half, half + 1) if offset != 0))
    return graph
