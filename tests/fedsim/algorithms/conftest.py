"""Fixtures of the algorithm tests."""
import pytest

from fedsim.pretrain import PretrainSettings, pretrain


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory):
    """A briefly pretrained llama-0.3m: the server LLM of the FedCoT and FedCoLLM tests."""
    directory = tmp_path_factory.mktemp("teacher") / "teacher"
    pretrain(directory, PretrainSettings("llama-0.3m", arithmetic_steps=5, steps=15, public_size=32, batch_size=8,
                                         test_size=4), threads=1)
    return directory
