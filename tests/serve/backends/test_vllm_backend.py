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
