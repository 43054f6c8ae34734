"""Tests of projecting a sender's top-k lists onto the receiver's tokens, with the next-token correction."""
import numpy as np
import pytest
from trained_tokenizers import sentences

from fedsim.align.project import project_topk
from fedsim.align.vocab import token_texts, vocab_map
from fedsim.models.topk import TopKResult

NEG_INF = -np.inf


def topk(ids: list[list[int]], values: list[list[float]]) -> TopKResult:
    return TopKResult(np.array(ids, dtype=np.int32), np.array(values, dtype=np.float16), adapter_version=2)


def project(base_vocab, base_ids, blend_vocab, blend_ids, sender, sender_to_base, **options):
    return project_topk(sender, base_ids, blend_ids, [base_vocab[i] for i in base_ids],
                        [blend_vocab[i] for i in blend_ids], np.array(sender_to_base, dtype=np.int32), **options)


def test_identical_tokenizations_take_every_list_mapped():
    vocab = [" I", " like", " playing", " football", "."]
    sender = topk([[1, 4, 0], [2, 3, 4], [3, 0, 1], [4, 2, 1], [0, 1, 2]],
                  [[5, 4, 3], [2, 1, 0], [1, 0.5, 0.25], [9, 8, 7], [3, 2, 1]])
    reverse = [4, 3, 2, 1, 0]  # the base vocabulary holds the same tokens in reverse order
    projected = project(vocab[::-1], reverse, vocab, [0, 1, 2, 3, 4], sender, reverse)
    assert projected.topk.ids.tolist() == [[3, 0, 4], [2, 1, 0], [1, 4, 3], [0, 2, 3], [0, 0, 0]]
    assert projected.topk.values.tolist() == [[5, 4, 3], [2, 1, 0], [1, 0.5, 0.25], [9, 8, 7], [NEG_INF] * 3]
    assert projected.matched.tolist() == [True, True, True, True, False]
    assert (projected.n_matched, projected.n_predicting, projected.coverage) == (4, 4, 1.0)
    assert projected.topk.adapter_version == 2


def test_repeats_of_a_mapped_id_and_absent_entries_are_dropped():
    vocab = [" a", " b", " c", " d", " e", " f", " g", " h"]
    sender = topk([[5, 7, 6, 2], [0, 0, 0, 0]], [[4, 3, 2, NEG_INF], [1, NEG_INF, NEG_INF, NEG_INF]])
    to_base = [0, 1, 3, 3, 4, 1, 2, 1]  # 5 and 7 map onto 1; 2 (absent) onto 3
    projected = project(vocab, [0, 1], vocab, [0, 1], sender, to_base)
    assert projected.topk.ids.tolist() == [[1, 2, 0, 0], [0, 0, 0, 0]]
    assert projected.topk.values.tolist() == [[4, 2, NEG_INF, NEG_INF], [NEG_INF] * 4]


BASE = [" I", " like", " playing", " football"]
BLEND = [" I", " like", " play", "ing", " football", " the"]
BLEND_TO_BASE = [0, 1, 2, 2, 3, 3]
SPLIT_SENDER = topk([[1, 5], [2, 5], [3, 5], [4, 5], [5, 0]], [[2, 1], [3, 2], [4, 3], [5, 4], [6, 5]])


def test_a_next_token_inside_a_split_falls_back_to_one_hot():
    projected = project(BASE, [0, 1, 2, 3], BLEND, [0, 1, 2, 3, 4], SPLIT_SENDER, BLEND_TO_BASE)
    # base 1 predicts " playing"; blend 1 predicts " play": its list must not be taken, one-hot on 2 instead
    assert projected.topk.ids.tolist() == [[1, 3], [2, 0], [3, 0], [0, 0]]
    assert projected.topk.values.tolist() == [[2, 1], [0, NEG_INF], [0, NEG_INF], [NEG_INF, NEG_INF]]
    assert projected.matched.tolist() == [True, False, False, False]
    assert (projected.n_matched, projected.n_predicting) == (1, 3)


