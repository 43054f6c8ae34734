"""Tests of the causal-LM loss."""
import math

import pytest
import torch

from fedsim.train.losses import causal_lm_loss


def test_shift_and_mean_over_targets():
    vocab = 5
    logits = torch.zeros(1, 4, vocab)
    logits[0, 1, 3] = 10.0  # position 1 predicts token 2 = 3, confidently
    labels = torch.tensor([[-100, -100, 3, 1]])  # targets at positions 2 and 3
    expected_first = -torch.log_softmax(logits[0, 1], -1)[3]
    expected_second = math.log(vocab)  # position 2 is uniform over the vocabulary
    loss = causal_lm_loss(logits, labels)
    assert torch.isclose(loss, (expected_first + expected_second) / 2)


def test_errors():
    with pytest.raises(ValueError, match="no target tokens"):
        causal_lm_loss(torch.zeros(1, 3, 4), torch.full((1, 3), -100))
    with pytest.raises(ValueError, match="disagree"):
        causal_lm_loss(torch.zeros(1, 3, 4), torch.zeros(1, 2, dtype=torch.long))
