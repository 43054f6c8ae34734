"""Key pairs (X25519), key agreement, key derivation (HKDF-SHA256) and share encryption (AEAD)."""
from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedsim.secagg.errors import SecAggProtocolError

PUBLIC_KEY_BYTES = 32
AEAD_TAG_BYTES = 16
_ZERO_NONCE = bytes(12)  # each share key encrypts exactly one message, so a fixed nonce is safe


@dataclass(frozen=True)
class KeyPair:
    """An X25519 key pair as raw bytes (the private half is what gets secret-shared)."""

    private: bytes
    public: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        key = X25519PrivateKey.generate()
        return cls(key.private_bytes_raw(), key.public_key().public_bytes_raw())


def public_key_of(private: bytes) -> bytes:
    """The X25519 public key of a raw private key (to check a key rebuilt from shares)."""
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def agree(private: bytes, peer_publics: Mapping[int, bytes]) -> dict[int, bytes]:
    """X25519 shared secrets of our private key with each peer's public key (symmetric in a pair)."""
    key = X25519PrivateKey.from_private_bytes(private)
    agreed = {}
    for peer, public in peer_publics.items():
        if len(public) != PUBLIC_KEY_BYTES:
            raise SecAggProtocolError(f"public keys are {PUBLIC_KEY_BYTES} bytes, got {len(public)} for #{peer}")
        agreed[peer] = key.exchange(X25519PublicKey.from_public_bytes(public))
    return agreed


def derive(secret: bytes, label: bytes, *context: bytes | int) -> bytes:
    """A 32-byte key from `secret`, bound to a label and context (ints as 8-byte big-endian)."""
    info = label + b"".join(part if isinstance(part, bytes) else struct.pack(">q", part) for part in context)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def _share_key_and_aad(shared: bytes, round_index: int, sender: int, recipient: int) -> tuple[bytes, bytes]:
    aad = struct.pack(">qII", round_index, sender, recipient)
    return derive(shared, b"fedsim-secagg/share-encryption", aad), aad


def encrypt_share(shared: bytes, round_index: int, sender: int, recipient: int, plaintext: bytes) -> bytes:
    """Encrypt sender's shares for recipient under a one-use key derived from their agreed secret."""
    key, aad = _share_key_and_aad(shared, round_index, sender, recipient)
    return ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, plaintext, aad)


def decrypt_share(shared: bytes, round_index: int, sender: int, recipient: int, ciphertext: bytes) -> bytes:
    """Inverse of encrypt_share; a forged or misrouted ciphertext raises SecAggProtocolError."""
    key, aad = _share_key_and_aad(shared, round_index, sender, recipient)
    try:
        return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, ciphertext, aad)
    except InvalidTag:
        raise SecAggProtocolError(
            f"shares from client #{sender} to #{recipient} fail authentication (round {round_index})") from None
