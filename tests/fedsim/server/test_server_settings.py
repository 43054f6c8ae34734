"""Tests of the server trainer's settings."""
import pytest

from fedsim.errors import FedsimError
from fedsim.server.settings import ServerTrainerError, ServerTrainerSettings
from fedsim.server.trainer import ServerTrainer


def test_defaults_pass():
    settings = ServerTrainerSettings()
    assert settings.check() is settings
    assert (settings.engine, settings.epochs, settings.max_grad_norm) == ("torch", 1, 1.0)


@pytest.mark.parametrize(("changes", "field"), [
    ({"engine": "jax"}, "engine"),
    ({"lr": 0.0}, "lr"),
    ({"lr": float("nan")}, "lr"),
    ({"epochs": 0}, "epochs"),
    ({"epochs": 1.5}, "epochs"),
    ({"batch_size": True}, "batch_size"),
    ({"max_grad_norm": -1.0}, "max_grad_norm"),
    ({"device": "tpu"}, "device"),
    ({"engine": "deepspeed", "device": "cpu"}, "device"),
])
def test_a_bad_setting_names_its_field_in_one_line(changes, field):
    with pytest.raises(ServerTrainerError) as caught:
        ServerTrainer(ServerTrainerSettings(**changes), seed=0)
    message = str(caught.value)
    assert isinstance(caught.value, FedsimError)
    assert f"server trainer {field} must be" in message and "\n" not in message
