"""Secure aggregation inside the round engine (fedavg_vector workload, in-process workers)."""
import numpy as np

from fedsim.config import validate
from fedsim.data.federated import build_federated_data
from fedsim.engine.coordinator import RoundEngine
from fedsim.engine.inprocess import InProcessExecutor
from fedsim.secagg import EncryptedShares, MaskedInput, PublicKeys, UnmaskShares

SIZE = 300


class RecordingExecutor(InProcessExecutor):
    """Passes every call through and keeps what came back to the coordinator."""

    received: list

    def run_clients(self, per_worker, globals_by_preset):
        outcomes = super().run_clients(per_worker, globals_by_preset)
        self.received = getattr(self, "received", []) + [o for o in outcomes]
        return outcomes

    def secagg_stage(self, stage, per_worker):
        replies = super().secagg_stage(stage, per_worker)
        self.received = getattr(self, "received", []) + list(replies.values())
        return replies


def engine_for(mode, executor_cls=InProcessExecutor, workers=2, **secagg):
    config = validate({"algorithms": ["fedavg_vector"], "rounds": 2, "seed": 5,
                       "clients": {"num": 30, "per_round": 10}, "synthetic": {"vector_size": SIZE},
                       "task": {"test_size": 4, "public_size": 0},
                       "secagg": {"mode": mode, "clip_range": 0.2, **secagg}})
    data = build_federated_data(config)
    executor = executor_cls(config, "fedavg_vector", data, None, num_workers=workers)
    return RoundEngine(config, "fedavg_vector", data, executor, None)


def run(engine):
    rows = [engine.run_round() for _ in range(engine.config.rounds)]
    return engine.globals["llama-1m"]["w"], rows


def test_protocol_equals_plain_mean_within_quantization_error():
    plain, _ = run(engine_for("off"))
    secure, rows = run(engine_for("protocol"))
    step = 2 * 0.2 / (2**24 - 1)
    np.testing.assert_allclose(secure, plain, atol=4 * step)
    assert rows[0]["secagg"] == "protocol" and rows[0]["bytes/up/secagg_masked_input"] > 0


def test_cost_mode_matches_protocol_bytes_and_result():
    protocol_w, protocol_rows = run(engine_for("protocol"))
    cost_w, cost_rows = run(engine_for("cost"))
    np.testing.assert_array_equal(protocol_w, cost_w)
    keys = [k for k in protocol_rows[0] if k.startswith("bytes")]
    assert [protocol_rows[0][k] for k in keys] == [cost_rows[0][k] for k in keys]


def test_dropouts_after_masking_leave_the_survivors_exact_sum():
    engine = engine_for("protocol", dropout_rate=0.3)
    row = engine.run_round()
    assert 0 < row["clients_dropped"] < 10 and not row["secagg_aborted"]
    assert row["clients_succeeded"] == 10 - row["clients_dropped"]
    plain = engine_for("off", dropout_rate=0.3)
    # Recompute the survivors' mean in the clear from the same client streams.
    from fedsim.engine.secure_sum import dropped_after_masking
    from fedsim.clock import sample_online
    from fedsim.rng import numpy_stream

    clients = sorted(sample_online(plain.profiles, 5, 0, 10))
    lost = dropped_after_masking(clients, 0.3, 5, 0)
    survivors = [c for c in clients if c not in lost]
    assert len(survivors) == row["clients_succeeded"]
    expected = np.mean([numpy_stream(5, c, 0, "work").standard_normal(SIZE, dtype=np.float32) * np.float32(0.01)
                        for c in survivors], axis=0)
    np.testing.assert_allclose(engine.globals["llama-1m"]["w"], expected, atol=1e-6)


def test_below_threshold_aborts_and_keeps_the_global():
    engine = engine_for("protocol", dropout_rate=0.5, threshold=10)
    before = engine.globals["llama-1m"]["w"].copy()
    row = engine.run_round()
    assert row["secagg_aborted"] == ["llama-1m"] and row["clients_succeeded"] == 0
    np.testing.assert_array_equal(engine.globals["llama-1m"]["w"], before)
    assert row["bytes/up/secagg_keys"] > 0  # what was sent before the abort is still counted


def test_coordinator_never_receives_an_unmasked_update():
    engine = engine_for("protocol", executor_cls=RecordingExecutor)
    engine.run_round()
    allowed = (PublicKeys, EncryptedShares, MaskedInput, UnmaskShares)
    for item in engine.executor.received:
        if hasattr(item, "messages"):  # a ClientOutcome
            assert item.messages == [] and isinstance(item.secagg, PublicKeys)
        else:
            assert isinstance(item, allowed)
            if isinstance(item, MaskedInput):
                assert item.vector.dtype == np.uint64
