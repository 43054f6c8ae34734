"""Cost mode's messages follow the size formulas (that they equal the protocol's, byte for byte, is tested
in tests/fedsim/engine/test_secure_sum.py)."""
import numpy as np
import pytest

from fedsim.comm import SERVER
from fedsim.secagg.cohort import SecAggCohort
from fedsim.secagg.config import SecAggConfig
from fedsim.secagg.cost import Dropouts, cost_aggregate, cost_messages
from fedsim.secagg.errors import SecAggProtocolError
from fedsim.secagg.spec import TensorSpec


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
