"""Shared fixtures: one Ray instance per test session, one torch thread per process."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import pytest
import torch

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
