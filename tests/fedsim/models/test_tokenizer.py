"""Tests of the built-in tokenizers: the BPE (the `tokenizer` fixture), the small BPE and the Unigram."""
from fedsim.data.prompts import render_prompt, render_target
from fedsim.data.task import generate_examples, vocabulary_words
from fedsim.models.tokenizer import builtin_corpus, builtin_tokenizer, train_tokenizer, train_unigram_tokenizer


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


UNIGRAM_SPECIALS = {"<pad>": 0, "<eos>": 1, "<unk>": 2}


def random_text(rng, length):
    """Text mixing the task's words, digits, whitespace and characters from every Unicode plane
    (no '▁': a literal one reads back as a space, as in every SentencePiece tokenizer)."""
    alphabet = [" ", "  ", "\n", "\t", " the", " 7", "42", "Zürich", "naïve", "€", "日本", "😀", "ǅ", "\x00"]
    for _ in range(length):
        if rng.random() < 0.5:
            yield alphabet[rng.integers(len(alphabet))]
        else:
            code = int(rng.integers(0x20, 0x10FFFF))
            if not 0xD800 <= code <= 0xDFFF and chr(code) != "▁":
                yield chr(code)


def test_unigram_round_trips_any_text_without_unknown_tokens():
    import numpy as np

    unigram = builtin_tokenizer("unigram")
    rng = np.random.default_rng(0)
    texts = ["".join(random_text(rng, 40)) for _ in range(200)]
    texts += [render_prompt(e, m) + render_target(e, m) for e in generate_examples(20, seed=1, split="test")
              for m in ("answer", "rationale")]
    for text in texts:
        ids = unigram.encode(text, add_special_tokens=False)
        assert unigram.unk_token_id not in ids, text
        assert unigram.decode(ids) == text


def test_unigram_specials_vocabulary_and_digits():
    unigram = builtin_tokenizer("unigram")
    assert {token: unigram.convert_tokens_to_ids(token) for token in UNIGRAM_SPECIALS} == UNIGRAM_SPECIALS
    assert (unigram.pad_token, unigram.eos_token, unigram.unk_token) == tuple(UNIGRAM_SPECIALS)
    assert len(unigram) == 600 and unigram.backend_tokenizer.model.__class__.__name__ == "Unigram"
    pieces = set(unigram.get_vocab())
    assert {f"<0x{byte:02X}>" for byte in range(256)} <= pieces  # byte fallback covers every byte
    assert not any("▁" in piece[1:] for piece in pieces)  # '▁' only starts a word
    digit_pieces = {piece for piece in pieces if any(ch.isdigit() for ch in piece) and not piece.startswith("<0x")}
    assert digit_pieces == set("0123456789")
    assert unigram.convert_ids_to_tokens(unigram.encode(" 1234 = 7", add_special_tokens=False)) == [
        "▁", "1", "2", "3", "4", "▁", "=", "▁", "7"]
    assert builtin_tokenizer("unigram") is unigram  # cached per kind


def test_unigram_differs_from_the_bpe(tokenizer):
    unigram = builtin_tokenizer("unigram")
    sentence = "Question: Mia starts at mark 3. Which mark does Mia see now?\nRationale: 3 + 4 = 7 #### 7"
    bpe_tokens = tokenizer.convert_ids_to_tokens(tokenizer.encode(sentence, add_special_tokens=False))
    unigram_tokens = unigram.convert_ids_to_tokens(unigram.encode(sentence, add_special_tokens=False))
    assert "Ġmark" in bpe_tokens and "▁mark" in unigram_tokens and bpe_tokens != unigram_tokens
    assert "Ġ7" in bpe_tokens and "▁7" not in unigram_tokens  # the Unigram splits '▁' from a digit
    assert not any(token.startswith("Ġ") for token in unigram_tokens)
    assert not any(token.startswith("▁") for token in bpe_tokens)
    assert sum(piece.startswith("▁") for piece in unigram.get_vocab()) > 100


def test_train_unigram_tokenizer_on_other_text():
    trained = train_unigram_tokenizer(["the cat sat on 12 mats", "a cat and a mat"] * 20, vocab_size=300)
    ids = trained.encode(" cat 12 ö", add_special_tokens=False)
    assert trained.decode(ids) == " cat 12 ö" and trained.unk_token_id not in ids
    assert trained.convert_ids_to_tokens(ids)[:4] == ["▁cat", "▁", "1", "2"] and len(trained) <= 300


def test_train_unigram_tokenizer_is_deterministic():
    texts = builtin_corpus()[:2000]
    first, again = (train_unigram_tokenizer(texts).backend_tokenizer.to_str() for _ in range(2))
    assert first == again


def test_the_small_bpe_splits_what_the_bpe_keeps_whole(tokenizer):
    small = builtin_tokenizer("bpe-small")
    assert len(small) == 400 and small.pad_token_id == 0 and small.eos_token_id == 1
    texts = [render_prompt(example, "rationale") + render_target(example, "rationale")
             for example in generate_examples(50, seed=0, split="public")]
    for text in texts:
        ids = small.encode(text, add_special_tokens=False)
        assert small.decode(ids) == text
        assert all(sum(ch.isdigit() for ch in token) <= 1 for token in small.convert_ids_to_tokens(ids))
    assert small.tokenize(" The oven dial") == ["ĠThe", "Ġo", "v", "en", "Ġdi", "al"]
    assert tokenizer.tokenize(" The oven dial") == ["ĠThe", "Ġoven", "Ġdial"]
    small_count = sum(len(small.encode(text, add_special_tokens=False)) for text in texts)
    bpe_count = sum(len(tokenizer.encode(text, add_special_tokens=False)) for text in texts)
    assert small_count > 1.3 * bpe_count
