"""Updates to integers mod M (weight and clipped count appended) and back."""
import numpy as np
import pytest

from fedsim.secagg.config import SecAggConfig
from fedsim.secagg.encoding import AggregateResult, decode_sum, encode_update
from fedsim.secagg.errors import TensorSpecError
from fedsim.secagg.quantize import step
from fedsim.secagg.spec import TensorSpec


def test_encode_then_decode_recovers_the_weighted_update():
    config = SecAggConfig(clip_range={"a": 0.5, "b": 4.0}, max_weight=10)
    spec = TensorSpec.of({"a": (2, 2), "b": (3,)})
    update = {"a": np.array([[0.1, -0.2], [0.7, -0.5]]), "b": np.array([3.0, -4.5, 0.0])}
    vector = encode_update(update, 25, spec, config, np.random.default_rng(0), "client 0")
    assert vector.dtype == np.uint64 and vector.shape == (9,)
    assert vector[-2:].tolist() == [10, 2]  # weight capped at 10; 0.7 and -4.5 clipped
    weighted_sum, total_weight, clipped = decode_sum(vector, spec, config)
    assert (total_weight, clipped) == (10, 2)
    np.testing.assert_allclose(weighted_sum["a"], 10 * np.clip(update["a"], -0.5, 0.5),
                               atol=10 * step(0.5, config.levels))
    np.testing.assert_allclose(weighted_sum["b"], 10 * np.clip(update["b"], -4.0, 4.0),
                               atol=10 * step(4.0, config.levels))


@pytest.mark.parametrize("weight", [0, -3, 1.0, True, "7"])
def test_weights_must_be_positive_integers(weight):
    spec = TensorSpec.of({"a": (1,)})
    with pytest.raises(TensorSpecError, match="client 3: weight must be a positive integer"):
        encode_update({"a": np.zeros(1)}, weight, spec, SecAggConfig(), np.random.default_rng(0), "client 3")


def test_result_mean_and_clipped_fraction():
    result = AggregateResult({"a": np.array([4.0, 8.0])}, 4, (1, 2), (3,), 1, 4, "protocol")
    assert result.mean()["a"].tolist() == [1.0, 2.0]
    assert result.clipped_fraction == 0.25
