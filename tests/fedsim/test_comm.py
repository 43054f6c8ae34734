"""Byte counting from real payloads, and the byte ledger."""
import numpy as np
import pytest

from fedsim.comm import SERVER, ByteLedger, Message, payload_nbytes


def test_payload_bytes_are_counted_from_data():
    adapter = {"a": np.zeros((4, 8), np.float32), "b": np.zeros(3, np.float16)}
    assert payload_nbytes(adapter) == 4 * 8 * 4 + 3 * 2 + len("a") + len("b")
    assert payload_nbytes(["héllo", "ab"]) == len("héllo".encode()) + 2
    with pytest.raises(TypeError):
        payload_nbytes(object())


def test_ledger_counts_per_round_kind_direction():
    ledger = ByteLedger()
    up = Message("adapter_delta", 3, SERVER, {"w": np.zeros(10, np.float32)})
    down = Message("adapter", SERVER, 3, {"w": np.zeros(10, np.float32)})
    assert up.direction == "up" and down.direction == "down"
    ledger.record_message(0, up)
    ledger.record_message(0, down)
    ledger.record_message(1, up)
    assert ledger.round_bytes(0) == {"down/adapter": 41, "up/adapter_delta": 41}
    assert ledger.direction_total("up") == 82 and ledger.direction_total("down", 1) == 0
    assert ByteLedger.from_dict(ledger.to_dict()).round_bytes(1) == ledger.round_bytes(1)


def test_a_topk_result_counts_its_ids_and_values_inside_a_message():
    from fedsim.models.topk import TopKResult

    topk = TopKResult(np.zeros((5, 3), np.int32), np.zeros((5, 3), np.float16))
    message = Message("topk", SERVER, 2, [topk, topk])
    assert message.nbytes == 2 * 5 * 3 * (4 + 2)
