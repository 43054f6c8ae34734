"""Key agreement, derivation and share encryption."""
import pytest

from fedsim.secagg.crypto import KeyPair, agree, decrypt_share, derive, encrypt_share
from fedsim.secagg.errors import SecAggProtocolError


def test_agreement_is_symmetric_and_derivation_binds_context():
    a, b, c = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    ab = agree(a.private, {1: b.public, 2: c.public})
    assert ab[1] == agree(b.private, {0: a.public})[0]
    assert ab[1] != ab[2]
    assert derive(ab[1], b"x", 1) != derive(ab[1], b"x", 2) != derive(ab[1], b"y", 2)
    with pytest.raises(SecAggProtocolError, match="32 bytes"):
        agree(a.private, {1: b"short"})


def test_shares_decrypt_only_with_the_right_key_direction_and_round():
    a, b = KeyPair.generate(), KeyPair.generate()
    shared = agree(a.private, {1: b.public})[1]
    ciphertext = encrypt_share(shared, 5, 0, 1, b"secret shares")
    assert len(ciphertext) == len(b"secret shares") + 16
    assert decrypt_share(agree(b.private, {0: a.public})[0], 5, 0, 1, ciphertext) == b"secret shares"
    for round_index, sender, receiver in [(6, 0, 1), (5, 1, 0), (5, 0, 2)]:
        with pytest.raises(SecAggProtocolError, match="authentication"):
            decrypt_share(shared, round_index, sender, receiver, ciphertext)
    tampered = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
    with pytest.raises(SecAggProtocolError):
        decrypt_share(shared, 5, 0, 1, tampered)
