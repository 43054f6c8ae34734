"""The server step: after aggregation the algorithm may change the globals, keep server state, send
several message kinds per client and report metrics; all of it counted, timed and checkpointed."""
import numpy as np
import pytest

from fedsim.algorithms import REGISTRY
from fedsim.algorithms.synthetic import FedAvgVector
from fedsim.comm import SERVER, Message
from fedsim.config import validate
from fedsim.data.federated import build_federated_data
from fedsim.engine.coordinator import RoundEngine
from fedsim.engine.inprocess import InProcessExecutor

SIZE = 64
NOTE = np.arange(10, dtype=np.float32)


class VectorWithServerStep(FedAvgVector):
    """FedAvg of a vector, then a server step that adds a keyed draw to the global and thanks each client."""

    name = "vector_server"

    def initial_server_state(self):
        return {"steps": 0, "thanked": []}

    def downloads(self, client, preset, wire, state):
        return super().downloads(client, preset, wire, state) + [Message("note", SERVER, client, NOTE)]

    def client_step(self, ctx):
        assert np.array_equal(ctx.received("note"), NOTE)
        return super().client_step(ctx)

    def server_step(self, ctx):
        for preset, payload in ctx.globals.items():
            ctx.globals[preset] = {"w": payload["w"] + ctx.rng("server-draw").standard_normal(SIZE).astype(np.float32)}
        ctx.state["steps"] += 1
        clients = sorted(o.client for o in ctx.outcomes)
        ctx.state["thanked"].append(clients)
        ctx.sends += [Message("thanks", SERVER, c, "thank you") for c in clients]
        ctx.metrics["server_steps"] = ctx.state["steps"]


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    monkeypatch.setitem(REGISTRY, "vector_server", f"{__name__}:VectorWithServerStep")


def make_engine(run_dir=None, rounds=4):
    config = validate({"algorithms": ["fedavg_vector"], "rounds": rounds, "seed": 2,
                       "clients": {"num": 20, "per_round": 5}, "synthetic": {"vector_size": SIZE},
                       "task": {"test_size": 4, "public_size": 6}})
    data = build_federated_data(config)
    executor = InProcessExecutor(config, "vector_server", data, run_dir, num_workers=2)
    return RoundEngine(config, "vector_server", data, executor, run_dir)


def test_the_server_step_changes_globals_sends_messages_and_reports():
    engine = make_engine()
    row = engine.run_round()
    assert row["server_steps"] == 1 and row["server_step_s"] > 0
    assert row["bytes/down/thanks"] == 5 * len("thank you")
    assert row["bytes/down/note"] == 5 * NOTE.nbytes
    assert row["bytes/down/adapter"] == 5 * (SIZE * 4 + len("w"))
    assert row["sim_round_s"] >= row["server_step_s"]
    assert len(engine.server_state["thanked"][0]) == 5


def test_the_server_sees_the_public_examples():
    engine = make_engine()
    seen = []
    engine.algorithm.server_step = lambda ctx: seen.append(len(ctx.public))
    engine.has_server_step = True
    engine.run_round()
    assert seen == [6]


def test_server_state_survives_a_resume(tmp_path):
    straight = make_engine()
    while not straight.done:
        straight.run_round()
    first = make_engine(str(tmp_path))
    first.run_round(), first.run_round()
    resumed = make_engine(str(tmp_path))
    assert resumed.restore() and resumed.completed == 2
    while not resumed.done:
        resumed.run_round()
    assert resumed.server_state == straight.server_state
    np.testing.assert_array_equal(resumed.globals["llama-1m"]["w"], straight.globals["llama-1m"]["w"])
