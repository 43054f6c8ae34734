"""Shamir sharing over GF(2^256 + 297)."""
import itertools
import os

import pytest
from Crypto.Util.number import isPrime

from fedsim.secagg import shamir
from fedsim.secagg.errors import SecAggAbort, SecAggProtocolError


def test_field_is_prime_and_holds_every_32_byte_secret():
    assert isPrime(shamir.PRIME) and shamir.PRIME > 2**256
    assert all(not isPrime(2**256 + k) for k in range(1, 297))


def test_any_threshold_subset_recovers_the_secret():
    secret = os.urandom(32)
    shares = shamir.split(secret, range(1, 7), threshold=4)
    assert all(len(share) == shamir.SHARE_BYTES for share in shares.values())
    for subset in itertools.combinations(shares, 4):
        assert shamir.combine({x: shares[x] for x in subset}, 4, "s") == secret
    assert shamir.combine(shares, 4, "s") == secret
    edge = b"\xff" * 32
    assert shamir.combine(shamir.split(edge, [3, 9], 2), 2, "s") == edge


def test_too_few_shares_abort_and_fewer_points_do_not_interpolate():
    secret = os.urandom(32)
    shares = shamir.split(secret, range(1, 6), threshold=3)
    with pytest.raises(SecAggAbort, match="2 shares, threshold 3"):
        shamir.combine({1: shares[1], 2: shares[2]}, 3, "the key")
    with pytest.raises(SecAggProtocolError):
        shamir.split(secret, [1, 1, 2], 2)
    with pytest.raises(SecAggProtocolError):
        shamir.split(secret, [1, 2], 3)
