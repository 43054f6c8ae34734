"""Tests of serve/backends/vllm.py where vllm is not installed (this machine)."""
import importlib.util

import pytest

from serve.backends import create_backend
from serve.errors import BackendUnavailableError


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_missing_vllm_names_the_extra_and_the_gpu(tiny_llm_path):
    with pytest.raises(BackendUnavailableError) as raised:
        create_backend("vllm", {"model_path": str(tiny_llm_path)})
    message = str(raised.value)
    assert "pip install 'fedsim[vllm]'" in message and "GPU" in message


def test_adapter_names_match_the_hf_backend(tiny_llm_path, lora_options):
    """set_adapter takes the same names and shapes on vllm as on hf (built on meta)."""
    from fedsim.models.lora import LoraSettings
    from serve.backends.hf import HFBackend
    from serve.backends.vllm import _lora_layout

    expected = HFBackend({"model_path": str(tiny_llm_path), "lora": lora_options}).adapter_shapes()
    shapes, peft_config = _lora_layout(tiny_llm_path, LoraSettings(**lora_options))
    assert shapes == expected and peft_config.target_modules == set(lora_options["target_modules"])