def test_skip_unaligned_leaves_unmatched_positions_empty():
    projected = project(BASE, [0, 1, 2, 3], BLEND, [0, 1, 2, 3, 4], SPLIT_SENDER, BLEND_TO_BASE,
                        skip_unaligned=True)
    assert projected.topk.ids.tolist() == [[1, 3], [0, 0], [0, 0], [0, 0]]
    assert projected.topk.values.tolist() == [[2, 1], [NEG_INF] * 2, [NEG_INF] * 2, [NEG_INF] * 2]


def test_merged_tokens_fall_back_to_one_hot():
    base = [" I", " play", "ing", " football"]
    blend = [" I", " playing", " football"]
    sender = topk([[1], [2], [0]], [[1], [1], [1]])
    projected = project(base, [0, 1, 2, 3], blend, [0, 1, 2], sender, [0, 1, 3])
    assert projected.topk.ids.tolist() == [[1], [2], [3], [0]]
    assert projected.topk.values.tolist() == [[0], [0], [0], [NEG_INF]]
    assert projected.n_matched == 0 and projected.coverage == 0.0


def test_an_inserted_token_costs_the_position_before_it():
    base = [" hi", " everyone", "!"]
    blend = [" hi", "\n", " everyone", "!"]
    sender = topk([[1], [2], [3], [0]], [[7], [6], [5], [4]])
    projected = project(base, [0, 1, 2], blend, [0, 1, 2, 3], sender, [0, 1, 1, 2])
    assert projected.topk.ids.tolist() == [[1], [2], [0]]
    assert projected.topk.values.tolist() == [[0], [5], [NEG_INF]]  # base 1 <- blend 2, whose next is blend 3
    assert projected.matched.tolist() == [False, True, False]


def test_one_to_one_pairs_must_agree_by_text_or_by_the_map():
    base = [" a", "bc", " d"]
    blend = ["ab", "c", " d"]
    sender = topk([[1], [2], [0]], [[3], [2], [1]])
    disagree = project(base, [0, 1, 2], blend, [0, 1, 2], sender, [0, 0, 2])
    assert disagree.matched.tolist() == [False, False, False]  # "bc" vs "c": neither position is safe
    assert disagree.topk.values.tolist() == [[0], [0], [NEG_INF]]
    agree = project(base, [0, 1, 2], blend, [0, 1, 2], sender, [0, 1, 2])  # "ab" -> " a", "c" -> "bc"
    assert agree.matched.tolist() == [True, True, False]
    assert agree.topk.ids.tolist() == [[1], [2], [0]]
    assert agree.topk.values.tolist() == [[3], [2], [NEG_INF]]


def test_the_senders_own_next_token_goes_to_the_base_next_token():
    base = [" x", " 4", "4", " ="]
    blend = [" x", "4", " ="]
    sender = topk([[1, 2, 0], [2, 0, 1], [0, 0, 0]], [[3, 2, 1], [3, 2, 1], [NEG_INF] * 3])
    projected = project(base, [0, 1, 3], blend, [0, 1, 2], sender, [0, 2, 3])
    # blend "4" follows " x" as base " 4" does: its logit goes to " 4" (1), not to the map's "4" (2)
    assert projected.topk.ids.tolist() == [[1, 3, 0], [3, 0, 2], [0, 0, 0]]
    assert projected.topk.values.tolist() == [[3, 2, 1], [3, 2, 1], [NEG_INF] * 3]


def test_an_empty_sender_list_is_not_a_match():
    vocab = [" a", " b", " c"]
    sender = topk([[0, 0], [1, 2], [0, 0]], [[NEG_INF, NEG_INF], [1, 0], [NEG_INF, NEG_INF]])
    projected = project(vocab, [0, 1, 2], vocab, [0, 1, 2], sender, [0, 1, 2])
    assert projected.matched.tolist() == [False, True, False]
    assert projected.topk.ids.tolist() == [[1, 0], [1, 2], [0, 0]]
    assert projected.topk.values.tolist() == [[0, NEG_INF], [1, 0], [NEG_INF, NEG_INF]]


