"""Tests of canonical token texts and vocabulary maps (algorithms.md §5.2)."""
import numpy as np
import pytest
from trained_tokenizers import byte_level_bpe, sentencepiece_byte_fallback, sentences

from fedsim.align import vocab
from fedsim.align.vocab import (
    VocabMapping,
    build_vocab_map,
    special_roles,
    token_texts,
    tokenizer_fingerprint,
    vocab_map,
    vocab_mapping,
)
from fedsim.models.tokenizer import builtin_tokenizer


def text_of(tokenizer, piece: str) -> str:
    return token_texts(tokenizer)[tokenizer.convert_tokens_to_ids(piece)]


def test_word_starts_read_the_same_in_every_kind(bpe, unigram, wp):
    assert text_of(bpe, "Ġthe") == text_of(unigram, "▁the") == text_of(wp, "the") == " the"
    assert text_of(bpe, "he") == "he"
    assert text_of(wp, "##n") == "n"
    assert text_of(builtin_tokenizer(), "ĠThe") == " The"


def test_byte_level_pieces_decode_to_their_bytes(bpe):
    assert text_of(bpe, "Ċ") == "\n"
    assert text_of(bpe, "Ġ") == " "
    assert text_of(bpe, "fÃ©") == "fé"
    assert text_of(bpe, "Ã") == "\\xc3"  # a lone lead byte of a UTF-8 sequence


def test_sentencepiece_byte_fallback_reads_the_byte_it_names():
    texts = token_texts(sentencepiece_byte_fallback())
    assert texts == ["<unk>", "<s>", "</s>", "\n", "\\xc3", "\\xa9", " ", "c", "a", "f", " c", " ca", " caf"]


def test_texts_cover_the_vocabulary_and_concatenate_to_the_text(bpe, unigram):
    for tokenizer in (bpe, unigram, builtin_tokenizer()):
        assert len(token_texts(tokenizer)) == len(tokenizer)
    bpe_texts, unigram_texts = token_texts(bpe), token_texts(unigram)
    for sentence in filter(str.isascii, sentences(50, seed=1)):  # a split 'ï' reads as '\\xc3', '\\xaf'
        assert "".join(bpe_texts[i] for i in bpe.encode(sentence, add_special_tokens=False)) == sentence
        assert "".join(unigram_texts[i] for i in unigram.encode(sentence, add_special_tokens=False)) == " " + sentence


def test_specials_keep_their_literal_text_and_roles(bpe, unigram, wp):
    assert token_texts(bpe)[:2] == ["<pad>", "<eos>"]
    assert token_texts(wp)[:3] == ["[PAD]", "[UNK]", "[SEP]"]
    assert special_roles(bpe) == {"pad": 0, "eos": 1}
    assert special_roles(unigram) == {"unk": 0, "bos": 1, "eos": 2}
    assert special_roles(wp) == {"pad": 0, "unk": 1, "eos": 2}


def test_a_tokenizer_maps_onto_itself_as_the_identity(bpe, unigram, wp):
    for tokenizer in (bpe, unigram, wp, builtin_tokenizer()):
        texts, roles = token_texts(tokenizer), special_roles(tokenizer)
        assert np.array_equal(build_vocab_map(texts, texts, roles, roles), np.arange(len(texts), dtype=np.int32))


def test_exact_text_wins_over_a_nearer_id_and_ties_go_to_the_lowest_id():
    target = ["play", " plays", " play", "aa", "bb", "<pad>"]
    mapping = build_vocab_map([" play", " plax", "ab", "<pad>"], target, {}, {"pad": 5})
    assert mapping.dtype == np.int32
    assert mapping.tolist() == [2, 2, 3, 0]  # "<pad>" is no special in the source: never onto the target's pad


