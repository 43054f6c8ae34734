"""Messages of the protocol. Each has a kind, a stage, a sender and a receiver (client id or
fedsim.comm.SERVER), and nbytes() measured on its real payload (byte strings, arrays, peer
indices), so fedsim.comm.payload_nbytes counts it when it travels as a comm.Message payload."""
from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from fedsim.comm import SERVER
from fedsim.secagg.sizes import INDEX_BYTES

KEYS = "secagg_keys"
SHARES = "secagg_shares"
MASKED_INPUT = "secagg_masked_input"
UNMASK = "secagg_unmask"
KINDS = (KEYS, SHARES, MASKED_INPUT, UNMASK)


@dataclass(frozen=True, eq=False)
class Envelope:
    """Routing fields common to every message; subclasses add `kind`, `stage` and a payload."""

    sender: Hashable
    receiver: Hashable
    round: int

    @property
    def direction(self) -> str:
        """"up" (client to server) or "down"."""
        return "up" if self.receiver == SERVER else "down"

    def nbytes(self) -> int:
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class PublicKeys(Envelope):
    """Stage 0, up: the client's public keys for encryption (c_u^PK) and masking (s_u^PK)."""

    encryption_key: bytes
    mask_key: bytes
    kind: ClassVar[str] = KEYS
    stage: ClassVar[int] = 0

    def nbytes(self) -> int:
        return len(self.encryption_key) + len(self.mask_key)


@dataclass(frozen=True, eq=False)
class PeerKeys(Envelope):
    """Stage 0, down: the receiver's index and {neighbour index: (encryption key, mask key)}."""

    index: int
    keys: dict[int, tuple[bytes, bytes]]
    kind: ClassVar[str] = KEYS
    stage: ClassVar[int] = 0

    def nbytes(self) -> int:
        return INDEX_BYTES + sum(INDEX_BYTES + len(enc) + len(mask) for enc, mask in self.keys.values())


@dataclass(frozen=True, eq=False)
class EncryptedShares(Envelope):
    """Stage 1: {peer index: AEAD ciphertext}; up the peer is the addressee, down the author."""

    ciphertexts: dict[int, bytes]
    kind: ClassVar[str] = SHARES
    stage: ClassVar[int] = 1

    def nbytes(self) -> int:
        return sum(INDEX_BYTES + len(ciphertext) for ciphertext in self.ciphertexts.values())


@dataclass(frozen=True, eq=False)
class MaskedInput(Envelope):
    """Stage 2, up: y_u = [w*q, w, clipped] + self mask + pairwise masks, mod M (uint32/uint64)."""

    vector: np.ndarray
    kind: ClassVar[str] = MASKED_INPUT
    stage: ClassVar[int] = 2

    def nbytes(self) -> int:
        return int(self.vector.nbytes)


@dataclass(frozen=True, eq=False)
class UnmaskRequest(Envelope):
    """Stage 3, down: indices of the receiver's neighbours whose masked input arrived."""

    survivors: frozenset[int]
    kind: ClassVar[str] = UNMASK
    stage: ClassVar[int] = 3

    def nbytes(self) -> int:
        return INDEX_BYTES * len(self.survivors)


@dataclass(frozen=True, eq=False)
class UnmaskShares(Envelope):
    """Stage 3, up: shares of survivors' self-mask seeds and of dropped peers' mask keys,
    keyed by owner index; never both for one owner."""

    self_mask_shares: dict[int, bytes]
    mask_key_shares: dict[int, bytes]
    kind: ClassVar[str] = UNMASK
    stage: ClassVar[int] = 3

    def nbytes(self) -> int:
        shares = list(self.self_mask_shares.values()) + list(self.mask_key_shares.values())
        return sum(INDEX_BYTES + len(share) for share in shares)


@dataclass(frozen=True, eq=False)
class CostMessage(Envelope):
    """Cost mode: a message the protocol would send, with its size from the sizes module."""

    kind: str
    stage: int
    size: int

    def nbytes(self) -> int:
        return self.size


SecAggMessage = PublicKeys | PeerKeys | EncryptedShares | MaskedInput | UnmaskRequest | UnmaskShares | CostMessage

