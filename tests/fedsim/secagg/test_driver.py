"""End to end: the protocol's sum is the plaintext weighted sum, with and without dropouts."""
import numpy as np
import pytest

from fedsim.secagg.config import SecAggConfig
from fedsim.secagg.driver import run_secure_aggregation
from fedsim.secagg.encoding import decode_sum
from fedsim.secagg.errors import SecAggAbort, SecAggProtocolError, TensorSpecError
from fedsim.secagg.quantize import step
from fedsim.secagg.spec import TensorSpec

from .helpers import encoded_sum, make_updates, plain_weighted_sum


def _assert_exact(result, updates, weights, config, round_index, seed=0):
    """The result is the decoded plaintext integer sum of exactly the survivors' encoded inputs."""
    spec = TensorSpec.from_update(next(iter(updates.values())))
    expected, total_weight, clipped = decode_sum(
        encoded_sum(updates, weights, result.survivors, config, round_index, seed), spec, config)
    assert result.total_weight == total_weight == sum(min(weights[c], config.max_weight) for c in result.survivors)
    assert result.clipped_count == clipped
    for name in spec.names:
        assert np.array_equal(result.weighted_sum[name], expected[name])


def test_protocol_sum_equals_plain_weighted_sum():
    updates, weights = make_updates(8)
    config = SecAggConfig(clip_range=2.0)
    result, messages = run_secure_aggregation(updates, weights, config, round_index=4)
    assert result.survivors == tuple(updates) and result.dropped == () and result.mode == "protocol"
    _assert_exact(result, updates, weights, config, 4)
    plain = plain_weighted_sum(updates, weights, updates)
    bound = sum(weights.values()) * step(2.0, config.levels)
    for name, value in plain.items():
        assert np.max(np.abs(result.weighted_sum[name] - value)) < bound
        np.testing.assert_allclose(result.mean()[name], value / result.total_weight, atol=bound)
    assert {m.stage for m in messages} == {0, 1, 2, 3}


def test_thirty_percent_dropping_after_masking_still_exact():
    updates, weights = make_updates(10, seed=1)
    config = SecAggConfig(clip_range=2.0, threshold=0.6)
    dropped = frozenset({"client-1", "client-4", "client-8"})
    result, _ = run_secure_aggregation(updates, weights, config, 2, drop_after_masking=dropped)
    assert set(result.dropped) == dropped and len(result.survivors) == 7
    _assert_exact(result, updates, weights, config, 2)


def test_dropouts_at_every_stage_together():
    updates, weights = make_updates(10, seed=2)
    config = SecAggConfig(clip_range=2.0, threshold=0.5)
    result, _ = run_secure_aggregation(updates, weights, config, 0, drop_after_masking=frozenset({"client-0"}),
                                       drop_before_shares=frozenset({"client-5"}),
                                       drop_before_unmask=frozenset({"client-2", "client-9"}))
    assert set(result.dropped) == {"client-0", "client-5"}
    assert "client-2" in result.survivors  # its input arrived: its self-mask is rebuilt from shares
    _assert_exact(result, updates, weights, config, 0)


def test_sparse_graph_is_correct_with_dropouts():
    updates, weights = make_updates(24, seed=3)
    config = SecAggConfig(clip_range=2.0, neighbours="log", threshold=0.5)
    dropped = frozenset({"client-3", "client-11", "client-17"})
    result, messages = run_secure_aggregation(updates, weights, config, 1, drop_after_masking=dropped)
    _assert_exact(result, updates, weights, config, 1)
    key_lists = [m for m in messages if m.kind == "secagg_keys" and m.direction == "down"]
    assert all(len(m.keys) == 10 for m in key_lists)  # 2 * ceil(log2 24) neighbours, not 23


def test_below_threshold_aborts():
    updates, weights = make_updates(6, seed=4)
    config = SecAggConfig(clip_range=2.0, threshold=0.8)  # t = 5 of 6 holders
    with pytest.raises(SecAggAbort, match="needs 5 shares but only 4"):
        run_secure_aggregation(updates, weights, config, 0, drop_after_masking=frozenset({"client-0", "client-1"}))
    with pytest.raises(SecAggAbort, match="unmasking"):
        run_secure_aggregation(updates, weights, config, 0,
                               drop_before_unmask=frozenset({"client-0", "client-1"}))


