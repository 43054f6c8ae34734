"""Preflight: the engine's own objects refuse a bad experiment before Ray starts (no Ray here)."""
import math

import pytest

from fedsim.config import ConfigError, validate
from fedsim.data.loaders import DataFileError
from fedsim.errors import PrivacyBudgetError, ResourceError
from fedsim.models.presets import ModelPathError
from fedsim.preflight import check_experiment, check_pool, fit_pool
from fedsim.secagg.errors import SecAggConfigError


def config(**extra):
    raw = {"algorithms": ["fedavg_lora"], "rounds": 3,
           "clients": {"num": 4, "per_round": 2, "presets": {"llama-0.3m": 1}},
           "task": {"test_size": 4, "public_size": 0, "train_per_client": 8},
           "train": {"local_steps": 2, "batch_size": 4}, "eval": {"every": 0}}
    raw.update(extra)
    return validate(raw)


def test_a_good_experiment_passes_and_returns_its_data():
    data = check_experiment(config())
    assert data.num_clients == 4 and len(data.test) == 4


def test_data_file_errors_name_the_file_and_row(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"question": "a", "answer": "1"}\n{"question": "b", "answer": "2", "choices": "x"}\n')
    with pytest.raises(DataFileError, match=r"data.jsonl, line 2: field 'choices' must be a list"):
        check_experiment(config(task={"source": "file", "path": str(path), "test_size": 1}))


def test_lora_targets_missing_from_the_model():
    with pytest.raises(ConfigError, match="lora settings do not fit the model 'llama-0.3m'"):
        check_experiment(config(lora={"target_modules": ["no_such_proj"]}))


def test_llm_model_must_be_a_model_directory(tmp_path):
    with pytest.raises(ModelPathError, match="not a preset"):
        check_experiment(config(algorithms=["fedcot"], llm={"model": str(tmp_path)}))


def test_first_round_over_the_client_budget():
    with pytest.raises(PrivacyBudgetError, match="alone exceeds it"):
        check_experiment(config(privacy={"budget_eps": 0.5, "dp_sgd": {"noise_multiplier": 0.5}}))
    check_experiment(config(privacy={"budget_eps": 50.0, "dp_sgd": {"noise_multiplier": 0.5}}))  # fits once


def test_target_eps_beyond_the_budget():
    with pytest.raises(PrivacyBudgetError, match="privacy.dp_sgd.target_eps=4.0 exceeds privacy.budget_eps=2.0"):
        check_experiment(config(privacy={"budget_eps": 2.0, "dp_sgd": {"target_eps": 4.0}}))


def test_central_round_over_the_server_budget():
    with pytest.raises(PrivacyBudgetError, match="server_budget_eps=0.1"):
        check_experiment(config(clients={"num": 4, "per_round": 2, "presets": {"llama-0.3m": 1},
                                         "sampling": "poisson"},
                                privacy={"server_budget_eps": 0.1,
                                         "central": {"clip_norm": 1.0, "noise_multiplier": 0.5}}))


def test_fedcot_prompt_release_over_the_budget(tiny_llm_path):
    with pytest.raises(PrivacyBudgetError, match="fedcot's first-round release"):
        check_experiment(config(algorithms=["fedcot"], llm={"model": str(tiny_llm_path)},
                                fedcot={"eps_per_token": 1.0, "max_prompt_tokens": 8}, privacy={"budget_eps": 4.0}))


def test_secure_aggregation_the_engine_rejects():
    with pytest.raises(ConfigError, match="secagg.threshold=5 exceeds the largest cohort"):
        check_experiment(config(secagg={"mode": "protocol", "threshold": 5}))
    with pytest.raises(SecAggConfigError, match="quant_bits"):
        check_experiment(config(secagg={"mode": "cost", "modulus_bits": 32, "quant_bits": 40}))


def test_pool_fit_arithmetic():
    vector = config(algorithms=["fedavg_vector"], engine={"num_workers": 3, "num_cpus_per_worker": 1})
    with pytest.raises(ResourceError, match="3 workers x \\(num_cpus=1.0, num_gpus=0.0\\) do not fit"):
        check_pool(vector, cpus=2, gpus=0)
    assert fit_pool(vector, cpus=3, gpus=0) == 3
    auto = config(engine={"num_cpus_per_worker": 0.5})
    assert fit_pool(auto, cpus=2, gpus=0) == 4
    with pytest.raises(ResourceError):
        fit_pool(config(engine={"num_gpus_per_worker": 1, "num_workers": 1}), cpus=2, gpus=0)
    assert math.isfinite(fit_pool(config(engine={"dedicated": True, "num_cpus_per_worker": 0.5}), 2, 0))
