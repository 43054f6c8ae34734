"""Seeds of the self-mask and of pairwise masks, bound to the round and the tensor set."""
from __future__ import annotations

import numpy as np

from fedsim.secagg.crypto import derive
from fedsim.secagg.prg import expand
from fedsim.secagg.spec import TensorSpec


def self_mask(seed: bytes, round_index: int, spec: TensorSpec, length: int, dtype: np.dtype) -> np.ndarray:
    """p_u = PRG(HKDF(b_u, round, tensor set))."""
    return expand(derive(seed, b"fedsim-secagg/self-mask", round_index, spec.digest()), length, dtype)


def pairwise_mask(agreed: bytes, round_index: int, spec: TensorSpec, length: int, dtype: np.dtype) -> np.ndarray:
    """PRG(HKDF(s_uv, round, tensor set)), s_uv = X25519(s_u^SK, s_v^PK) = X25519(s_v^SK, s_u^PK).

    One stream covers all tensors in the spec's flat order; each tensor's mask is its slice.
    """
    return expand(derive(agreed, b"fedsim-secagg/pair-mask", round_index, spec.digest()), length, dtype)


def apply_pairwise(total: np.ndarray, mask: np.ndarray, owner: int, peer: int) -> None:
    """Add gamma_{owner,peer} * mask in place: + if owner < peer, - otherwise (so pairs cancel)."""
    if owner < peer:
        total += mask
    else:
        total -= mask
