"""Tests of serve/params.py: request parameters, row seeding, result types."""
import numpy as np
import pytest

from serve.errors import RequestError
from serve.params import GenerationParams, TopKResult, derive_row_seed


def test_defaults_are_greedy_and_stop_is_normalised():
    params = GenerationParams(stop="END")
    assert params.greedy and params.stop == ("END",)
    assert GenerationParams(stop=["a", "b"]).stop == ("a", "b")


@pytest.mark.parametrize("kwargs, field", [
    ({"max_new_tokens": 0}, "max_new_tokens"), ({"max_new_tokens": 2.5}, "max_new_tokens"),
    ({"temperature": -1.0}, "temperature"), ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"),
    ({"stop": ("",)}, "stop"), ({"seed": -3}, "seed"), ({"seed": "7"}, "seed"),
])
def test_bad_values_name_the_field(kwargs, field):
    with pytest.raises(RequestError, match=field):
        GenerationParams(**kwargs)


def test_greedy_rows_carry_no_seed():
    rows = GenerationParams(seed=5).rows(3)
    assert len(rows) == 3 and all(row.seed is None for row in rows)


def test_sampled_rows_get_distinct_reproducible_seeds():
    rows = GenerationParams(temperature=0.7, seed=11).rows(4)
    seeds = [row.seed for row in rows]
    assert len(set(seeds)) == 4
    assert seeds == [derive_row_seed(11, i) for i in range(4)]
    assert [row.seed for row in GenerationParams(temperature=0.7, seed=11).rows(2)] == seeds[:2]
    unseeded = GenerationParams(temperature=0.7).rows(2)
    assert all(row.seed is not None for row in unseeded)


def test_topk_result_checks_dtypes_and_counts_bytes():
    result = TopKResult(ids=np.zeros((5, 3), np.int32), values=np.zeros((5, 3), np.float16))
    assert (result.n_positions, result.k, result.nbytes) == (5, 3, 5 * 3 * 6)
    with pytest.raises(ValueError, match="int32"):
        TopKResult(ids=np.zeros((5, 3), np.int64), values=np.zeros((5, 3), np.float16))
    with pytest.raises(ValueError, match="shape"):
        TopKResult(ids=np.zeros((5, 3), np.int32), values=np.zeros((5, 2), np.float16))
