"""Cost mode predicts every message of the protocol, byte for byte, without cryptography."""
import numpy as np
import pytest

from fedsim.comm import SERVER
from fedsim.secagg.cohort import SecAggCohort
from fedsim.secagg.config import SecAggConfig
from fedsim.secagg.cost import Dropouts, cost_aggregate, cost_messages
from fedsim.secagg.driver import run_secure_aggregation
from fedsim.secagg.errors import SecAggAbort, SecAggProtocolError
from fedsim.secagg.messages import bytes_by_kind
from fedsim.secagg.sizes import MESSAGE_ROUNDS
from fedsim.secagg.spec import TensorSpec

from .helpers import make_updates


def _ledger(messages):
    return [(m.kind, m.stage, m.sender, m.receiver, m.nbytes()) for m in messages]


@pytest.mark.parametrize("n, neighbours, drops", [
    (6, None, {}),
    (10, None, {"drop_after_masking": {"client-3", "client-7", "client-9"}}),
    (20, "log", {"drop_after_masking": {"client-2"}, "drop_before_shares": {"client-5"},
                 "drop_before_unmask": {"client-11"}}),
    (12, 4, {"drop_before_unmask": {"client-0"}}),
])
def test_cost_bytes_equal_protocol_bytes(n, neighbours, drops):
    updates, weights = make_updates(n, seed=n)
    drops = {key: frozenset(value) for key, value in drops.items()}
    protocol = SecAggConfig(clip_range=2.0, neighbours=neighbours, threshold=0.5)
    cost = SecAggConfig(clip_range=2.0, neighbours=neighbours, threshold=0.5, mode="cost")
    _, measured = run_secure_aggregation(updates, weights, protocol, 5, **drops)
    _, predicted = run_secure_aggregation(updates, weights, cost, 5, **drops)
    assert _ledger(predicted) == _ledger(measured)
    assert bytes_by_kind(predicted) == bytes_by_kind(measured)
    assert len({m.stage for m in measured}) == MESSAGE_ROUNDS


def test_message_sizes_follow_the_formulas():
    cohort = SecAggCohort([0, 1, 2, 3], SecAggConfig(), 0)
    messages = cost_messages(cohort, TensorSpec.of({"w": (100,)}), SecAggConfig(), 0, Dropouts())
    sizes = {(m.kind, m.direction): m.nbytes() for m in messages if 1 in (m.sender, m.receiver)}
    assert sizes == {
        ("secagg_keys", "up"): 64,                     # two X25519 public keys
        ("secagg_keys", "down"): 4 + 3 * (4 + 64),     # own index, 3 neighbours' index and keys
        ("secagg_shares", "up"): 3 * (4 + 90),         # 2 indices + 2 shares of 33 bytes + 16-byte tag
        ("secagg_shares", "down"): 3 * (4 + 90),
        ("secagg_masked_input", "up"): (100 + 2) * 8,  # m coordinates, weight, clipped count (uint64)
        ("secagg_unmask", "down"): 3 * 4,
        ("secagg_unmask", "up"): 4 * (4 + 33),         # a share for each neighbour and itself
    }
    assert all(m.receiver == SERVER or m.sender == SERVER for m in messages)


def test_cost_mode_aborts_where_the_protocol_does():
    updates, weights = make_updates(6, seed=4)
    drop = {"drop_after_masking": frozenset({"client-0", "client-1"})}
    for mode in ("protocol", "cost"):
        with pytest.raises(SecAggAbort, match="needs 5 shares but only 4"):
            run_secure_aggregation(updates, weights, SecAggConfig(threshold=0.8, mode=mode), 0, **drop)


def test_cost_aggregate_checks_who_sent_inputs():
    spec = TensorSpec.of({"w": (3,)})
    config = SecAggConfig(mode="cost")
    vector = np.zeros(5, dtype=np.uint64)
    with pytest.raises(SecAggProtocolError, match="whose input arrives"):
        cost_aggregate({0: vector}, [0, 1], spec, config, 0)
    with pytest.raises(SecAggProtocolError, match="outside the cohort"):
        cost_aggregate({0: vector}, [0], spec, config, 0, Dropouts(before_input=frozenset({7})))
    with pytest.raises(SecAggProtocolError, match="uint64 of length 5"):
        cost_aggregate({0: vector[:4]}, [0], spec, config, 0)
