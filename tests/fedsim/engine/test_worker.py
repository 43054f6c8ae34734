"""The worker runtime: client state store, resume of stateful clients, shared base models."""
import numpy as np

from fedsim.config import validate
from fedsim.data.federated import build_federated_data
from fedsim.engine.coordinator import RoundEngine
from fedsim.engine.inprocess import InProcessExecutor
from fedsim.engine.worker import ClientStateStore


def test_state_store_keeps_two_versions_and_respects_the_committed_round(tmp_path):
    store = ClientStateStore(tmp_path, committed_round=0)
    for round_index in range(4):
        store.put(7, round_index, {"adapter": {"w": np.full(2, round_index, np.float32)}})
    assert sorted(p.name for p in (tmp_path / "7").iterdir()) == ["r000002.pt", "r000003.pt"]
    assert ClientStateStore(tmp_path, committed_round=2).get(7)["adapter"]["w"][0] == 2
    assert ClientStateStore(tmp_path, committed_round=5).get(7)["adapter"]["w"][0] == 3
    assert ClientStateStore(tmp_path, committed_round=1).get(7) == {}
    assert ClientStateStore(None, committed_round=0).get(7) == {}


def local_engine(run_dir, committed=0):
    config = validate({"algorithms": ["local"], "rounds": 3, "seed": 9,
                       "clients": {"num": 4, "per_round": 2, "presets": {"llama-0.3m": 1}},
                       "task": {"test_size": 8, "public_size": 0, "train_per_client": 8},
                       "train": {"local_steps": 2, "batch_size": 4, "max_len": 64, "keep_optimizer_state": True},
                       "eval": {"every": 3, "mode": "answer", "max_clients": 4}})
    data = build_federated_data(config)
    executor = InProcessExecutor(config, "local", data, str(run_dir), 1, committed)
    return RoundEngine(config, "local", data, executor, str(run_dir))


def strip(rows):
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in rows]


def test_stateful_clients_resume_to_the_same_result(tmp_path):
    full = local_engine(tmp_path / "full")
    while not full.done:
        full.run_round()
    first = local_engine(tmp_path / "cut")
    first.run_round()
    resumed = local_engine(tmp_path / "cut", committed=1)
    resumed.restore()
    while not resumed.done:
        resumed.run_round()
    assert strip(resumed.rows) == strip(full.rows)
    worker = resumed.executor.workers[0]
    assert set(worker.models) == {"llama-0.3m"}  # one base model per preset, shared by all clients
    trained = [c for c, state in worker.store.states.items() if state]
    assert trained and all("optimizer" in worker.store.get(c) for c in trained)
