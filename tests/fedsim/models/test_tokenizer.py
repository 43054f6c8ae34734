"""Tests of the built-in tokenizer."""
from fedsim.data.prompts import render_prompt, render_target
from fedsim.data.task import generate_examples, vocabulary_words
from fedsim.models.tokenizer import builtin_tokenizer, train_tokenizer


def test_every_generator_word_is_one_token(tokenizer):
    for word in vocabulary_words():
        forms = [tokenizer.encode(text, add_special_tokens=False) for text in (" " + word, word)]
        assert min(len(ids) for ids in forms) == 1, f"{word!r} is split into {forms}"


def test_generated_text_round_trips_and_digits_are_single_tokens(tokenizer):
    for example in generate_examples(50, seed=0, split="public"):
        for mode in ("answer", "rationale"):
            text = render_prompt(example, mode) + render_target(example, mode)
            ids = tokenizer.encode(text, add_special_tokens=False)
            assert tokenizer.decode(ids) == text
            for token in tokenizer.convert_ids_to_tokens(ids):
                assert sum(ch.isdigit() for ch in token) <= 1, token


def test_specials_and_unseen_text(tokenizer):
    assert tokenizer.pad_token == "<pad>" and tokenizer.eos_token == "<eos>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.encode("42", add_special_tokens=False) == [
        tokenizer.convert_tokens_to_ids("4"), tokenizer.convert_tokens_to_ids("2")]
    odd = "Zürich costs 1234 €, naïve!"
    assert tokenizer.decode(tokenizer.encode(odd, add_special_tokens=False)) == odd
    assert builtin_tokenizer() is tokenizer  # cached


def test_train_tokenizer_on_other_text():
    trained = train_tokenizer(["the cat sat on 12 mats"] * 20, vocab_size=300)
    ids = trained.encode(" cat 12", add_special_tokens=False)
    assert trained.decode(ids) == " cat 12"
    assert trained.convert_ids_to_tokens(ids)[0] == "Ġcat"
