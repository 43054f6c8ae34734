"""The round engine over in-process workers, with the model-free fedavg_vector workload."""
import numpy as np
import pytest

from fedsim.clock import sample_online, ClientProfiles
from fedsim.config import validate
from fedsim.data.federated import build_federated_data
from fedsim.engine.coordinator import RoundEngine
from fedsim.engine.inprocess import InProcessExecutor
from fedsim.rng import numpy_stream

SIZE = 1000


def make_engine(tmp_path=None, workers=1, **overrides):
    raw = {"algorithms": ["fedavg_vector"], "rounds": 4, "seed": 3,
           "clients": {"num": 50, "per_round": 8}, "synthetic": {"vector_size": SIZE},
           "task": {"test_size": 4, "public_size": 0}}
    for section, values in overrides.items():
        raw.setdefault(section, {}).update(values) if isinstance(values, dict) else raw.update({section: values})
    config = validate(raw)
    data = build_federated_data(config)
    run_dir = str(tmp_path) if tmp_path else None
    executor = InProcessExecutor(config, "fedavg_vector", data, run_dir, num_workers=workers)
    return RoundEngine(config, "fedavg_vector", data, executor, run_dir)


def run_all(engine):
    while not engine.done:
        engine.run_round()
    return engine


def strip_wall(rows):
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in rows]


def test_aggregate_matches_a_direct_computation():
    engine = run_all(make_engine())
    expected = np.zeros(SIZE, np.float64)
    profiles = ClientProfiles.draw(engine.config.clients, engine.config.seed)
    for round_index in range(engine.config.rounds):
        clients = sorted(sample_online(profiles, 3, round_index, 8))
        noise = [numpy_stream(3, c, round_index, "work").standard_normal(SIZE, dtype=np.float32) * np.float32(0.01)
                 for c in clients]
        expected += np.mean(np.stack(noise).astype(np.float64), axis=0)
    np.testing.assert_allclose(engine.globals["llama-1m"]["w"], expected, atol=1e-6)


def test_same_metrics_with_one_and_two_workers():
    one, two = run_all(make_engine(workers=1)), run_all(make_engine(workers=2))
    np.testing.assert_array_equal(one.globals["llama-1m"]["w"], two.globals["llama-1m"]["w"])
    assert strip_wall(one.rows) == strip_wall(two.rows)
    assert set(two.worker_of.values()) == {0, 1}


def test_bytes_are_counted_per_client_and_direction():
    row = make_engine().run_round()
    per_message = SIZE * 4 + len("w")
    assert row["bytes/down/adapter"] == 8 * per_message
    assert row["bytes/up/vector_delta"] == 8 * per_message
    assert row["bytes_up"] == row["bytes_down"] == 8 * per_message
    assert row["clients_selected"] == row["clients_succeeded"] == 8


def test_over_commit_drops_the_slowest_and_clock_advances():
    engine = make_engine(clients={"over_commit": 1.5, "deadline_s": 1e9})
    row = engine.run_round()
    assert row["clients_sampled"] == 12 and row["clients_selected"] == 8 and row["clients_straggled"] == 4
    assert row["sim_round_s"] > 0 and row["sim_time_s"] == pytest.approx(row["sim_round_s"])


def test_clients_keep_their_worker():
    engine = make_engine(workers=2, clients={"num": 10, "per_round": 10})
    engine.run_round()
    first = dict(engine.worker_of)
    engine.run_round()
    assert engine.worker_of == first


def test_resume_reaches_the_same_result(tmp_path):
    uninterrupted = run_all(make_engine())
    first = make_engine(tmp_path)
    first.run_round()
    first.run_round()
    resumed = make_engine(tmp_path)
    resumed.restore()
    assert resumed.completed == 2
    run_all(resumed)
    np.testing.assert_array_equal(resumed.globals["llama-1m"]["w"], uninterrupted.globals["llama-1m"]["w"])
    assert strip_wall(resumed.rows) == strip_wall(uninterrupted.rows)
    assert (tmp_path / "rows.jsonl").read_text().count("\n") == 4


def test_restore_rewrites_rows_and_privacy_ledger_and_drops_leftovers(tmp_path):
    central = {"clients": {"sampling": "poisson"},
               "privacy": {"central": {"clip_norm": 1.0, "noise_multiplier": 1.0}}}
    first = make_engine(tmp_path, **central)
    first.run_round()
    names = ("checkpoint.pkl", "rows.jsonl", "privacy.jsonl")
    committed = {name: (tmp_path / name).read_bytes() for name in names}
    first.run_round()
    assert (tmp_path / "privacy.jsonl").read_bytes() != committed["privacy.jsonl"]
    (tmp_path / "checkpoint.pkl").write_bytes(committed["checkpoint.pkl"])  # round 2 never checkpointed
    (tmp_path / "privacy.jsonl.tmp").write_text("{")
    resumed = make_engine(tmp_path, **central)
    assert resumed.restore() and resumed.completed == 1
    assert {name: (tmp_path / name).read_bytes() for name in names} == committed
    assert not list(tmp_path.glob("*.tmp"))
    (tmp_path / "checkpoint.pkl").unlink()  # no checkpoint: nothing was committed
    assert not make_engine(tmp_path, **central).restore()
    assert not (tmp_path / "rows.jsonl").exists() and not (tmp_path / "privacy.jsonl").exists()