def test_specials_map_by_role_and_only_onto_specials():
    source = ["<pad>", "<eos>", "<|tool|>", "<s>", "hello"]
    target = ["hello", "</s>", "<|pad|>", "<|tool|>", "[BOS]", "<eos>"]
    mapping = build_vocab_map(source, target, {"pad": 0, "eos": 1, "<|tool|>": 2, "bos": 3},
                              {"eos": 1, "pad": 2, "<|tool|>": 3, "unk": 4})
    assert mapping.tolist() == [2, 1, 3, 1, 0]  # <s>: no bos in the target, nearest special text "</s>"
    shared = build_vocab_map(["<|end|>", "x"], ["x", "<pad>", "<eos>"], {"pad": 0, "eos": 0}, {"pad": 1, "eos": 2})
    assert shared.tolist() == [2, 0]  # one token holding pad and eos maps as eos


def test_real_tokenizers_map_their_specials_by_role(bpe, unigram, wp):
    bpe_onto_wp = vocab_map(bpe, wp)
    assert bpe_onto_wp[:2].tolist() == [0, 2]  # <pad> -> [PAD], <eos> -> [SEP]
    assert bpe_onto_wp[bpe.convert_tokens_to_ids("Ġthe")] == wp.convert_tokens_to_ids("the")
    unigram_onto_bpe = vocab_map(unigram, bpe)
    assert unigram_onto_bpe[:3].tolist() == [0, 1, 1]  # <unk>, <s>: nearest special text (tie: lowest); eos
    assert unigram_onto_bpe[unigram.convert_tokens_to_ids("▁the")] == bpe.convert_tokens_to_ids("Ġthe")
    wp_specials = set(special_roles(wp).values())
    assert not wp_specials & set(bpe_onto_wp[2:].tolist())


def test_chunked_distances_match_one_call(monkeypatch, bpe, wp):
    texts = token_texts(bpe), token_texts(wp)
    whole = build_vocab_map(*texts, special_roles(bpe), special_roles(wp))
    monkeypatch.setattr(vocab, "_CDIST_CELLS", 3 * len(texts[1]))
    assert np.array_equal(build_vocab_map(*texts, special_roles(bpe), special_roles(wp)), whole)


def test_no_target_left_to_map_onto_is_an_error():
    with pytest.raises(ValueError, match="empty set of target tokens"):
        build_vocab_map(["a"], ["<pad>"], {}, {"pad": 0})
    with pytest.raises(ValueError, match="no special tokens"):
        build_vocab_map(["<pad>"], ["a"], {"pad": 0}, {})
    with pytest.raises(ValueError, match="outside a vocabulary"):
        build_vocab_map(["a"], ["a"], {"pad": 3}, {})


def test_fingerprint_ignores_padding_settings_and_tells_tokenizers_apart(bpe, unigram):
    other = byte_level_bpe()
    before = tokenizer_fingerprint(other)
    other(["the cat", "a"], padding="max_length", max_length=8, truncation=True)
    assert tokenizer_fingerprint(other) == before == tokenizer_fingerprint(bpe)
    assert len(before) == 64 and tokenizer_fingerprint(unigram) != before


def test_the_cached_map_is_written_once_reused_and_rebuilt_when_corrupt(tmp_path, monkeypatch, bpe, unigram):
    mapping = vocab_mapping(bpe, unigram, tmp_path)
    assert isinstance(mapping, VocabMapping) and mapping.nbytes == 4 * len(bpe)
    path = tmp_path / f"vocab-map-{mapping.source_fingerprint[:16]}-{mapping.target_fingerprint[:16]}.npy"
    assert [entry.name for entry in tmp_path.iterdir()] == [path.name]
    written = path.stat().st_mtime_ns
    with monkeypatch.context() as patch:
        patch.setattr(vocab, "build_vocab_map", lambda *args: pytest.fail("the cache was not reused"))
        assert np.array_equal(vocab_map(bpe, unigram, tmp_path), mapping.ids)
    assert path.stat().st_mtime_ns == written
    for corrupt in (b"not a numpy file", None):
        if corrupt is None:
            np.save(path, mapping.ids[:-1])  # a valid array of the wrong length
        else:
            path.write_bytes(corrupt)
        assert np.array_equal(vocab_map(bpe, unigram, tmp_path), mapping.ids)
        assert np.array_equal(np.load(path), mapping.ids)
    assert [entry.name for entry in tmp_path.iterdir()] == [path.name]
