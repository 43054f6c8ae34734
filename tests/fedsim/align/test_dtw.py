"""Tests of DTW token alignment (algorithms.md §5.3) on hand-made tokenizations."""
import numpy as np

from fedsim.align.dtw import align, local_costs


def test_identical_tokenizations_align_one_to_one():
    tokens = [" the", " cat", " sat", "."]
    alignment = align(tokens, tokens)
    assert alignment.base_path.tolist() == [0, 1, 2, 3]
    assert alignment.blend_path.tolist() == [0, 1, 2, 3]
    assert alignment.one_to_one.tolist() == [0, 1, 2, 3]
    assert alignment.one_to_one.dtype == np.int64


def test_a_split_token_has_no_one_to_one_partner():
    alignment = align([" I", " like", " playing", " football"], [" I", " like", " play", "ing", " football"])
    assert alignment.base_path.tolist() == [0, 1, 2, 2, 3]
    assert alignment.blend_path.tolist() == [0, 1, 2, 3, 4]
    assert alignment.one_to_one.tolist() == [0, 1, -1, 4]


def test_merged_tokens_have_no_one_to_one_partner():
    alignment = align([" I", " play", "ing", " football"], [" I", " playing", " football"])
    assert alignment.base_path.tolist() == [0, 1, 2, 3]
    assert alignment.blend_path.tolist() == [0, 1, 1, 2]
    assert alignment.one_to_one.tolist() == [0, -1, -1, 2]


def test_a_fragment_can_join_a_short_unrelated_neighbour():
    # Levenshtein("now", "ing") = 3 < Levenshtein("playing", "ing") = 4: the path pairs "ing" with " now",
    # so " now" loses its 1:1 partner (projection then falls back to one-hot, it never takes a wrong list)
    alignment = align([" I", " playing", " now"], [" I", " play", "ing", " now"])
    assert alignment.base_path.tolist() == [0, 1, 2, 2]
    assert alignment.one_to_one.tolist() == [0, 1, -1]


def test_an_inserted_token_joins_its_nearest_neighbour():
    assert align([" hi", " everyone"], [" hi", "\n", " everyone"]).one_to_one.tolist() == [-1, 2]
    assert align([" the", " cat"], ["<s>", " the", " cat"]).one_to_one.tolist() == [-1, 2]


def test_the_leading_space_costs_nothing():
    costs = local_costs([" play", "ing"], ["play", " ing", " "])
    assert costs.dtype == np.int32
    assert costs.tolist() == [[0, 4, 4], [4, 0, 3]]
    assert align(["ab", " cd"], [" ab", "cd"]).one_to_one.tolist() == [0, 1]
    assert align([" a", "bc"], ["ab", "c"]).one_to_one.tolist() == [0, 1]  # 1:1 by position, texts differ


def test_empty_and_single_token_sequences():
    assert align([], [" a"]).one_to_one.tolist() == []
    assert align([" a"], []).one_to_one.tolist() == [-1]
    assert align([], []).base_path.tolist() == []
    assert align([" a"], [" a"]).one_to_one.tolist() == [0]
    assert align([" a"], [" a", "b"]).one_to_one.tolist() == [-1]