def test_cost_mode_gives_the_same_aggregate_and_off_mode_the_exact_one():
    updates, weights = make_updates(7, seed=5)
    protocol, _ = run_secure_aggregation(updates, weights, SecAggConfig(clip_range=2.0), 3, seed=9,
                                         drop_after_masking=frozenset({"client-6"}))
    cost, _ = run_secure_aggregation(updates, weights, SecAggConfig(clip_range=2.0, mode="cost"), 3, seed=9,
                                     drop_after_masking=frozenset({"client-6"}))
    off, off_messages = run_secure_aggregation(updates, weights, SecAggConfig(mode="off"), 3,
                                               drop_after_masking=frozenset({"client-6"}))
    assert cost.survivors == protocol.survivors == off.survivors and off_messages == []
    assert cost.total_weight == protocol.total_weight == off.total_weight
    plain = plain_weighted_sum(updates, weights, off.survivors)
    for name in plain:
        assert np.array_equal(cost.weighted_sum[name], protocol.weighted_sum[name])
        np.testing.assert_allclose(off.weighted_sum[name], plain[name], rtol=1e-12)


def test_modulus_32_clipping_and_weight_cap():
    updates, weights = make_updates(5, seed=6, scale=1.0)
    weights["client-0"] = 10_000
    config = SecAggConfig(clip_range=0.5, modulus_bits=32, quant_bits=16, max_weight=1000)
    result, messages = run_secure_aggregation(updates, weights, config, 0)
    _assert_exact(result, updates, weights, config, 0)
    assert result.total_weight == 1000 + sum(weights[c] for c in updates if c != "client-0")
    coordinates = np.concatenate([u[name].ravel() for u in updates.values() for name in u])
    assert result.clipped_count == np.count_nonzero(np.abs(coordinates) > 0.5) > 0
    assert result.clipped_fraction == result.clipped_count / (5 * 17)
    masked = [m for m in messages if m.kind == "secagg_masked_input"]
    assert all(m.vector.dtype == np.uint32 and m.nbytes() == 4 * (17 + 2) for m in masked)


def test_inconsistent_inputs_raise_clear_errors():
    updates, weights = make_updates(4)
    config = SecAggConfig()
    with pytest.raises(TensorSpecError, match="weights are given for"):
        run_secure_aggregation(updates, {"client-0": 1}, config, 0)
    bad = dict(updates, **{"client-2": {"lora.A": np.zeros((4, 3)), "lora.B": np.zeros(5)}})
    with pytest.raises(TensorSpecError, match=r"client 'client-2'.*'lora.A' has shape \(4, 3\)"):
        run_secure_aggregation(bad, weights, config, 0)
    renamed = dict(updates, **{"client-3": {"lora.A": np.zeros((3, 4)), "lora.C": np.zeros(5)}})
    with pytest.raises(TensorSpecError, match=r"client 'client-3'.*missing \['lora.B'\]"):
        run_secure_aggregation(renamed, weights, SecAggConfig(mode="cost"), 0)
    with pytest.raises(TensorSpecError, match="positive integer"):
        run_secure_aggregation(updates, dict(weights, **{"client-1": 2.5}), config, 0)


def test_a_lone_survivor_is_never_unmasked():
    updates, weights = make_updates(2, seed=7)
    for mode in ("protocol", "cost"):
        with pytest.raises(SecAggAbort, match="needs 2 shares but only 1"):
            run_secure_aggregation(updates, weights, SecAggConfig(mode=mode), 0,
                                   drop_after_masking=frozenset({"client-0"}))


@pytest.mark.parametrize("mode", ["protocol", "cost", "off"])
def test_dropouts_must_name_cohort_clients(mode):
    updates, weights = make_updates(3)
    with pytest.raises(SecAggProtocolError, match="outside the cohort"):
        run_secure_aggregation(updates, weights, SecAggConfig(mode=mode), 0, drop_after_masking=frozenset({"x"}))
