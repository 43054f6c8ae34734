"""Wire sizes of every secure-aggregation message, shared by the protocol and the cost mode.

Sizes count payload bytes: public keys, ciphertexts, shares, masked integers, and 4-byte peer
indices where a payload refers to a peer. Transport framing is not counted.
"""
from __future__ import annotations

from fedsim.secagg.crypto import AEAD_TAG_BYTES, PUBLIC_KEY_BYTES
from fedsim.secagg.encoding import META_LENGTH
from fedsim.secagg.shamir import SHARE_BYTES

INDEX_BYTES = 4
SHARE_PLAINTEXT_BYTES = 2 * INDEX_BYTES + 2 * SHARE_BYTES
"""sender index, recipient index, share of the mask key, share of the self-mask seed."""
SHARE_CIPHERTEXT_BYTES = SHARE_PLAINTEXT_BYTES + AEAD_TAG_BYTES
MESSAGE_ROUNDS = 4
"""AdvertiseKeys, ShareKeys, MaskedInput, Unmasking (honest-but-curious: no consistency check)."""


def public_keys_size() -> int:
    """Client -> server: its encryption and masking public keys."""
    return 2 * PUBLIC_KEY_BYTES


def peer_keys_size(n_peers: int) -> int:
    """Server -> client: its own index, then index and both public keys of each neighbour."""
    return INDEX_BYTES + n_peers * (INDEX_BYTES + 2 * PUBLIC_KEY_BYTES)


def encrypted_shares_size(n_ciphertexts: int) -> int:
    """Either direction: one (peer index, ciphertext) per share pair."""
    return n_ciphertexts * (INDEX_BYTES + SHARE_CIPHERTEXT_BYTES)


def masked_input_size(n_coordinates: int, modulus_bits: int) -> int:
    """Client -> server: m masked coordinates plus the masked weight and clipped count."""
    return (n_coordinates + META_LENGTH) * modulus_bits // 8


def unmask_request_size(n_survivors: int) -> int:
    """Server -> client: indices of its neighbours whose masked input arrived."""
    return n_survivors * INDEX_BYTES


def unmask_shares_size(n_shares: int) -> int:
    """Client -> server: one (owner index, share) per neighbour it holds shares of, and itself."""
    return n_shares * (INDEX_BYTES + SHARE_BYTES)
