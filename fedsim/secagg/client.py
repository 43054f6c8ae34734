"""Client side of the protocol: one method per stage, each taking and returning messages."""
from __future__ import annotations

import os
import struct
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from fedsim.comm import SERVER
from fedsim.secagg import shamir
from fedsim.secagg.config import SecAggConfig
from fedsim.secagg.crypto import KeyPair, agree, decrypt_share, encrypt_share
from fedsim.secagg.encoding import encode_update
from fedsim.secagg.errors import SecAggAbort, SecAggConfigError, SecAggProtocolError
from fedsim.secagg.masks import apply_pairwise, pairwise_mask, self_mask
from fedsim.secagg.messages import EncryptedShares, MaskedInput, PeerKeys, PublicKeys, UnmaskRequest, \
    UnmaskShares
from fedsim.secagg.prg import SEED_BYTES
from fedsim.secagg.spec import TensorSpec

_STAGES = ("advertise_keys", "share_keys", "masked_input", "unmask", "done")


class SecAggClient:
    """One client's state for one aggregation round (picklable; fresh keys every round)."""

    def __init__(self, client_id: Hashable, round_index: int, tensor_spec: TensorSpec | Mapping[str, Sequence[int]],
                 config: SecAggConfig, rng_seed: int | Sequence[int]) -> None:
        if config.mode != "protocol":
            raise SecAggConfigError(f"SecAggClient runs the protocol mode only, config.mode is {config.mode!r}")
        self.client_id = client_id
        self.round = round_index
        self.spec = TensorSpec.of(tensor_spec)
        self.config = config
        self._rng = np.random.default_rng(rng_seed)
        self._encryption = KeyPair.generate()
        self._masking = KeyPair.generate()
        self._self_mask_seed = os.urandom(SEED_BYTES)
        self._stage = 0
        self._index = -1
        self._peer_keys: dict[int, tuple[bytes, bytes]] = {}
        self._threshold = 0
        self._own_shares: tuple[bytes, bytes] = (b"", b"")
        self._share_secrets: dict[int, bytes] = {}
        self._held_shares: dict[int, tuple[bytes, bytes]] = {}

    def _enter(self, stage: str, message=None, kind: type | None = None) -> None:
        """Check the stage order and the incoming message's type and routing, then advance."""
        expected = _STAGES[self._stage]
        if stage != expected:
            raise SecAggProtocolError(f"client {self.client_id!r}: called {stage} but the next stage is {expected}")
        if kind is not None:
            if not isinstance(message, kind):
                raise SecAggProtocolError(
                    f"client {self.client_id!r}: expected {kind.__name__}, got {type(message).__name__}")
            if message.receiver != self.client_id or message.sender != SERVER or message.round != self.round:
                raise SecAggProtocolError(
                    f"client {self.client_id!r} (round {self.round}) got a message from {message.sender!r} "
                    f"to {message.receiver!r} for round {message.round}")
        self._stage += 1

    def advertise_keys(self) -> PublicKeys:
        """Stage 0: send both public keys."""
        self._enter("advertise_keys")
        return PublicKeys(self.client_id, SERVER, self.round, self._encryption.public, self._masking.public)

    def share_keys(self, peer_keys: PeerKeys) -> EncryptedShares:
        """Stage 1: Shamir-share the mask key and the self-mask seed among the neighbours and
        ourselves; encrypt each neighbour's pair of shares under a key agreed with it."""
        self._enter("share_keys", peer_keys, PeerKeys)
        self._index = peer_keys.index
        if self._index in peer_keys.keys:
            raise SecAggProtocolError(f"client {self.client_id!r}: the key list names this client as its own peer")
        self._peer_keys = dict(peer_keys.keys)
        holders = sorted(self._peer_keys) + [self._index]
        self._threshold = self.config.threshold_for(len(holders))
        if self._threshold > len(holders):
            raise SecAggAbort(f"client {self.client_id!r}: only {len(holders)} share holders for threshold "
                              f"{self._threshold}")
        points = [holder + 1 for holder in holders]
        mask_key_shares = shamir.split(self._masking.private, points, self._threshold)
        seed_shares = shamir.split(self._self_mask_seed, points, self._threshold)
        self._own_shares = (mask_key_shares[self._index + 1], seed_shares[self._index + 1])
        self._share_secrets = agree(self._encryption.private,
                                    {peer: keys[0] for peer, keys in self._peer_keys.items()})
        ciphertexts = {}
        for peer, shared in self._share_secrets.items():
            plaintext = struct.pack(">II", self._index, peer) + mask_key_shares[peer + 1] + seed_shares[peer + 1]
            ciphertexts[peer] = encrypt_share(shared, self.round, self._index, peer, plaintext)
        return EncryptedShares(self.client_id, SERVER, self.round, ciphertexts)

    def _receive_shares(self, shares: EncryptedShares) -> None:
        for peer, ciphertext in shares.ciphertexts.items():
            if peer not in self._peer_keys:
                raise SecAggProtocolError(f"client {self.client_id!r}: shares from #{peer}, not a neighbour")
            plaintext = decrypt_share(self._share_secrets[peer], self.round, peer, self._index, ciphertext)
            if struct.unpack(">II", plaintext[:8]) != (peer, self._index):
                raise SecAggProtocolError(f"client {self.client_id!r}: shares from #{peer} name other parties")
            body = plaintext[8:]
            self._held_shares[peer] = (body[:shamir.SHARE_BYTES], body[shamir.SHARE_BYTES:])

    def masked_input(self, update: Mapping[str, np.ndarray], weight: int, shares: EncryptedShares) -> MaskedInput:
        """Stage 2: keep the shares received, then send y = [w*q, w, clipped] + p_u + sum_v gamma p_uv
        over the neighbours that sent us shares (those that reached the server)."""
        self._enter("masked_input", shares, EncryptedShares)
        self._receive_shares(shares)
        if len(self._held_shares) + 1 < self._threshold:
            raise SecAggAbort(f"client {self.client_id!r}: {len(self._held_shares) + 1} share holders left, "
                              f"threshold {self._threshold}")
        vector = encode_update(update, weight, self.spec, self.config, self._rng, f"client {self.client_id!r}")
        length, dtype = vector.size, self.config.dtype
        vector += self_mask(self._self_mask_seed, self.round, self.spec, length, dtype)
        agreed = agree(self._masking.private, {peer: self._peer_keys[peer][1] for peer in self._held_shares})
        for peer, secret in agreed.items():
            apply_pairwise(vector, pairwise_mask(secret, self.round, self.spec, length, dtype), self._index, peer)
        return MaskedInput(self.client_id, SERVER, self.round, vector)

    def unmask(self, request: UnmaskRequest) -> UnmaskShares:
        """Stage 3: reveal the self-mask-seed share of each surviving neighbour (and our own) and the
        mask-key share of each neighbour that dropped. One call only, so never both for one peer."""
        self._enter("unmask", request, UnmaskRequest)
        unknown = set(request.survivors) - set(self._held_shares)
        if unknown:
            raise SecAggProtocolError(f"client {self.client_id!r}: survivors {sorted(unknown)} are not peers "
                                      f"whose shares it holds")
        if len(request.survivors) + 1 < self._threshold:
            raise SecAggAbort(f"client {self.client_id!r}: {len(request.survivors) + 1} survivors among its share "
                              f"holders, threshold {self._threshold}")
        self_mask_shares = {peer: self._held_shares[peer][1] for peer in request.survivors}
        self_mask_shares[self._index] = self._own_shares[1]
        mask_key_shares = {peer: shares[0] for peer, shares in self._held_shares.items()
                           if peer not in request.survivors}
        return UnmaskShares(self.client_id, SERVER, self.round, self_mask_shares, mask_key_shares)
