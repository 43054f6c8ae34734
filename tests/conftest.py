"""Shared fixtures: one Ray instance per test session, one torch thread per process."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Every test starts (and ends) on one torch thread: fedsim.pretrain leaves the thread count it
    trained with (by default every core), which would otherwise carry over to every later test."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ray_session():
    """Start the one local Ray instance of this test session (never `ray stop`)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tokenizer():
    """The built-in word-level tokenizer of the task (shipped with the package)."""
    from fedsim.models.tokenizer import builtin_tokenizer

    return builtin_tokenizer()


@pytest.fixture(scope="session")
def tiny_llm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random LlamaForCausalLM (hidden 64, 2 layers) and word-level tokenizer in a temp folder."""
    from serve.tiny import build_tiny_llm

    return build_tiny_llm(tmp_path_factory.mktemp("tiny-llm"))


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct through the real installer: converted once, then reused from the cache."""
    from fedsim.models.checkpoints import install

    return install("smollm2-135m")
