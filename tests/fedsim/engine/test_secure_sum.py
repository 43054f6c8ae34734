"""Secure aggregation as the engine runs it: the protocol's sum is the plaintext weighted sum with and
without dropouts, cost mode predicts it byte for byte, and nothing the coordinator receives reveals a
client's update (masked inputs look like uniform noise mod 2^k; no owner's two secrets are both revealed).
"""
import numpy as np
import pytest
from scipy.stats import chi2

from fedsim.comm import SERVER
from fedsim.config import validate
from fedsim.data.federated import build_federated_data
from fedsim.engine.coordinator import RoundEngine
from fedsim.engine.inprocess import InProcessExecutor
from fedsim.engine.secure_sum import ClientSide, dropped_after_masking, quantization_rng, run_cost, run_protocol
from fedsim.secagg import (Dropouts, EncryptedShares, MaskedInput, PeerKeys, PublicKeys, SecAggAbort, SecAggConfig,
                           SecAggProtocolError, TensorSpec, TensorSpecError, UnmaskShares, decode_sum, encode_update)
from fedsim.secagg.encoding import META_LENGTH
from fedsim.secagg.quantize import step
from fedsim.secagg.sizes import MESSAGE_ROUNDS

SIZE = 300


# ---- one aggregation in this process, through the engine's own ClientSide / run_protocol / run_cost

def make_updates(n_clients: int, seed: int = 0, scale: float = 0.3) -> tuple[dict, dict]:
    """{client: {name: array}} with two tensors, and integer weights in 1..50."""
    rng = np.random.default_rng(seed)
    updates = {f"client-{i}": {"lora.A": rng.normal(0.0, scale, (3, 4)).astype(np.float32),
                               "lora.B": rng.normal(0.0, scale, (5,)).astype(np.float32)}
               for i in range(n_clients)}
    weights = {client: int(rng.integers(1, 51)) for client in updates}
    return updates, weights


def plain_weighted_sum(updates: dict, weights: dict, clients) -> dict[str, np.ndarray]:
    """sum_k w_k x_k in float64 over `clients`."""
    names = next(iter(updates.values())).keys()
    return {name: sum(weights[c] * updates[c][name].astype(np.float64) for c in clients) for name in names}


def encoded(update: dict, weight: int, config: SecAggConfig, client, round_index: int, seed: int = 0) -> np.ndarray:
    """A client's unmasked encoding [w*q, w, clipped], with the stream its SecAggClient uses."""
    return encode_update(update, weight, TensorSpec.from_update(update), config,
                         quantization_rng(seed, client, round_index), str(client))


def encoded_sum(updates: dict, weights: dict, clients, config: SecAggConfig, round_index: int) -> np.ndarray:
    """The plaintext integer sum of the clients' encodings."""
    spec = TensorSpec.from_update(next(iter(updates.values())))
    total = np.zeros(spec.total + META_LENGTH, dtype=config.dtype)
    for client in clients:
        total += encoded(updates[client], weights[client], config, client, round_index)
    return total


def aggregate(updates: dict, weights: dict, config: SecAggConfig, round_index: int,
              dropouts: Dropouts = Dropouts(), seed: int = 0):
    """(result, every protocol message sent) with all clients on one ClientSide (one worker)."""
    side = ClientSide()
    handed = {c: side.hold(c, round_index, updates[c], weights[c], config, seed) for c in updates}
    spec = TensorSpec.from_update(next(iter(updates.values())))
    sent = []
    if config.mode == "protocol":
        result = run_protocol(config, round_index, spec, handed, dropouts, side.stage, sent)
    else:
        result = run_cost(config, round_index, spec, handed, dropouts, sent)
    return result, [message.payload for message in sent]


def assert_exact(result, updates, weights, config, round_index):
    """The result is the decoded plaintext integer sum of exactly the survivors' encoded inputs."""
    spec = TensorSpec.from_update(next(iter(updates.values())))
    expected, total_weight, clipped = decode_sum(
        encoded_sum(updates, weights, result.survivors, config, round_index), spec, config)
    assert result.total_weight == total_weight == sum(min(weights[c], config.max_weight) for c in result.survivors)
    assert result.clipped_count == clipped
    for name in spec.names:
        assert np.array_equal(result.weighted_sum[name], expected[name])


def test_protocol_sum_equals_plain_weighted_sum():
    updates, weights = make_updates(8)
    config = SecAggConfig(clip_range=2.0)
    result, messages = aggregate(updates, weights, config, round_index=4)
    assert set(result.survivors) == set(updates) and result.dropped == () and result.mode == "protocol"
    assert_exact(result, updates, weights, config, 4)
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
    result, _ = aggregate(updates, weights, config, 2, Dropouts(before_input=dropped))
    assert set(result.dropped) == dropped and len(result.survivors) == 7
    assert_exact(result, updates, weights, config, 2)


