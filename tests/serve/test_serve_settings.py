"""Tests of serve/settings.py and backend option validation (serve/backends/__init__.py)."""
import pytest

from serve.backends import check_backend_options
from serve.errors import ServeConfigError
from serve.settings import ServeSettings


def test_from_dict_builds_and_rejects_unknown_keys():
    settings = ServeSettings.from_dict({"max_batch_size": 8, "batch_wait_timeout_s": 0.02})
    assert settings.max_batch_size == 8 and settings.backend == "hf"
    with pytest.raises(ServeConfigError, match="max_batch"):
        ServeSettings.from_dict({"max_batch": 8})


@pytest.mark.parametrize("kwargs, message", [
    ({"backend": "tgi"}, "serve.backend"), ({"max_batch_size": 0}, "max_batch_size"),
    ({"max_batch_size": 32, "max_ongoing_requests": 8}, "max_ongoing_requests"),
    ({"batch_wait_timeout_s": -1}, "batch_wait_timeout_s"), ({"num_gpus": -0.5}, "num_gpus"),
    ({"health_check_period_s": 0}, "health_check_period_s"),
])
def test_invalid_settings_name_the_field(kwargs, message):
    with pytest.raises(ServeConfigError, match=message):
        ServeSettings(**kwargs)


@pytest.mark.parametrize("backend, options, message", [
    ("hf", {}, "model_path"),
    ("hf", {"model_path": "/m", "colour": "red"}, "colour"),
    ("hf", {"model_path": "/m", "dtype": "int3"}, "dtype"),
    ("hf", {"model_path": "/m", "lora": {"r": 4, "rank": 8}}, "rank"),
    ("vllm", {"model_path": "/m", "gpu_memory_utilization": 2.0}, "gpu_memory_utilization"),
    ("openai", {"base_url": "localhost:8000", "model": "m"}, "base_url"),
    ("openai", {"base_url": "http://h", "model": "m", "api_key_env": "FEDSIM_NO_SUCH_VAR"}, "api_key_env"),
])
def test_backend_options_are_checked_before_loading(backend, options, message):
    with pytest.raises(ServeConfigError, match=message):
        check_backend_options(backend, options)
