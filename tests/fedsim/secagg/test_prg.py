"""The mask PRG: deterministic per seed, uniform-looking, in the modulus' dtype."""
import numpy as np

from fedsim.secagg.prg import expand


def test_expand_is_deterministic_and_seed_dependent():
    a = expand(b"\x01" * 32, 1000, np.uint64)
    assert a.dtype == np.uint64 and a.shape == (1000,)
    assert np.array_equal(a, expand(b"\x01" * 32, 1000, np.uint64))
    assert not np.array_equal(a, expand(b"\x02" * 32, 1000, np.uint64))
    assert np.array_equal(expand(b"\x01" * 32, 10, np.uint64), a[:10])
    assert expand(b"\x01" * 32, 7, np.uint32).dtype == np.uint32


def test_expand_looks_uniform():
    values = expand(b"\x07" * 32, 100_000, np.uint64).astype(np.float64) / 2.0**64
    assert abs(values.mean() - 0.5) < 0.01 and abs(values.std() - (1 / 12) ** 0.5) < 0.01
