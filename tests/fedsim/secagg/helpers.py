"""Small random cohorts shared by the secure-aggregation tests."""
from __future__ import annotations

import numpy as np


def make_updates(n_clients: int, seed: int = 0, scale: float = 0.3) -> tuple[dict, dict]:
    """{client: {name: array}} with two tensors, and integer weights in 1..50."""
    rng = np.random.default_rng(seed)
    updates = {f"client-{i}": {"lora.A": rng.normal(0.0, scale, (3, 4)).astype(np.float32),
                               "lora.B": rng.normal(0.0, scale, (5,)).astype(np.float32)}
               for i in range(n_clients)}
    weights = {client: int(rng.integers(1, 51)) for client in updates}
    return updates, weights


def plain_weighted_sum(updates: dict, weights: dict, clients) -> dict[str, np.ndarray]:
    """sum_k w_k x_k in float64 over `clients`."""
    names = next(iter(updates.values())).keys()
    return {name: sum(weights[c] * updates[c][name].astype(np.float64) for c in clients) for name in names}


def encoded_sum(updates: dict, weights: dict, clients, config, round_index: int, seed: int = 0) -> np.ndarray:
    """The plaintext integer sum of the clients' encoded vectors, with the streams the driver uses."""
    from fedsim.rng import stream_seed
    from fedsim.secagg.driver import QUANTIZATION_PURPOSE
    from fedsim.secagg.encoding import META_LENGTH, encode_update
    from fedsim.secagg.spec import TensorSpec

    spec = TensorSpec.from_update(next(iter(updates.values())))
    total = np.zeros(spec.total + META_LENGTH, dtype=config.dtype)
    for client in clients:
        rng = np.random.default_rng(stream_seed(seed, client, round_index, QUANTIZATION_PURPOSE))
        total += encode_update(updates[client], weights[client], spec, config, rng, client)
    return total
