"""Shamir t-of-n secret sharing of 32-byte secrets over the prime field GF(2^256 + 297)."""
from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping

from fedsim.secagg.errors import SecAggAbort, SecAggProtocolError

PRIME = 2**256 + 297
"""The smallest prime above 2^256, so every 32-byte secret is a field element."""
SECRET_BYTES = 32
SHARE_BYTES = 33
"""A share is one field element, big-endian."""


def split(secret: bytes, xs: Iterable[int], threshold: int) -> dict[int, bytes]:
    """Shares of `secret` at the points xs (distinct, in 1..PRIME-1): any `threshold` recover it."""
    if len(secret) != SECRET_BYTES:
        raise SecAggProtocolError(f"Shamir secrets are {SECRET_BYTES} bytes, got {len(secret)}")
    points = list(xs)
    if len(set(points)) != len(points) or any(not 0 < x < PRIME for x in points):
        raise SecAggProtocolError(f"Shamir points must be distinct and in 1..p-1, got {points}")
    if not 1 <= threshold <= len(points):
        raise SecAggProtocolError(f"Shamir threshold {threshold} must be in 1..{len(points)} (the number of shares)")
    coefficients = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = {}
    for x in points:
        value = 0
        for coefficient in reversed(coefficients):
            value = (value * x + coefficient) % PRIME
        shares[x] = value.to_bytes(SHARE_BYTES, "big")
    return shares


def combine(shares: Mapping[int, bytes], threshold: int, what: str) -> bytes:
    """Recover the secret from at least `threshold` shares {x: share} (Lagrange at 0)."""
    if len(shares) < threshold:
        raise SecAggAbort(f"cannot reconstruct {what}: {len(shares)} shares, threshold {threshold}")
    points = sorted(shares)[:threshold]
    secret = 0
    for x_i in points:
        numerator, denominator = 1, 1
        for x_j in points:
            if x_j != x_i:
                numerator = numerator * x_j % PRIME
                denominator = denominator * (x_j - x_i) % PRIME
        y_i = int.from_bytes(shares[x_i], "big")
        secret = (secret + y_i * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >= 2 ** (8 * SECRET_BYTES):
        raise SecAggProtocolError(f"reconstructed {what} is not a {SECRET_BYTES}-byte secret: inconsistent shares")
    return secret.to_bytes(SECRET_BYTES, "big")
