"""FedMKT in process: SLMs on two tokenizers (the built-in BPE and Unigram) and an LLM teach each
other on the public examples; top-k lists cross the wire as counted ragged arrays, the LLM-to-SLM
vocabulary map goes to each client once, and a killed run resumes to the same rows and LLM adapter."""
import numpy as np
import pytest

from fedsim.algorithms.server_models import LLM
from fedsim.comm import payload_nbytes
from fedsim.config import validate
from fedsim.data.federated import build_federated_data
from fedsim.engine.coordinator import RoundEngine
from fedsim.engine.inprocess import InProcessExecutor
from fedsim.server.settings import ServerTrainerSettings
from fedsim.server.trainer import ServerTrainer
from serve.inprocess import InProcessLLM
from server_runs import assert_same_llm_adapter, comparable, run_to_end

LORA = {"r": 4, "alpha": 8, "target_modules": "all-linear"}
PRESETS = {"llama-0.3m": 0.5, "gpt2-0.3m-uni": 0.5}


def make_engine(teacher_dir, run_dir=None, presets=PRESETS, committed_round=0, rounds=2, **fedmkt):
    raw = {"algorithms": ["fedmkt"], "rounds": rounds, "seed": 4,
           "clients": {"num": 4, "per_round": 2, "presets": presets},
           "task": {"train_per_client": 6, "test_size": 4, "public_size": 6},
           "train": {"local_steps": 2, "batch_size": 3}, "eval": {"every": 2, "client_test_size": 4, "mode": "answer"},
           "llm": {"model": str(teacher_dir)}, "server": {"batch_size": 3, "lora": LORA},
           "fedmkt": {"top_k": 4} | fedmkt}
    config = validate(raw)
    data = build_federated_data(config)
    endpoint = InProcessLLM(teacher_dir, options={"lora": config.server.lora.model_dump()})
    trainer = ServerTrainer(ServerTrainerSettings(batch_size=3), config.seed, endpoint.publish)
    executor = InProcessExecutor(config, "fedmkt", data, run_dir, committed_round=committed_round, llm=endpoint)
    return RoundEngine(config, "fedmkt", data, executor, run_dir, endpoint, trainer), trainer



def test_lists_go_both_ways_and_are_counted_where_they_cross(teacher_dir):
    engine, trainer = make_engine(teacher_dir)
    llm_before = trainer.get_adapter(LLM)
    first = engine.run_round()
    assert {k for k in first if k.startswith("bytes/")} == {"bytes/up/slm_pub_logits"}  # nothing from the LLM yet
    assert first["llm_kd_loss"] > 0 and 0 < first["coverage_slm_to_llm"] <= 1
    assert any(not np.array_equal(llm_before[k], v) for k, v in trainer.get_adapter(LLM).items())
    second = engine.run_round()
    assert {"bytes/down/llm_pub_logits", "bytes/down/vocab_map", "bytes/up/slm_pub_logits"} <= set(second)
    lists = engine.server_state["llm_lists"]
    from fedsim.models.topk import RaggedTopK
    per_client = sum(RaggedTopK.from_topk(r).nbytes for r in lists) + payload_nbytes(engine.server_state["llm_nll"])
    assert second["bytes/down/llm_pub_logits"] == second["clients_selected"] * (per_client + payload_nbytes("topk")
                                                                               + payload_nbytes("nll_per_char"))
    assert all(r.k == 4 for r in lists)


def test_the_map_is_sent_once_per_client_and_one_way_sends_lists_once(teacher_dir):
    engine, _ = make_engine(teacher_dir, rounds=3, llm_training=False)
    rows = [engine.run_round() for _ in range(3)]
    assert all("bytes/up/slm_pub_logits" not in row for row in rows)  # one way: nothing goes up
    assert "llm_kd_loss" not in rows[0]
    assert sorted(engine.server_state["map_sent"]) == sorted(engine.server_state["lists_sent"])
    maps = sum(row.get("bytes/down/vocab_map", 0) for row in rows)
    lists = sum(row.get("bytes/down/llm_pub_logits", 0) for row in rows)
    assert maps > 0 and lists > 0
    assert len(engine.server_state["map_sent"]) <= 4


def test_server_side_alignment_sends_no_map(teacher_dir):
    engine, _ = make_engine(teacher_dir, align_on_server=True)
    engine.run_round()
    row = engine.run_round()
    assert "bytes/down/vocab_map" not in row and row["bytes/down/llm_pub_logits"] > 0
    assert set(engine.server_state["aligned"]) == set(PRESETS)


def test_homogeneous_rounds_average_the_adapters(teacher_dir):
    engine, _ = make_engine(teacher_dir, presets={"llama-0.3m": 1.0}, rounds=3, aggregate_freq=2)
    before = {k: v.copy() for k, v in engine.globals["llama-0.3m"].items()}
    first, second = engine.run_round(), engine.run_round()
    assert "bytes/up/adapter_delta" not in first and second["bytes/up/adapter_delta"] > 0
    assert any(not np.array_equal(before[k], v) for k, v in engine.globals["llama-0.3m"].items())
    third = engine.run_round()
    assert third["bytes/down/adapter"] > 0  # the next cohort adopts the new global adapter


def test_killed_and_resumed_run_ends_with_the_same_rows_and_llm_adapter(teacher_dir, tmp_path):
    straight, straight_trainer = make_engine(teacher_dir)
    straight.evaluate_start()
    run_to_end(straight)
    first, _ = make_engine(teacher_dir, str(tmp_path))
    first.evaluate_start()
    first.run_round()  # killed after this round: a fresh process picks the run folder up
    resumed, trainer = make_engine(teacher_dir, str(tmp_path), committed_round=1)  # the clients' state of round 0
    assert resumed.restore() and resumed.completed == 1
    run_to_end(resumed)
    assert comparable(resumed.rows) == comparable(straight.rows)
    assert_same_llm_adapter(trainer, straight_trainer)
    assert "llm_accuracy/answer" in resumed.rows[-1] and "accuracy" in resumed.rows[-1]


def test_aggregation_needs_one_preset(teacher_dir):
    with pytest.raises(Exception, match="exactly one preset"):
        make_engine(teacher_dir, aggregate_freq=1)


def test_fedmkt_needs_public_examples_and_a_trainable_llm():
    base = {"algorithms": ["fedmkt"], "llm": {"model": "llama-1m-2dom"}}
    with pytest.raises(Exception, match="fedmkt distils on the public examples: task.public_size"):
        validate(base | {"task": {"public_size": 0}})
    with pytest.raises(Exception, match="needs llm.backend hf"):
        validate(base | {"task": {"public_size": 4}, "llm": {"model": "llama-1m-2dom", "backend": "openai",
                                                             "backend_options": {"base_url": "http://x"}}})
    assert validate(base | {"task": {"public_size": 4}}).fedmkt.strategy == "greater"