def test_dropouts_at_every_stage_together():
    updates, weights = make_updates(10, seed=2)
    config = SecAggConfig(clip_range=2.0, threshold=0.5)
    dropouts = Dropouts(before_shares=frozenset({"client-5"}), before_input=frozenset({"client-0"}),
                        before_unmask=frozenset({"client-2", "client-9"}))
    result, _ = aggregate(updates, weights, config, 0, dropouts)
    assert set(result.dropped) == {"client-0", "client-5"}
    assert "client-2" in result.survivors  # its input arrived: its self-mask is rebuilt from shares
    assert_exact(result, updates, weights, config, 0)


def test_sparse_graph_is_correct_with_dropouts():
    updates, weights = make_updates(24, seed=3)
    config = SecAggConfig(clip_range=2.0, neighbours="log", threshold=0.5)
    dropped = frozenset({"client-3", "client-11", "client-17"})
    result, messages = aggregate(updates, weights, config, 1, Dropouts(before_input=dropped))
    assert_exact(result, updates, weights, config, 1)
    key_lists = [m for m in messages if m.kind == "secagg_keys" and m.direction == "down"]
    assert all(len(m.keys) == 10 for m in key_lists)  # 2 * ceil(log2 24) neighbours, not 23


@pytest.mark.parametrize("mode", ["protocol", "cost"])
def test_below_threshold_aborts(mode):
    updates, weights = make_updates(6, seed=4)
    config = SecAggConfig(clip_range=2.0, threshold=0.8, mode=mode)  # t = 5 of 6 holders
    with pytest.raises(SecAggAbort, match="needs 5 shares but only 4"):
        aggregate(updates, weights, config, 0, Dropouts(before_input=frozenset({"client-0", "client-1"})))
    with pytest.raises(SecAggAbort, match="unmasking"):
        aggregate(updates, weights, config, 0, Dropouts(before_unmask=frozenset({"client-0", "client-1"})))


@pytest.mark.parametrize("mode", ["protocol", "cost"])
def test_a_lone_survivor_is_never_unmasked(mode):
    updates, weights = make_updates(2, seed=7)
    with pytest.raises(SecAggAbort, match="needs 2 shares but only 1"):
        aggregate(updates, weights, SecAggConfig(mode=mode), 0, Dropouts(before_input=frozenset({"client-0"})))


@pytest.mark.parametrize("n, neighbours, dropouts", [
    (6, None, Dropouts()),
    (10, None, Dropouts(before_input=frozenset({"client-3", "client-7", "client-9"}))),
    (20, "log", Dropouts(before_shares=frozenset({"client-5"}), before_input=frozenset({"client-2"}),
                         before_unmask=frozenset({"client-11"}))),
    (12, 4, Dropouts(before_unmask=frozenset({"client-0"}))),
])
def test_cost_mode_gives_the_protocols_messages_and_aggregate(n, neighbours, dropouts):
    updates, weights = make_updates(n, seed=n)
    protocol = SecAggConfig(clip_range=2.0, neighbours=neighbours, threshold=0.5)
    cost = SecAggConfig(clip_range=2.0, neighbours=neighbours, threshold=0.5, mode="cost")
    protocol_result, measured = aggregate(updates, weights, protocol, 5, dropouts, seed=9)
    cost_result, predicted = aggregate(updates, weights, cost, 5, dropouts, seed=9)

    def ledger(messages):
        return [(m.kind, m.stage, m.sender, m.receiver, m.nbytes()) for m in messages]

    assert ledger(predicted) == ledger(measured)
    assert len({m.stage for m in measured}) == MESSAGE_ROUNDS
    assert cost_result.survivors == protocol_result.survivors
    assert cost_result.total_weight == protocol_result.total_weight
    for name in protocol_result.weighted_sum:
        assert np.array_equal(cost_result.weighted_sum[name], protocol_result.weighted_sum[name])


def test_modulus_32_clipping_and_weight_cap():
    updates, weights = make_updates(5, seed=6, scale=1.0)
    weights["client-0"] = 10_000
    config = SecAggConfig(clip_range=0.5, modulus_bits=32, quant_bits=16, max_weight=1000)
    result, messages = aggregate(updates, weights, config, 0)
    assert_exact(result, updates, weights, config, 0)
    assert result.total_weight == 1000 + sum(weights[c] for c in updates if c != "client-0")
    coordinates = np.concatenate([u[name].ravel() for u in updates.values() for name in u])
    assert result.clipped_count == np.count_nonzero(np.abs(coordinates) > 0.5) > 0
    assert result.clipped_fraction == result.clipped_count / (5 * 17)
    masked = [m for m in messages if m.kind == "secagg_masked_input"]
    assert all(m.vector.dtype == np.uint32 and m.nbytes() == 4 * (17 + 2) for m in masked)


