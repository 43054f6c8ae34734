"""Random streams keyed by (seed, client, round, purpose).

Every random draw of a run comes from such a stream, so results do not depend on how many workers
there are or in which order a worker serves its clients.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from fedsim.comm import SERVER


def stream_seed(seed: int, client: int, round_index: int, purpose: str) -> int:
    """A 63-bit seed derived from the key with SHA-256 (stable across processes and Python versions)."""
    key = f"{seed}/{client}/{round_index}/{purpose}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


def numpy_stream(seed: int, client: int, round_index: int, purpose: str) -> np.random.Generator:
    """A numpy Generator for one keyed stream."""
    return np.random.default_rng(stream_seed(seed, client, round_index, purpose))


def torch_stream(seed: int, client: int, round_index: int, purpose: str) -> torch.Generator:
    """A CPU torch Generator for one keyed stream."""
    generator = torch.Generator()
    generator.manual_seed(stream_seed(seed, client, round_index, purpose))
    return generator


def seed_torch_global(seed: int, client: int, round_index: int, purpose: str) -> None:
    """Seed torch's global generator (used by dropout) from a keyed stream."""
    torch.manual_seed(stream_seed(seed, client, round_index, purpose))


def base_seed(seed: int, name: str) -> int:
    """The seed a preset's random base weights are built from: the same on every worker and the server trainer."""
    return stream_seed(seed, SERVER, 0, f"base/{name}")
