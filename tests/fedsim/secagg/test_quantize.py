"""Stochastic rounding is unbiased, its error is below one step, and clipping is counted."""
import numpy as np

from fedsim.secagg.quantize import dequantize_sum, quantize, step


def test_rounding_is_unbiased_and_bounded():
    clip, levels = 1.0, 2**8
    values = np.full(200_000, 0.123456)
    q, clipped = quantize(values, clip, levels, np.random.default_rng(0))
    decoded = dequantize_sum(q, 1, clip, levels)
    assert clipped == 0
    assert np.max(np.abs(decoded - values)) < step(clip, levels)
    # the mean error is far below one step (step ~ 7.8e-3; std of the mean ~ 1e-5)
    assert abs(decoded.mean() - 0.123456) < 1e-4
    assert len(np.unique(q)) == 2


def test_clipping_is_counted_and_bounds_hold():
    values = np.array([-3.0, -1.0, 0.0, 0.5, 1.0, 2.5])
    q, clipped = quantize(values, 1.0, 2**24, np.random.default_rng(1))
    assert clipped == 2
    assert q.dtype == np.uint64 and q.min() == 0 and q.max() == 2**24 - 1
    decoded = dequantize_sum(q, 1, 1.0, 2**24)
    np.testing.assert_allclose(decoded, np.clip(values, -1, 1), atol=step(1.0, 2**24))


def test_weighted_level_sum_decodes_to_weighted_value_sum():
    rng = np.random.default_rng(2)
    xs = rng.uniform(-0.5, 0.5, (3, 100))
    weights = [3, 7, 11]
    level_sum = sum(np.uint64(w) * quantize(x, 0.5, 2**20, rng)[0] for w, x in zip(weights, xs))
    decoded = dequantize_sum(level_sum, sum(weights), 0.5, 2**20)
    expected = sum(w * x for w, x in zip(weights, xs))
    assert np.max(np.abs(decoded - expected)) < sum(weights) * step(0.5, 2**20)