@pytest.mark.parametrize("mode", ["protocol", "cost"])
def test_bad_weights_and_dropouts_are_named(mode):
    updates, weights = make_updates(3)
    with pytest.raises(SecAggProtocolError, match="outside the cohort"):
        aggregate(updates, weights, SecAggConfig(mode=mode), 0, Dropouts(before_input=frozenset({"x"})))
    with pytest.raises(TensorSpecError, match="positive integer"):
        aggregate(updates, dict(weights, **{"client-1": 2.5}), SecAggConfig(mode=mode), 0)


# ---- what the server sees: values, not types

def uniformity_failures(vector: np.ndarray, bits: int) -> list[str]:
    """Why `vector` does not look like uniform noise mod 2^bits (empty if it does): the top and the
    low bit must each be set in 45-55% of the coordinates, and the top-byte histogram must pass a
    chi-square test at p = 1e-9. For >= 4096 uniform coordinates each bit bound is > 6 standard
    deviations away; a quantised update (small integers) has its top bit never set."""
    values = vector.astype(np.uint64)
    failures = []
    for name, bit in (("top", bits - 1), ("low", 0)):
        share = float(np.mean((values >> np.uint64(bit)) & np.uint64(1)))
        if not 0.45 <= share <= 0.55:
            failures.append(f"{name} bit set in {share:.3f} of coordinates")
    counts = np.bincount(((values >> np.uint64(bits - 8)) & np.uint64(0xFF)).astype(np.int64), minlength=256)
    expected = values.size / 256
    statistic = float(np.sum((counts - expected) ** 2 / expected))
    if statistic > chi2.isf(1e-9, 255):
        failures.append(f"top-byte chi-square {statistic:.0f}")
    return failures


def test_uniformity_check_accepts_uniform_and_rejects_quantised_values():
    rng = np.random.default_rng(0)
    assert uniformity_failures(rng.integers(0, 2**64, 4096, dtype=np.uint64), 64) == []
    assert uniformity_failures(rng.integers(0, 2**32, 4096, dtype=np.uint64).astype(np.uint32), 32) == []
    update = {"w": rng.normal(0.0, 0.01, 4096).astype(np.float32)}
    plain = encoded(update, 7, SecAggConfig(clip_range=0.2), 0, 0)
    assert uniformity_failures(plain, 64) != []


def test_masked_inputs_look_uniform_and_differences_reveal_nothing():
    m = 4096
    rng = np.random.default_rng(0)
    updates = {0: {"w": np.zeros(m)}, 1: {"w": np.full(m, 0.5)}, 2: {"w": rng.uniform(-1, 1, m)},
               3: {"w": rng.uniform(-1, 1, m)}, 4: {"w": np.zeros(m)}}
    weights = {client: 3 for client in updates}
    config = SecAggConfig()
    _, messages = aggregate(updates, weights, config, 0, Dropouts(before_input=frozenset({4})))
    received = [message for message in messages if message.receiver == SERVER]
    assert {type(message) for message in received} == {PublicKeys, EncryptedShares, MaskedInput, UnmaskShares}
    masked = {message.sender: message.vector for message in received if isinstance(message, MaskedInput)}
    assert set(masked) == {0, 1, 2, 3}
    for client, vector in masked.items():
        plain = encoded(updates[client], weights[client], config, client, 0)
        assert uniformity_failures(plain, 64) != []
        assert uniformity_failures(vector, 64) == []
        assert np.count_nonzero(vector == plain) <= 2  # 1 in 2^64 per coordinate by chance
        if updates[client]["w"].std():
            assert abs(np.corrcoef(vector[:m].astype(np.float64), updates[client]["w"])[0, 1]) < 0.1
    # one masked input minus another is no better: still uniform, although both updates are constant
    assert uniformity_failures(masked[0] - masked[1], 64) == []


# ---- inside the round engine (fedavg_vector workload, in-process workers)

