"""Fixed-point quantisation with clipping and unbiased stochastic rounding."""
from __future__ import annotations

import numpy as np


def quantize(values: np.ndarray, clip: float, levels: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Map values to {0..levels-1} (uint64); return them and how many coordinates were clipped.

    q = SR((clip(x, -c, c) + c) * (levels - 1) / (2c)), SR = stochastic rounding, so E[q] is exact
    for |x| <= c and the rounding error is below one step 2c / (levels - 1).
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    clipped = int(np.count_nonzero(np.abs(x) > clip))
    scaled = (np.clip(x, -clip, clip) + clip) * ((levels - 1) / (2.0 * clip))
    floor = np.floor(scaled)
    rounded = floor + (rng.random(x.size) < (scaled - floor))
    return np.minimum(rounded, levels - 1).astype(np.uint64), clipped


def step(clip: float, levels: int) -> float:
    """The value of one quantisation level, 2c / (levels - 1)."""
    return 2.0 * clip / (levels - 1)


def dequantize_sum(level_sum: np.ndarray, total_weight: int, clip: float, levels: int) -> np.ndarray:
    """Turn S = sum_k w_k q_k back into sum_k w_k x_k (float64): S * step - c * W."""
    return level_sum.astype(np.float64) * step(clip, levels) - clip * float(total_weight)
