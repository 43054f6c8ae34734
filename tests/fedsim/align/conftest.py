"""Session fixtures: the tokenizers of trained_tokenizers, trained once."""
import pytest
from trained_tokenizers import byte_level_bpe, unigram_metaspace, wordpiece


@pytest.fixture(scope="session")
def bpe():
    return byte_level_bpe()


@pytest.fixture(scope="session")
def unigram():
    return unigram_metaspace()


@pytest.fixture(scope="session")
def wp():
    return wordpiece()
