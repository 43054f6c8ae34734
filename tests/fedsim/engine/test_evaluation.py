"""Evaluation: a pooled run is scored on the evaluation clients' domain mixtures like every other run."""
from fedsim.config import validate
from fedsim.data.federated import build_federated_data
from fedsim.engine.coordinator import RoundEngine
from fedsim.engine.inprocess import InProcessExecutor


def _row_zero(algorithm: str) -> dict:
    config = validate({"algorithms": [algorithm], "rounds": 1, "seed": 3,
                       "clients": {"num": 4, "per_round": 2, "availability": 1.0, "presets": {"llama-0.3m-pt": 1}},
                       "task": {"test_size": 40, "public_size": 0, "train_per_client": 8,
                                "client_domains": ["shopping", "travel"]},
                       "train": {"local_steps": 1, "batch_size": 4, "max_len": 128},
                       "eval": {"every": 1, "mode": "rationale", "batch_size": 8}})
    data = build_federated_data(config)
    return RoundEngine(config, algorithm, data, InProcessExecutor(config, algorithm, data, None), None).evaluate_start()


def test_a_pooled_run_scores_its_model_on_the_clients_domains_not_the_whole_test_split():
    pooled, federated = _row_zero("centralized"), _row_zero("fedavg_lora")
    # the same starting model, scored the same way: the clients hold only shopping and travel
    assert pooled["accuracy"] == federated["accuracy"]
    whole_split = pooled["test_accuracy/llama-0.3m-pt/rationale"]
    assert whole_split == federated["test_accuracy/llama-0.3m-pt/rationale"]
    assert pooled["accuracy"] != whole_split
