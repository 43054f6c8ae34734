"""Complete and sparse (SecAgg+ style) neighbour graphs."""
import math

import pytest

from fedsim.secagg.errors import SecAggConfigError
from fedsim.secagg.graph import neighbour_graph, resolve_degree


def _connected(graph) -> bool:
    seen, frontier = {0}, [0]
    while frontier:
        for v in graph[frontier.pop()]:
            if v not in seen:
                seen.add(v)
                frontier.append(v)
    return len(seen) == len(graph)


def test_complete_graph():
    graph = neighbour_graph(5, None, seed=0, round_index=0)
    assert graph == [frozenset(range(5)) - {i} for i in range(5)]


@pytest.mark.parametrize("n", [16, 64, 256, 1000])
def test_log_degree_graph_is_regular_symmetric_and_connected(n):
    graph = neighbour_graph(n, "log", seed=3, round_index=1)
    degree = 2 * math.ceil(math.log2(n))
    assert all(len(peers) == degree for peers in graph)
    assert all(u in graph[v] and u != v for u in range(n) for v in graph[u])
    assert _connected(graph)


def test_graph_is_seeded_per_round():
    assert neighbour_graph(50, 6, seed=1, round_index=2) == neighbour_graph(50, 6, seed=1, round_index=2)
    assert neighbour_graph(50, 6, seed=1, round_index=2) != neighbour_graph(50, 6, seed=1, round_index=3)
    assert neighbour_graph(50, 6, seed=1, round_index=2) != neighbour_graph(50, 6, seed=2, round_index=2)


def test_degree_resolution():
    assert resolve_degree(None, 10) == 9
    assert resolve_degree(5, 100) == 6
    assert resolve_degree(20, 10) == 9
    assert resolve_degree("log", 100) == 14
    with pytest.raises(SecAggConfigError):
        resolve_degree(0, 10)
    with pytest.raises(SecAggConfigError):
        neighbour_graph(0, None, 0, 0)
