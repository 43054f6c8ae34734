"""Server side of the protocol: collects and routes messages, then unmasks only the sum."""
from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from fedsim.comm import SERVER
from fedsim.secagg import shamir
from fedsim.secagg.cohort import SecAggCohort
from fedsim.secagg.config import SecAggConfig
from fedsim.secagg.crypto import PUBLIC_KEY_BYTES, agree, public_key_of
from fedsim.secagg.encoding import META_LENGTH, AggregateResult, decode_sum
from fedsim.secagg.errors import SecAggConfigError, SecAggProtocolError
from fedsim.secagg.masks import apply_pairwise, pairwise_mask, self_mask
from fedsim.secagg.messages import EncryptedShares, MaskedInput, PeerKeys, PublicKeys, UnmaskRequest, \
    UnmaskShares
from fedsim.secagg.sizes import SHARE_CIPHERTEXT_BYTES
from fedsim.secagg.spec import TensorSpec

_STAGES = ("keys", "shares", "masked_input", "unmask", "done")


class SecAggServer:
    """The server role for one aggregation round. It only ever receives public keys, ciphertexts
    it cannot decrypt, masked integer vectors and Shamir shares."""

    def __init__(self, config: SecAggConfig, round_index: int, client_ids: Sequence[Hashable],
                 tensor_spec: TensorSpec | Mapping[str, Sequence[int]]) -> None:
        if config.mode != "protocol":
            raise SecAggConfigError(f"SecAggServer runs the protocol mode only, config.mode is {config.mode!r}")
        self.config = config
        self.round = round_index
        self.spec = TensorSpec.of(tensor_spec)
        self.cohort = SecAggCohort(client_ids, config, round_index)
        config.check_capacity(len(self.cohort), self.spec.total)
        self._length = self.spec.total + META_LENGTH
        self._stage = 0
        self._keys: dict[int, PublicKeys] = {}
        self._ciphertexts: dict[int, dict[int, bytes]] = {}
        self._masked: dict[int, np.ndarray] = {}
        self._unmask: dict[int, UnmaskShares] = {}
        self.advertised: frozenset[int] = frozenset()
        self.shared: frozenset[int] = frozenset()
        self.masked: frozenset[int] = frozenset()

    def _sender_index(self, message, kind: type, stage: str, received: Mapping[int, object]) -> int:
        if _STAGES[self._stage] != stage:
            raise SecAggProtocolError(f"server: got {kind.__name__} during stage {_STAGES[self._stage]}")
        if not isinstance(message, kind):
            raise SecAggProtocolError(f"server: expected {kind.__name__}, got {type(message).__name__}")
        if message.receiver != SERVER or message.round != self.round:
            raise SecAggProtocolError(f"server (round {self.round}): message to {message.receiver!r} "
                                      f"for round {message.round}")
        if message.sender not in self.cohort.index:
            raise SecAggProtocolError(f"server: {message.sender!r} is not a client of this aggregation")
        u = self.cohort.index[message.sender]
        if u in received:
            raise SecAggProtocolError(f"server: second {kind.__name__} from client {message.sender!r}")
        return u

    def _close(self, stage: str) -> None:
        if _STAGES[self._stage] != stage:
            raise SecAggProtocolError(f"server: cannot close stage {stage} during stage {_STAGES[self._stage]}")
        self._stage += 1

    # Stage 0: AdvertiseKeys
    def receive_keys(self, message: PublicKeys) -> None:
        u = self._sender_index(message, PublicKeys, "keys", self._keys)
        if len(message.encryption_key) != PUBLIC_KEY_BYTES or len(message.mask_key) != PUBLIC_KEY_BYTES:
            raise SecAggProtocolError(f"server: public keys of {message.sender!r} are not {PUBLIC_KEY_BYTES} bytes")
        self._keys[u] = message

    def broadcast_keys(self) -> list[PeerKeys]:
        """Close U1 and send each client the public keys of its neighbours in U1."""
        self._close("keys")
        self.advertised = frozenset(self._keys)
        return [PeerKeys(SERVER, self.cohort.ids[u], self.round, u,
                         {v: (self._keys[v].encryption_key, self._keys[v].mask_key)
                          for v in sorted(self.cohort.graph[u] & self.advertised)})
                for u in sorted(self.advertised)]

    # Stage 1: ShareKeys
    def receive_shares(self, message: EncryptedShares) -> None:
        u = self._sender_index(message, EncryptedShares, "shares", self._ciphertexts)
        if u not in self.advertised:
            raise SecAggProtocolError(f"server: shares from {message.sender!r}, which sent no keys")
        expected = self.cohort.graph[u] & self.advertised
        if set(message.ciphertexts) != expected:
            raise SecAggProtocolError(f"server: {message.sender!r} sent shares for {sorted(message.ciphertexts)}, "
                                      f"its neighbours are {sorted(expected)}")
        if any(len(ciphertext) != SHARE_CIPHERTEXT_BYTES for ciphertext in message.ciphertexts.values()):
            raise SecAggProtocolError(f"server: a ciphertext of {message.sender!r} is not "
                                      f"{SHARE_CIPHERTEXT_BYTES} bytes")
        self._ciphertexts[u] = dict(message.ciphertexts)

    def forward_shares(self) -> list[EncryptedShares]:
        """Close U2 and forward to each client of U2 the ciphertexts addressed to it by clients of U2."""
        self._close("shares")
        self.shared = frozenset(self._ciphertexts)
        return [EncryptedShares(SERVER, self.cohort.ids[v], self.round,
                                {u: self._ciphertexts[u][v] for u in sorted(self.cohort.graph[v] & self.shared)})
                for v in sorted(self.shared)]

    # Stage 2: MaskedInput
    def receive_masked_input(self, message: MaskedInput) -> None:
        u = self._sender_index(message, MaskedInput, "masked_input", self._masked)
        if u not in self.shared:
            raise SecAggProtocolError(f"server: masked input from {message.sender!r}, which sent no shares")
        vector = message.vector
        if not isinstance(vector, np.ndarray) or vector.dtype != self.config.dtype or vector.shape != (self._length,):
            raise SecAggProtocolError(
                f"server: masked input of {message.sender!r} must be a {self.config.dtype} vector of length "
                f"{self._length}, got {getattr(vector, 'dtype', type(vector))} {getattr(vector, 'shape', '')}")
        self._masked[u] = vector

    def request_unmask(self) -> list[UnmaskRequest]:
        """Close U3; abort now if the survivors cannot hold enough shares; else ask each survivor
        to unmask, telling it which of its neighbours survived."""
        self._close("masked_input")
        self.masked = frozenset(self._masked)
        self.cohort.check_recoverable(self.advertised, self.shared, self.masked, self.masked, "masked input")
        return [UnmaskRequest(SERVER, self.cohort.ids[u], self.round, self.cohort.graph[u] & self.masked)
                for u in sorted(self.masked)]

    # Stage 3: Unmasking
    def receive_unmask(self, message: UnmaskShares) -> None:
        u = self._sender_index(message, UnmaskShares, "unmask", self._unmask)
        if u not in self.masked:
            raise SecAggProtocolError(f"server: unmasking shares from {message.sender!r}, not a survivor")
        held = self.cohort.graph[u] & self.shared
        expected_seeds = (held & self.masked) | {u}
        expected_keys = held - self.masked
        if set(message.self_mask_shares) != expected_seeds or set(message.mask_key_shares) != expected_keys:
            raise SecAggProtocolError(f"server: unmasking shares of {message.sender!r} do not match its survivors "
                                      f"{sorted(expected_seeds)} and dropped peers {sorted(expected_keys)}")
        shares = list(message.self_mask_shares.values()) + list(message.mask_key_shares.values())
        if any(len(share) != shamir.SHARE_BYTES for share in shares):
            raise SecAggProtocolError(f"server: a share of {message.sender!r} is not {shamir.SHARE_BYTES} bytes")
        self._unmask[u] = message

    def _reconstruct(self, owner: int, self_mask_seed: bool) -> bytes:
        shares = {}
        for holder, message in self._unmask.items():
            held = message.self_mask_shares if self_mask_seed else message.mask_key_shares
            if owner in held:
                shares[holder + 1] = held[owner]
        secret = "self-mask seed" if self_mask_seed else "mask key"
        return shamir.combine(shares, self.cohort.threshold(owner, self.advertised),
                              f"the {secret} of client {self.cohort.ids[owner]!r}")

    def finish(self) -> AggregateResult:
        """Close U5, rebuild the secrets needed, and return the unmasked sum (or raise SecAggAbort)."""
        self._close("unmask")
        responded = frozenset(self._unmask)
        self.cohort.check_recoverable(self.advertised, self.shared, self.masked, responded, "unmasking")
        dtype = self.config.dtype
        total = np.zeros(self._length, dtype=dtype)
        for vector in self._masked.values():
            total += vector
        for u in sorted(self.cohort.secrets_needed(self.shared, self.masked)):
            if u in self.masked:
                total -= self_mask(self._reconstruct(u, True), self.round, self.spec, self._length, dtype)
                continue
            mask_private = self._reconstruct(u, False)
            if public_key_of(mask_private) != self._keys[u].mask_key:
                raise SecAggProtocolError(f"server: the rebuilt mask key of {self.cohort.ids[u]!r} does not match "
                                          f"its public key: inconsistent shares")
            survivor_keys = {v: self._keys[v].mask_key for v in sorted(self.cohort.graph[u] & self.masked)}
            for survivor, secret in agree(mask_private, survivor_keys).items():
                apply_pairwise(total, pairwise_mask(secret, self.round, self.spec, self._length, dtype), u, survivor)
        weighted_sum, total_weight, clipped = decode_sum(total, self.spec, self.config)
        survivors = tuple(self.cohort.ids[u] for u in sorted(self.masked))
        dropped = tuple(self.cohort.ids[u] for u in range(len(self.cohort)) if u not in self.masked)
        return AggregateResult(weighted_sum, total_weight, survivors, dropped, clipped,
                               len(survivors) * self.spec.total, "protocol")
