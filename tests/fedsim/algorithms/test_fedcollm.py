"""FedCoLLM in process: secure FedAvg of the SLM LoRA, then mutual distillation on the server's public
examples; the LLM's adapter is published to the endpoint, only SLM adapters cross the wire, and a
killed run resumes to the same final metrics and LLM adapter."""
import numpy as np
import pytest

from fedsim.algorithms.server_models import LLM
from fedsim.config import validate
from fedsim.data.federated import build_federated_data
from fedsim.engine.coordinator import RoundEngine
from fedsim.engine.inprocess import InProcessExecutor
from fedsim.models.lora import LoraSettings
from fedsim.server.settings import ServerTrainerSettings
from fedsim.server.trainer import ServerTrainer
from serve.inprocess import InProcessLLM
from server_runs import assert_same_llm_adapter, comparable, run_to_end

LORA = {"r": 4, "alpha": 8, "target_modules": "all-linear"}


def make_engine(teacher_dir, run_dir=None, algorithm="fedcollm", **sections):
    raw = {"algorithms": [algorithm], "rounds": 3, "seed": 4,
           "clients": {"num": 4, "per_round": 2, "presets": {"llama-0.3m": 1.0}},
           "task": {"train_per_client": 6, "test_size": 4, "public_size": 8},
           "train": {"local_steps": 2, "batch_size": 4}, "eval": {"every": 3, "client_test_size": 4},
           "llm": {"model": str(teacher_dir)}, "server": {"batch_size": 4, "lora": LORA},
           "fedcollm": {"top_k": 8, "public_per_round": 6}}
    for section, values in sections.items():
        raw[section] = raw.get(section, {}) | values
    config = validate(raw)
    data = build_federated_data(config)
    endpoint = InProcessLLM(teacher_dir, options={"lora": config.server.lora.model_dump()})
    trainer = ServerTrainer(ServerTrainerSettings(batch_size=4), config.seed, endpoint.publish)
    executor = InProcessExecutor(config, algorithm, data, run_dir, llm=endpoint)
    return RoundEngine(config, algorithm, data, executor, run_dir, endpoint, trainer), endpoint, trainer



def test_a_round_distils_both_ways_publishes_and_sends_only_slm_adapters(teacher_dir):
    engine, endpoint, trainer = make_engine(teacher_dir)
    llm_before = trainer.get_adapter(LLM)
    row = engine.run_round()
    assert {k for k in row if k.startswith("bytes/")} == {"bytes/down/adapter", "bytes/up/adapter_delta"}
    assert row["server_public_examples"] == 6 and row["slm_kd_loss"] > 0 and row["llm_kd_loss"] > 0
    llm_after = trainer.get_adapter(LLM)
    assert any(not np.array_equal(llm_before[k], llm_after[k]) for k in llm_before)
    assert row["llm_adapter_version"] == endpoint.version == 2  # the starting adapter, then round 1's
    served = endpoint.backend.adapter_shapes()
    assert set(served) == set(llm_after)
    np.testing.assert_array_equal(engine.globals["llama-0.3m"]["model.layers.0.self_attn.q_proj.lora_A.weight"],
                                  trainer.get_adapter("llama-0.3m")["model.layers.0.self_attn.q_proj.lora_A.weight"])
    tokens = [[1, 5, 6, 7]]
    expected = ServerTrainer(ServerTrainerSettings(), 0)
    expected.add_model("m", str(teacher_dir), LoraSettings(**LORA))
    expected.set_adapter("m", llm_after)
    import torch
    local = expected.topk("m", {"input_ids": torch.tensor(tokens), "attention_mask": torch.ones(1, 4, dtype=torch.long)}, 3, 1)
    np.testing.assert_array_equal(endpoint.topk_logits(tokens, 3)[0].ids, local[0].ids)


def test_killed_and_resumed_run_ends_with_the_same_metrics_and_llm_adapter(teacher_dir, tmp_path):
    straight, _, straight_trainer = make_engine(teacher_dir)
    straight.evaluate_start()
    run_to_end(straight)
    first, _, _ = make_engine(teacher_dir, str(tmp_path))
    first.evaluate_start()
    first.run_round()
    first.run_round()  # killed here: a fresh process picks the run folder up
    resumed, endpoint, trainer = make_engine(teacher_dir, str(tmp_path))
    assert resumed.restore() and resumed.completed == 2
    run_to_end(resumed)
    assert comparable(resumed.rows) == comparable(straight.rows)
    assert_same_llm_adapter(trainer, straight_trainer)
    assert "llm_accuracy/rationale" in resumed.rows[-1] and "accuracy" in resumed.rows[-1]


def test_centralized_llm_trains_the_llm_on_the_pooled_data(teacher_dir):
    engine, endpoint, trainer = make_engine(teacher_dir, algorithm="centralized_llm", eval={"every": 1})
    start = engine.evaluate_start()
    row = engine.run_round()
    assert start["accuracy"] == start["llm_accuracy/rationale"]
    assert row["bytes_up"] == row["bytes_down"] == 0 and row["llm_lm_loss"] > 0 and endpoint.version == 2
