"""Tests of the top-k wire forms: padded TopKResult and ragged RaggedTopK."""
import numpy as np
import pytest

from fedsim.models.topk import RaggedTopK, TopKResult

NEG_INF = -np.inf


def padded() -> TopKResult:
    ids = np.array([[5, 3, 9], [7, 0, 0], [0, 0, 0], [2, 4, 0]], dtype=np.int32)
    values = np.array([[3.0, 2.0, 1.0], [0.0, NEG_INF, NEG_INF], [NEG_INF] * 3, [1.5, -0.5, NEG_INF]],
                      dtype=np.float16)
    return TopKResult(ids, values, adapter_version=3)


def test_ragged_keeps_only_present_entries_in_row_order():
    ragged = RaggedTopK.from_topk(padded())
    assert ragged.offsets.tolist() == [0, 3, 4, 4, 6]
    assert ragged.ids.tolist() == [5, 3, 9, 7, 2, 4]
    assert ragged.values.tolist() == [3.0, 2.0, 1.0, 0.0, 1.5, -0.5]
    assert ragged.n_positions == 4 and ragged.adapter_version == 3
    assert ragged.nbytes == 5 * 4 + 6 * 4 + 6 * 2  # a one-hot row costs one entry, an empty row none


def test_ragged_round_trips_to_the_padded_form():
    back = RaggedTopK.from_topk(padded()).to_topk(3)
    assert np.array_equal(back.ids, padded().ids)
    assert np.array_equal(back.values, padded().values)
    assert back.adapter_version == 3
    wider = RaggedTopK.from_topk(padded()).to_topk(4)
    assert wider.ids[:, 3].tolist() == [0, 0, 0, 0] and np.isneginf(wider.values[:, 3]).all()


def test_ragged_of_no_positions():
    empty = TopKResult(np.zeros((0, 2), dtype=np.int32), np.zeros((0, 2), dtype=np.float16))
    ragged = RaggedTopK.from_topk(empty)
    assert ragged.offsets.tolist() == [0] and ragged.nbytes == 4
    assert ragged.to_topk(2).ids.shape == (0, 2)


def test_ragged_rejects_bad_arrays_and_a_too_small_k():
    ids = np.array([1, 2], dtype=np.int32)
    values = np.array([0.5, 0.25], dtype=np.float16)
    with pytest.raises(ValueError, match="int32 offsets"):
        RaggedTopK(np.array([0, 2], dtype=np.int64), ids, values)
    with pytest.raises(ValueError, match="float16 values"):
        RaggedTopK(np.array([0, 2], dtype=np.int32), ids, values.astype(np.float32))
    with pytest.raises(ValueError, match="1-D"):
        RaggedTopK(np.array([0, 2], dtype=np.int32), ids, values[:1])
    for offsets in ([0, 3], [1, 2], [0, 2, 1, 2], []):
        with pytest.raises(ValueError, match="offsets must rise"):
            RaggedTopK(np.array(offsets, dtype=np.int32), ids, values)
    with pytest.raises(ValueError, match="k >= 2"):
        RaggedTopK(np.array([0, 2], dtype=np.int32), ids, values).to_topk(1)
