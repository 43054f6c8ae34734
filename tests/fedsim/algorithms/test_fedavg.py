"""Sample-weighted sums of named update arrays."""
import numpy as np
import pytest

from fedsim.algorithms.base import ClientOutcome
from fedsim.algorithms.fedavg import apply_update, cast_for_wire, mean_of, weighted_sum
from fedsim.comm import SERVER, Message


def outcome(client, weight, values):
    payload = {"a": np.array(values, np.float32), "b": np.full((2, 2), client, np.float32)}
    return ClientOutcome(client, [Message("delta", client, SERVER, payload)], weight)


def test_weighted_mean_is_sum_over_total_weight():
    total, weight = weighted_sum([outcome(2, 3, [1.0, 2.0]), outcome(1, 1, [5.0, 6.0])], "delta")
    assert weight == 4
    mean = mean_of(total, weight)
    np.testing.assert_allclose(mean["a"], [(3 * 1 + 5) / 4, (3 * 2 + 6) / 4])
    np.testing.assert_allclose(mean["b"], np.full((2, 2), (3 * 2 + 1) / 4))
    assert mean_of({}, 0) is None


def test_mismatched_updates_are_rejected():
    bad = ClientOutcome(3, [Message("delta", 3, SERVER, {"a": np.zeros(3, np.float32)})], 1)
    with pytest.raises(ValueError, match="tensor names"):
        weighted_sum([outcome(1, 1, [1.0, 2.0]), bad], "delta")
    bad = ClientOutcome(3, [Message("delta", 3, SERVER, {"a": np.zeros(3, np.float32),
                                                           "b": np.zeros((2, 2), np.float32)})], 1)
    with pytest.raises(ValueError, match="shape"):
        weighted_sum([outcome(1, 1, [1.0, 2.0]), bad], "delta")


def test_wire_cast_and_update():
    arrays = {"a": np.array([1.0001, 2.0], np.float32)}
    half = cast_for_wire(arrays, "float16")
    assert half["a"].dtype == np.float16 and half["a"].nbytes == 4
    assert apply_update(arrays, None) is arrays
    np.testing.assert_allclose(apply_update(arrays, {"a": np.ones(2, np.float32)})["a"], [2.0001, 3.0])
