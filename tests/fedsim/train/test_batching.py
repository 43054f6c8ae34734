"""Batch encoding: label masks cover exactly the target and EOS."""
import pytest
from transformers import PreTrainedTokenizerFast

from fedsim.data.task import Example, generate_examples
from fedsim.models.tokenizer import BUILTIN_TOKENIZER_DIR
from fedsim.data.prompts import render_prompt, render_target
from fedsim.train.batching import IGNORE_INDEX, encode_for_training


@pytest.fixture(scope="module")
def pad_is_eos_tokenizer():
    loaded = PreTrainedTokenizerFast.from_pretrained(str(BUILTIN_TOKENIZER_DIR), pad_token="<eos>")
    assert loaded.pad_token_id == loaded.eos_token_id
    return loaded


@pytest.mark.parametrize("fixture", ["tokenizer", "pad_is_eos_tokenizer"])
@pytest.mark.parametrize("mode", ["answer", "rationale"])
def test_labels_cover_exactly_the_target_and_eos(request, fixture, mode):
    tok = request.getfixturevalue(fixture)
    examples = generate_examples(6, seed=1, min_steps=1, max_steps=4)
    batch = encode_for_training(tok, examples, mode, max_len=200)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    for row, example in enumerate(examples):
        prompt = tok.encode(render_prompt(example, mode), add_special_tokens=False)
        target = tok.encode(render_target(example, mode), add_special_tokens=False) + [tok.eos_token_id]
        length = len(prompt) + len(target)
        assert batch["attention_mask"][row].tolist() == [1] * length + [0] * (batch["input_ids"].shape[1] - length)
        assert batch["input_ids"][row, :length].tolist() == prompt + target
        labels = batch["labels"][row].tolist()
        assert labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
        assert labels[len(prompt) : length] == target  # EOS kept even when pad == eos
        assert set(labels[length:]) <= {IGNORE_INDEX}
        assert all(i == tok.pad_token_id for i in batch["input_ids"][row, length:].tolist())


def test_long_rows_lose_prompt_tokens_first(tokenizer):
    example = generate_examples(1, seed=2)[0]
    batch = encode_for_training(tokenizer, [example], "rationale", max_len=30)
    target = tokenizer.encode(render_target(example, "rationale"), add_special_tokens=False)
    labels = batch["labels"][0]
    assert batch["input_ids"].shape[1] == 30
    assert labels[labels != IGNORE_INDEX].tolist() == target + [tokenizer.eos_token_id]
    tight = encode_for_training(tokenizer, [example], "rationale", max_len=6)
    assert tight["labels"][0].tolist() == [IGNORE_INDEX] + target[:5]  # one prompt token, target cut


def test_encoding_needs_examples_and_specials(tokenizer):
    with pytest.raises(ValueError, match="at least one"):
        encode_for_training(tokenizer, [], "answer", 50)
