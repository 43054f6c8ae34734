"""Masks: a ChaCha20 keystream read as unsigned integers (uniform mod 2^32 or 2^64)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

SEED_BYTES = 32


def expand(seed: bytes, length: int, dtype: np.dtype) -> np.ndarray:
    """`length` pseudo-random integers of `dtype` (uint32 or uint64) from a 32-byte seed (read-only)."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"PRG seeds are {SEED_BYTES} bytes, got {len(seed)}")
    dtype = np.dtype(dtype)
    encryptor = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor()
    stream = encryptor.update(_zeros(length * dtype.itemsize))
    return np.frombuffer(stream, dtype=dtype)


@lru_cache(maxsize=4)
def _zeros(n_bytes: int) -> bytes:
    """A reusable zero buffer for the keystream (encrypting zeros yields the keystream)."""
    return bytes(n_bytes)
