import numpy as np
import pytest
import torch

from fedsim.models.topk import TopKResult
from fedsim.train.batching import IGNORE_INDEX
from fedsim.train.selective import answer_nll, per_character, select_teachers, topk_and_answer_nll

NEG = -np.inf


def topk(ids, values) -> TopKResult:
    return TopKResult(ids=np.asarray(ids, dtype=np.int32), values=np.asarray(values, dtype=np.float16))


def softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max())
    return shifted / shifted.sum()


def test_answer_nll_scores_the_next_token_of_target_positions_only():
    logits = torch.log(torch.tensor([[[0.5, 0.5, 0.0 + 1e-9], [0.1, 0.2, 0.7], [0.25, 0.25, 0.5]]]))
    labels = torch.tensor([[IGNORE_INDEX, 2, 0]])  # targets at positions 1 and 2
    # position 0 predicts labels[1] = 2 (p 1e-9 normalised), position 1 predicts labels[2] = 0 (p 0.1)
    expected = -(np.log(1e-9 / (1 + 1e-9)) + np.log(0.1))
    assert answer_nll(logits, labels).item() == pytest.approx(expected, rel=1e-5)


def test_topk_and_nll_match_a_full_forward_pass():
    torch.manual_seed(0)
    full = torch.randn(3, 5, 11)
    encoded = {"input_ids": torch.zeros(3, 5, dtype=torch.long),
               "attention_mask": torch.tensor([[1] * 5, [1] * 3 + [0] * 2, [1] * 4 + [0]]),
               "labels": torch.tensor([[IGNORE_INDEX, 1, 2, 3, 4], [IGNORE_INDEX, 5, 6, IGNORE_INDEX, IGNORE_INDEX],
                                       [IGNORE_INDEX, IGNORE_INDEX, 7, 8, IGNORE_INDEX]])}

    def logits_of(rows):
        width = int(encoded["attention_mask"][rows].sum(dim=1).max())
        return full[rows, :width], width

    results, nll = topk_and_answer_nll(logits_of, encoded, k=3, batch_size=2)
    assert [r.n_positions for r in results] == [5, 3, 4] and all(r.k == 3 for r in results)
    values, ids = full.topk(3, dim=-1)
    assert np.array_equal(results[1].ids, ids[1, :3].numpy().astype(np.int32))
    assert np.allclose(results[2].values.astype(np.float32), values[2, :4].numpy(), atol=1e-2)
    assert np.allclose(nll, answer_nll(full, encoded["labels"]).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="exceeds"):
        topk_and_answer_nll(logits_of, encoded, k=12, batch_size=2)


def test_per_character_needs_one_length_per_example():
    assert np.allclose(per_character(np.array([[4.0, 9.0]]), [2, 3]), [[2.0, 3.0]])
    with pytest.raises(ValueError):
        per_character(np.array([1.0, 2.0]), [1])


def test_greater_picks_the_lowest_nll_per_example_and_falls_back_to_self_where_empty():
    own = [topk([[1, 2], [3, 4]], [[2.0, 1.0], [2.0, 1.0]]), topk([[5, 6]], [[1.0, 0.0]])]
    other = [topk([[7, 8], [9, 0]], [[3.0, 1.0], [NEG, NEG]]), topk([[7, 8]], [[3.0, 1.0]])]
    teachers, counts = select_teachers([own, other], np.array([[1.0, 0.5], [0.5, 0.9]]), "greater")
    assert teachers[1] is own[1]  # the learner's own NLL is lower on example 1
    assert np.array_equal(teachers[0].ids, [[7, 8], [3, 4]])  # position 1: the other's list is empty
    assert np.array_equal(teachers[0].values.astype(np.float32), [[3.0, 1.0], [2.0, 1.0]])
    assert counts.tolist() == [1.0, 1.0]


def test_weighted_mean_is_the_reward_weighted_mixture_at_the_temperature():
    temperature = 2.0
    own = [topk([[1, 2]], [[2.0, 0.0]])]
    other = [topk([[2, 3]], [[1.0, 1.0]])]
    nll = np.array([[0.2], [1.0]])
    teachers, weights = select_teachers([own, other], nll, "weighted_mean", temperature)
    rewards = np.exp(-nll[:, 0])
    w = softmax(rewards)
    expected = {1: w[0] * softmax(np.array([2.0, 0.0]) / temperature)[0],
                2: w[0] * softmax(np.array([2.0, 0.0]) / temperature)[1] + w[1] * 0.5,
                3: w[1] * 0.5}
    got = teachers[0]
    assert got.k == 3  # the union of {1, 2} and {2, 3}
    probs = softmax(got.values[0].astype(np.float64) / temperature)  # what the KD loss sees
    assert dict(zip(got.ids[0].tolist(), probs.tolist())) == pytest.approx(expected, abs=2e-3)
    assert weights.sum() == pytest.approx(1.0)


def test_bad_strategy_and_shapes_are_refused():
    own = [topk([[1]], [[0.0]])]
    with pytest.raises(ValueError, match="strategy"):
        select_teachers([own], np.zeros((1, 1)), "best")
    with pytest.raises(ValueError, match="one score"):
        select_teachers([own, own], np.zeros((1, 1)), "greater")
