"""Split a data set over clients, and draw per-client data profiles for the built-in task.

The partitioners return one index array per client; every index 0..n-1 appears in exactly one
client and no client is empty (asking for more clients than items is an error). For the
built-in generator, whose client data are generated lazily, `client_domain_weights` and
`client_sizes` draw each client's domain mixture and data size instead.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

from fedsim.data.task import DOMAINS


def partition_iid(n_items: int, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle the items and deal them into `num_clients` parts whose sizes differ by at most 1."""
    _check_counts(n_items, num_clients)
    return [np.sort(part) for part in np.array_split(rng.permutation(n_items), num_clients)]


def partition_quantity_skew(
    n_items: int, num_clients: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Random parts with sizes 1 + Multinomial(n - K, Dirichlet(alpha)): small alpha = very unequal."""
    _check_counts(n_items, num_clients)
    _check_alpha(alpha)
    return _split_by_sizes(rng.permutation(n_items), _skewed_sizes(n_items, num_clients, alpha, rng))


def partition_dirichlet(
    domains: Sequence[str], num_clients: int, alpha: float, rng: np.random.Generator,
    size_skew: float | None = None,
) -> list[np.ndarray]:
    """Domain-skewed parts: each client draws a domain mixture from Dirichlet(alpha · D · global
    domain frequencies), then fills its slots by sampling domains from that mixture among the
    items still unassigned. Large alpha ≈ IID; small alpha gives each client few domains. Parts
    have equal sizes (±1), or, with `size_skew`, the sizes of `partition_quantity_skew`.
    """
    n_items = len(domains)
    _check_counts(n_items, num_clients)
    _check_alpha(alpha)
    if size_skew is None:
        sizes = np.array([len(part) for part in np.array_split(np.arange(n_items), num_clients)])
    else:
        _check_alpha(size_skew)
        sizes = _skewed_sizes(n_items, num_clients, size_skew, rng)
    domain_names, domain_of_item = np.unique(np.asarray(domains, dtype=object), return_inverse=True)
    pools = [list(rng.permutation(np.flatnonzero(domain_of_item == d))) for d in range(len(domain_names))]
    remaining = np.array([len(pool) for pool in pools], dtype=float)
    concentration = alpha * len(domain_names) * remaining / n_items
    mixtures = np.stack([_dirichlet(rng, concentration) for _ in range(num_clients)])
    slot_owners = rng.permutation(np.repeat(np.arange(num_clients), sizes))
    parts: list[list[int]] = [[] for _ in range(num_clients)]
    for client in slot_owners:
        available = remaining > 0
        weights = mixtures[client] * available
        if weights.sum() <= 0:
            weights = remaining  # the client's domains are used up: take what is left
        domain = int(rng.choice(len(pools), p=weights / weights.sum()))
        parts[client].append(int(pools[domain].pop()))
        remaining[domain] -= 1
    return [np.sort(np.array(part, dtype=np.int64)) for part in parts]


def client_domain_weights(num_clients: int, alpha: float | None, rng: np.random.Generator) -> np.ndarray:
    """Per-client domain mixtures [num_clients, len(DOMAINS)]: Dirichlet(alpha) rows, or
    uniform rows when alpha is None (IID)."""
    _check_num_clients(num_clients)
    if alpha is None:
        return np.full((num_clients, len(DOMAINS)), 1.0 / len(DOMAINS))
    _check_alpha(alpha)
    return np.stack([_dirichlet(rng, np.full(len(DOMAINS), alpha)) for _ in range(num_clients)])


def client_sizes(
    num_clients: int,
    mean_size: int,
    skew_alpha: float | None,
    rng: np.random.Generator,
    min_size: int = 1,
) -> np.ndarray:
    """Per-client data sizes summing to num_clients · mean_size, each >= min_size: all equal
    when skew_alpha is None, else min_size + Multinomial(rest, Dirichlet(skew_alpha))."""
    _check_num_clients(num_clients)
    if min_size < 0 or mean_size < min_size or mean_size < 1:
        raise ValueError(f"need mean_size >= max(1, min_size) and min_size >= 0, got "
                         f"mean_size={mean_size}, min_size={min_size}")
    if skew_alpha is None:
        return np.full(num_clients, mean_size, dtype=np.int64)
    _check_alpha(skew_alpha)
    spare = num_clients * (mean_size - min_size)
    proportions = _dirichlet(rng, np.full(num_clients, skew_alpha))
    return (min_size + rng.multinomial(spare, proportions)).astype(np.int64)


def _dirichlet(rng: np.random.Generator, concentration: np.ndarray) -> np.ndarray:
    """A Dirichlet draw that stays a valid distribution even for tiny concentrations."""
    draw = rng.dirichlet(concentration)
    if not np.all(np.isfinite(draw)) or draw.sum() <= 0:
        draw = np.zeros(len(concentration))
        draw[int(rng.choice(len(concentration), p=concentration / concentration.sum()))] = 1.0
    return draw / draw.sum()


def _skewed_sizes(n_items: int, num_clients: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """1 + Multinomial(n - K, Dirichlet(alpha)): K sizes summing to n, none empty."""
    return 1 + rng.multinomial(n_items - num_clients, _dirichlet(rng, np.full(num_clients, alpha)))


def _split_by_sizes(order: np.ndarray, sizes: np.ndarray) -> list[np.ndarray]:
    return [np.sort(part) for part in np.split(order, np.cumsum(sizes)[:-1])]


def _check_num_clients(num_clients: int) -> None:
    if isinstance(num_clients, bool) or not isinstance(num_clients, (int, np.integer)) or num_clients < 1:
        raise ValueError(f"num_clients must be a positive integer, got {num_clients!r}")


def _check_counts(n_items: int, num_clients: int) -> None:
    _check_num_clients(num_clients)
    if n_items < num_clients:
        raise ValueError(
            f"cannot give each of {num_clients} clients at least one item: only {n_items} items"
        )


def _check_alpha(alpha: float) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
