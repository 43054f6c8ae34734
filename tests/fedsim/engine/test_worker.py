"""The worker runtime: client state store, resume of stateful clients, shared base models."""
import numpy as np

from fedsim.config import validate
from fedsim.data.federated import build_federated_data
from fedsim.engine.coordinator import RoundEngine
from fedsim.engine.evaluation import client_accuracy
from fedsim.engine.inprocess import InProcessExecutor
from fedsim.engine.worker import ClientStateStore


def test_state_store_keeps_two_versions_written_fsynced_and_atomically(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr("fedsim.results.os.fsync", lambda fd: synced.append(fd))
    store = ClientStateStore(tmp_path, committed_round=0)
    for round_index in range(4):
        store.put(7, round_index, {"adapter": {"w": np.full(2, round_index, np.float32)}})
    assert sorted(p.name for p in (tmp_path / "7").iterdir()) == ["r000002.pt", "r000003.pt"]
    assert len(synced) == 4
    assert store.get(7)["adapter"]["w"][0] == 3  # what this store wrote, from memory
    assert ClientStateStore(None, committed_round=0).get(7) == {}


def test_a_round_uses_only_state_versions_of_completed_rounds(tmp_path):
    """Round t (0-based) runs after t completed rounds and writes r{t}: it may load r0..r{t-1}; an
    r{t} on disk was written by an interrupted attempt at round t and must not be used."""
    writer = ClientStateStore(tmp_path, committed_round=0)
    for round_index in (0, 1):
        writer.put(7, round_index, {"adapter": {"w": np.full(2, round_index, np.float32)}})
    assert ClientStateStore(tmp_path, committed_round=2).get(7)["adapter"]["w"][0] == 1  # round 2: r1
    assert ClientStateStore(tmp_path, committed_round=1).get(7)["adapter"]["w"][0] == 0  # round 1 redone: r0
    assert ClientStateStore(tmp_path, committed_round=0).get(7) == {}  # round 0 redone: nothing


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


def run_all(engine):
    engine.evaluate_start()
    while not engine.done:
        engine.run_round()
    return engine


def test_an_interrupted_round_is_redone_from_the_state_before_it(tmp_path):
    full = run_all(local_engine(tmp_path / "full"))
    cut = tmp_path / "cut"
    first = local_engine(cut)
    first.evaluate_start()
    first.run_round()
    committed, rows_committed = (cut / "checkpoint.pkl").read_bytes(), (cut / "rows.jsonl").read_text()
    first.run_round()  # round 2 writes its clients' states (r000001) and rows ...
    (cut / "checkpoint.pkl").write_bytes(committed)  # ... and dies before its checkpoint lands
    (cut / "checkpoint.pkl.tmp").write_bytes(b"half a checkpoint")
    assert list(cut.glob("client_state/*/r000001.pt"))
    resumed = local_engine(cut, committed=1)
    assert resumed.restore() and resumed.completed == 1
    assert not list(cut.rglob("*.tmp"))
    assert (cut / "rows.jsonl").read_text() == rows_committed
    run_all(resumed)
    assert [row["round"] for row in resumed.rows] == [0, 1, 2, 3]  # round 0 evaluated once
    assert strip(resumed.rows) == strip(full.rows)
    worker = resumed.executor.workers[0]
    assert set(worker.models) == {"llama-0.3m"}  # one base model per preset, shared by all clients
    trained = [c for c, state in worker.store.states.items() if state]
    assert trained and all("optimizer" in worker.store.get(c) for c in trained)


def test_round_zero_scores_each_clients_starting_model(tmp_path):
    """Row 0 scores every preset's starting model once; it equals scoring each client's own model
    before training, has no bytes, and the first trained round follows it."""
    engine = local_engine(tmp_path)
    start = engine.evaluate_start()
    per_client = engine.evaluator.client_counts(engine.globals, engine.worker_of)
    expected = np.mean([client_accuracy(per_client[c]["answer"],
                                        dict(zip(engine.data.domains, engine.data.domain_weights[c].tolist())))
                        for c in engine.evaluator.clients])
    assert start["round"] == 0 and start["accuracy"] == start["accuracy/answer"] == expected
    assert start["bytes_up_total"] == start["bytes_down_total"] == 0 and start["loss"] is None
    assert engine.completed == 0 and engine.evaluate_start() is None
    assert engine.run_round()["round"] == 1