def test_short_sequences():
    empty = TopKResult(np.zeros((0, 2), dtype=np.int32), np.zeros((0, 2), dtype=np.float16))
    nothing = project([" a"], [], [" a"], [], empty, [0])
    assert nothing.topk.ids.shape == (0, 2) and nothing.coverage == 0.0
    one = project([" a"], [0], [" a"], [0], topk([[0, 0]], [[1, 0]]), [0])
    assert one.topk.values.tolist() == [[NEG_INF, NEG_INF]] and one.n_predicting == 0
    no_sender = project([" a", " b"], [0, 1], [" a"], [], empty, [0])
    assert no_sender.topk.ids.tolist() == [[1, 0], [0, 0]] and no_sender.n_matched == 0


def test_inconsistent_inputs_are_rejected():
    vocab = [" a", " b"]
    sender = topk([[0], [1]], [[1], [1]])
    with pytest.raises(ValueError, match="sender's top-k has 2 positions"):
        project_topk(sender, [0, 1], [0], vocab, [" a"], np.array([0, 1]))
    with pytest.raises(ValueError, match="2 base ids with 1 texts"):
        project_topk(sender, [0, 1], [0, 1], [" a"], vocab, np.array([0, 1]))
    with pytest.raises(ValueError, match="1-D integer"):
        project_topk(sender, [0, 1], [0, 1], vocab, vocab, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="top-k ids must lie in"):
        project_topk(sender, [0, 1], [0, 1], vocab, vocab, np.array([0]))


def test_real_tokenizers_project_onto_themselves_and_onto_each_other(bpe, unigram):
    rng = np.random.default_rng(0)
    bpe_texts, unigram_texts = token_texts(bpe), token_texts(unigram)
    sentence = sentences(1, seed=5)[0]  # "big garden cat evening a bird running.": bpe splits "big" and "bird"
    bpe_ids = bpe.encode(sentence, add_special_tokens=False)
    unigram_ids = unigram.encode(sentence, add_special_tokens=False)
    k = 4
    sender_ids = np.stack([rng.permutation(len(bpe))[:k] for _ in bpe_ids]).astype(np.int32)
    values = -np.sort(rng.random((len(bpe_ids), k)), axis=1).astype(np.float16)
    itself = project_topk(TopKResult(sender_ids, values), bpe_ids, bpe_ids, [bpe_texts[i] for i in bpe_ids],
                          [bpe_texts[i] for i in bpe_ids], np.arange(len(bpe), dtype=np.int32))
    assert np.array_equal(itself.topk.ids[:-1], sender_ids[:-1])
    assert np.array_equal(itself.topk.values[:-1], values[:-1])
    assert itself.coverage == 1.0
    # a sender sure of its own next token, at logit 1: a taken list and the one-hot agree on the id
    next_ids = np.append(unigram_ids[1:], 0).astype(np.int32)
    sender = TopKResult(np.repeat(next_ids[:, None], k, axis=1), np.ones((len(unigram_ids), k), dtype=np.float16))
    across = project_topk(sender, bpe_ids, unigram_ids, [bpe_texts[i] for i in bpe_ids],
                          [unigram_texts[i] for i in unigram_ids], vocab_map(unigram, bpe))
    assert across.topk.ids[:-1, 0].tolist() == bpe_ids[1:]
    assert across.topk.values[:-1, 0].tolist() == across.matched[:-1].astype(float).tolist()
    assert np.isneginf(across.topk.values[:, 1:]).all()
    assert across.matched.tolist() == [False, False, False, True, True, False, False, False, False, False, True,
                                       False]
