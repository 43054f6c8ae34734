"""Tests of the server trainer's engines: DeepSpeed ZeRO-2 (CPU optimizer offload) against plain torch."""
import pickle
import sys

import numpy as np
import pytest

from fedsim.errors import FedsimError
from fedsim.models.lora import LoraSettings
from fedsim.server.engines import DEEPSPEED_INSTALL, DeepSpeedMissingError, deepspeed_config
from fedsim.server.settings import ServerTrainerSettings
from fedsim.server.trainer import ServerTrainer

LORA = LoraSettings(r=4, alpha=8, dropout=0.0, target_modules="attention")


def trainer_with(engine: str, seed: int = 0) -> ServerTrainer:
    """A trainer on `engine` holding a random llama-0.3m ("slm") and the shipped base ("llm")."""
    device = "cpu" if engine == "torch" else "auto"
    trainer = ServerTrainer(ServerTrainerSettings(engine=engine, lr=3e-3, epochs=3, batch_size=6, device=device),
                            seed=seed)
    trainer.add_model("slm", "llama-0.3m", LORA)
    trainer.add_model("llm", "llama-0.3m-pt", LORA)
    return trainer


def assert_same_state(got: dict, expected: dict) -> None:
    """Adapters, ZeRO optimizer moments and step counts equal bit for bit."""
    assert got["train_calls"] == expected["train_calls"]
    assert all(np.array_equal(got["adapter"][key], value) for key, value in expected["adapter"].items())
    got_moments = got["optimizer"]["base_optimizer_state"]["state"]
    expected_moments = expected["optimizer"]["base_optimizer_state"]["state"]
    assert sorted(got_moments) == sorted(expected_moments)
    for group, state in expected_moments.items():
        assert got_moments[group]["step"] == state["step"]
        for key in ("exp_avg", "exp_avg_sq"):
            assert np.array_equal(got_moments[group][key], state[key]), key


def test_missing_deepspeed_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # `import deepspeed` now fails
    with pytest.raises(DeepSpeedMissingError) as caught:
        ServerTrainer(ServerTrainerSettings(engine="deepspeed"), seed=0)
    message = str(caught.value)
    assert isinstance(caught.value, FedsimError) and isinstance(caught.value, ImportError)
    assert "pip install 'fedsim[deepspeed]'" in message and "deepspeed==0.19.8" in message
    assert DEEPSPEED_INSTALL in message and "\n" not in message


def test_deepspeed_config_is_zero2_with_cpu_offload():
    config = deepspeed_config(ServerTrainerSettings(engine="deepspeed", lr=1e-3, max_grad_norm=None))
    assert config["zero_optimization"] == {"stage": 2, "offload_optimizer": {"device": "cpu"}}
    assert config["optimizer"]["params"]["lr"] == 1e-3 and config["gradient_clipping"] == 0.0


def test_deepspeed_trains_like_torch_and_restores(encoded):
    pytest.importorskip("deepspeed")
    torch_trainer, ds_trainer = trainer_with("torch"), trainer_with("deepspeed")
    torch_report = torch_trainer.train("slm", encoded)
    ds_report = ds_trainer.train("slm", encoded)
    for report in (torch_report, ds_report):
        assert all(later < earlier for earlier, later in zip(report.epoch_losses, report.epoch_losses[1:]))
    np.testing.assert_allclose(ds_report.epoch_losses, torch_report.epoch_losses, rtol=1e-3)

    teacher = ds_trainer.topk("llm", encoded, k=8, batch_size=12)
    saved = pickle.dumps(ds_trainer.state_dict())
    assert "base_optimizer_state" in pickle.loads(saved)["models"]["slm"]["optimizer"]
    ds_trainer.train("slm", encoded, teacher=teacher, kd_lambda=0.5, temperature=2.0)
    expected = ds_trainer.get_adapter("slm")
    restored = trainer_with("deepspeed")
    restored.load_state_dict(pickle.loads(saved))
    assert_same_state(restored.state_dict()["models"]["slm"], pickle.loads(saved)["models"]["slm"])
    restored.train("slm", encoded, teacher=teacher, kd_lambda=0.5, temperature=2.0)
    got = restored.get_adapter("slm")
    assert all(np.array_equal(got[key], expected[key]) for key in expected)