class RecordingExecutor(InProcessExecutor):
    """Passes every call through and keeps what came back to the coordinator, per stage; before the
    mask stage it also notes each client's unmasked encoding, which never leaves the worker."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outcomes: list = []
        self.inboxes: dict[str, dict] = {}
        self.replies: dict[str, dict] = {}
        self.unmasked: dict[int, np.ndarray] = {}

    def run_clients(self, per_worker, globals_by_preset):
        outcomes = super().run_clients(per_worker, globals_by_preset)
        self.outcomes += outcomes
        return outcomes

    def secagg_stage(self, stage, per_worker):
        if stage == "mask":
            for worker, inbox in per_worker.items():
                side = self.workers[worker].secure.side
                for client in inbox:
                    update, weight = side.updates[client]
                    self.unmasked[client] = encoded(update, weight, side.clients[client].config, client,
                                                    side.clients[client].round, seed=5)
        replies = super().secagg_stage(stage, per_worker)
        self.inboxes[stage] = {c: m for inbox in per_worker.values() for c, m in inbox.items()}
        self.replies[stage] = dict(replies)
        return replies


def engine_for(mode, executor_cls=InProcessExecutor, workers=2, size=SIZE, **secagg):
    config = validate({"algorithms": ["fedavg_vector"], "rounds": 2, "seed": 5,
                       "clients": {"num": 30, "per_round": 10}, "synthetic": {"vector_size": size},
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
    quantum = 2 * 0.2 / (2**24 - 1)
    np.testing.assert_allclose(secure, plain, atol=4 * quantum)
    assert rows[0]["secagg"] == "protocol" and rows[0]["bytes/up/secagg_masked_input"] > 0


def test_cost_mode_matches_protocol_bytes_and_result():
    protocol_w, protocol_rows = run(engine_for("protocol"))
    cost_w, cost_rows = run(engine_for("cost"))
    np.testing.assert_array_equal(protocol_w, cost_w)
    keys = [k for k in protocol_rows[0] if k.startswith("bytes")]
    assert [protocol_rows[0][k] for k in keys] == [cost_rows[0][k] for k in keys]


def test_dropouts_after_masking_leave_the_survivors_exact_sum():
    from fedsim.clock import sample_online
    from fedsim.rng import numpy_stream

    engine = engine_for("protocol", dropout_rate=0.3)
    row = engine.run_round()
    assert 0 < row["clients_dropped"] < 10 and not row["secagg_aborted"]
    assert row["clients_succeeded"] == 10 - row["clients_dropped"]
    plain = engine_for("off", dropout_rate=0.3)
    # Recompute the survivors' mean in the clear from the same client streams.
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
    engine = engine_for("protocol", executor_cls=RecordingExecutor, size=4096)
    engine.run_round()
    executor = engine.executor
    for outcome in executor.outcomes:
        assert outcome.messages == [] and isinstance(outcome.secagg, PublicKeys)
    allowed = {"share": EncryptedShares, "mask": MaskedInput, "unmask": UnmaskShares}
    for stage, replies in executor.replies.items():
        assert all(isinstance(reply, allowed[stage]) for reply in replies.values())
    masked = executor.replies["mask"]
    assert len(masked) == 10 and set(masked) == set(executor.unmasked)
    for client, reply in masked.items():
        plain = executor.unmasked[client]
        assert reply.vector.shape == plain.shape == (4096 + META_LENGTH,)
        assert uniformity_failures(plain, 64) != []  # the encoding alone is far from uniform...
        assert uniformity_failures(reply.vector, 64) == []  # ...what arrives is not
        assert np.count_nonzero(reply.vector == plain) <= 2


def test_unmasking_never_reveals_both_secrets_of_one_owner():
    """Bonawitz et al. round 4: the server gets self-mask (b) shares only of clients whose masked
    input arrived (U3) and mask-key (s_sk) shares only of clients that sent shares but no input
    (U2 minus U3); never both for one owner, within one reply or across all replies."""
    engine = engine_for("protocol", executor_cls=RecordingExecutor, dropout_rate=0.3)
    row = engine.run_round()
    executor = engine.executor
    assert not row["secagg_aborted"]
    index = {client: message.index for client, message in executor.inboxes["share"].items()
             if isinstance(message, PeerKeys)}
    shared = {index[c] for c in executor.replies["share"]}
    arrived = {index[c] for c in executor.replies["mask"]}
    dropped = shared - arrived
    assert len(dropped) == row["clients_dropped"] > 0
    replies = executor.replies["unmask"]
    assert set(replies) == {c for c in index if index[c] in arrived}
    b_owners: set[int] = set()
    s_owners: set[int] = set()
    for reply in replies.values():
        b, s = set(reply.self_mask_shares), set(reply.mask_key_shares)
        assert not b & s and b <= arrived and s <= dropped
        b_owners |= b
        s_owners |= s
    assert not b_owners & s_owners
    assert b_owners == arrived and s_owners == dropped  # complete graph: every holder answers for every owner
