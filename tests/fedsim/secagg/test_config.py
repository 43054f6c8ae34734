"""SecAggConfig validation, thresholds and overflow capacity."""
import numpy as np
import pytest

from fedsim.secagg.config import SecAggConfig
from fedsim.secagg.errors import SecAggConfigError


@pytest.mark.parametrize("field, value", [
    ("mode", "plain"), ("modulus_bits", 48), ("quant_bits", 0), ("quant_bits", 64), ("clip_range", 0.0),
    ("clip_range", {"a": -1.0}), ("threshold", 0), ("threshold", 1.5), ("threshold", "half"),
    ("neighbours", 0), ("neighbours", "sqrt"), ("max_weight", 0),
])
def test_invalid_fields_are_named(field, value):
    with pytest.raises(SecAggConfigError, match=field):
        SecAggConfig(**{field: value})


def test_threshold_is_an_int_or_a_fraction_of_the_holders():
    assert SecAggConfig(threshold=3).threshold_for(10) == 3
    assert SecAggConfig(threshold=0.5).threshold_for(9) == 5
    assert SecAggConfig(threshold=2 / 3).threshold_for(15) == 10
    assert SecAggConfig(threshold=0.01).threshold_for(3) == 2  # a fraction never gives t < 2
    assert SecAggConfig(threshold=0.5).threshold_for(1) == 1  # a cohort of one


def test_dtype_follows_the_modulus_and_clip_can_be_per_tensor():
    assert SecAggConfig().dtype == np.uint64
    assert SecAggConfig(modulus_bits=32, quant_bits=16).dtype == np.uint32
    config = SecAggConfig(clip_range={"a": 0.5, "b": 2.0})
    assert config.clip_for("b") == 2.0
    with pytest.raises(SecAggConfigError, match="'c'"):
        config.clip_for("c")


def test_capacity_rejects_sums_that_could_wrap():
    SecAggConfig(quant_bits=24, max_weight=2**20).check_capacity(2**20, 10)  # 2^64 - 2^40 fits
    with pytest.raises(SecAggConfigError, match="overflow"):
        SecAggConfig(quant_bits=24, max_weight=2**20).check_capacity(2**20 + 1, 10)
    with pytest.raises(SecAggConfigError, match="overflow"):
        SecAggConfig(modulus_bits=32, quant_bits=16, max_weight=100).check_capacity(1000, 10)
