"""Config validation: errors name the key path and what is allowed."""
from pathlib import Path

import pytest

from fedsim.config import ConfigError, apply_overrides, dump_config, load_config, validate

EXPERIMENTS = sorted((Path(__file__).resolve().parents[2] / "experiments").glob("*.yaml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_defaults_and_overrides(tmp_path):
    path = write(tmp_path, "name: t\nrounds: 2\nclients:\n  num: 30\n")
    config = load_config(path, ["clients.per_round=5", "train.lr=0.01", "algorithms=[local, centralized]"])
    assert config.rounds == 2 and config.clients.num == 30 and config.clients.per_round == 5
    assert config.train.lr == 0.01 and config.algorithms == ["local", "centralized"]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda path: path.name)
def test_shipped_experiments_validate(path):
    config = load_config(path)
    assert config.name == path.stem and config.algorithms


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"clients\.nmu: unknown key"):
        load_config(write(tmp_path, "clients:\n  nmu: 3\n"))


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"rounds: "):
        load_config(write(tmp_path, "rounds: many\n"))


def test_more_sampled_than_registered():
    with pytest.raises(ConfigError, match=r"clients: .*per_round \(50\) must be <= clients.num \(10\)"):
        validate({"clients": {"num": 10, "per_round": 50}})


def test_negative_rate_and_unknown_algorithm():
    with pytest.raises(ConfigError) as error:
        validate({"train": {"lr": -1.0}, "algorithms": ["fedsgd"]})
    assert "train.lr" in str(error.value) and "allowed" in str(error.value)


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides({}, ["rounds"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_dump_round_trips(tmp_path):
    config = validate({"name": "x", "clients": {"presets": {"llama-1m": 1, "gpt2-1m": 1}}})
    path = write(tmp_path, dump_config(config))
    assert load_config(path) == config


def test_unknown_model_is_named_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match=r"clients\.presets: .*llama-7b.* not a preset"):
        validate({"clients": {"presets": {"llama-7b": 1}}})
    with pytest.raises(ConfigError, match=r"clients\.presets: .*nowhere.* not a preset"):
        validate({"clients": {"presets": {str(tmp_path / "nowhere"): 1}}})


def test_errors_are_one_line_and_name_every_key():
    with pytest.raises(ConfigError) as caught:
        validate({"rounds": 0, "clients": {"num": 0}})
    message = str(caught.value)
    assert "\n" not in message and "rounds:" in message and "clients.num:" in message


def test_keep_optimizer_state_needs_client_state():
    with pytest.raises(ConfigError, match="centralized, fedavg_lora keeps none"):
        validate({"algorithms": ["local", "centralized", "fedavg_lora"], "train": {"keep_optimizer_state": True}})
    with pytest.raises(ConfigError, match="DP-SGD starts a fresh optimizer"):
        validate({"algorithms": ["local"], "train": {"keep_optimizer_state": True},
                  "privacy": {"dp_sgd": {"noise_multiplier": 1.0}}})
    assert validate({"algorithms": ["local"], "train": {"keep_optimizer_state": True}}).train.keep_optimizer_state


def test_dp_sgd_does_not_apply_to_centralized():
    with pytest.raises(ConfigError, match="privacy.dp_sgd does not apply to centralized"):
        validate({"algorithms": ["fedavg_lora", "centralized"], "privacy": {"dp_sgd": {"noise_multiplier": 1.0}}})


def test_config_error_is_a_fedsim_error():
    from fedsim.errors import FedsimError

    with pytest.raises(FedsimError):
        validate({"rounds": -1})
