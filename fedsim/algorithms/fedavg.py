"""Sample-weighted averaging of named update arrays, shared by the FedAvg family."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from fedsim.algorithms.base import ClientOutcome

Arrays = dict[str, np.ndarray]


def cast_for_wire(arrays: Arrays, dtype: str) -> Arrays:
    """The arrays as they travel (float32 or float16); the receiver sees exactly these values."""
    return {name: np.ascontiguousarray(value, dtype=dtype) for name, value in arrays.items()}


def weighted_sum(outcomes: list[ClientOutcome], kind: str) -> tuple[Arrays, int]:
    """(Σ n_k Δ_k in float64, Σ n_k) over the outcomes' `kind` messages, summed in client order."""
    updates = [(o.num_samples, m.payload) for o in sorted(outcomes, key=lambda o: o.client)
               for m in o.messages if m.kind == kind]
    if not updates:
        return {}, 0
    names = sorted(updates[0][1])
    for _, payload in updates:
        if sorted(payload) != names:
            raise ValueError(f"client updates disagree on tensor names: {sorted(payload)} vs {names}")
    total: Arrays = {}
    for name in names:
        acc = np.zeros(updates[0][1][name].shape, dtype=np.float64)
        for weight, payload in updates:
            if payload[name].shape != acc.shape:
                raise ValueError(f"update {name!r} has shape {payload[name].shape}, expected {acc.shape}")
            acc += weight * payload[name].astype(np.float64)
        total[name] = acc
    return total, sum(weight for weight, _ in updates)


def mean_of(total: Arrays, weight: float) -> Arrays | None:
    """Σ / weight as float32 (None when nobody reported)."""
    if weight <= 0:
        return None
    return {name: (value / weight).astype(np.float32) for name, value in total.items()}


def apply_update(global_arrays: Arrays, update: Arrays | None) -> Arrays:
    """θ + mean Δ (unchanged when no client reported)."""
    if update is None:
        return global_arrays
    return {name: (global_arrays[name] + update[name]).astype(np.float32) for name in global_arrays}
