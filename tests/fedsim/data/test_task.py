"""Tests of the built-in word-problem generator."""
import re
from collections import Counter, defaultdict

import pytest

from fedsim.data.task import DOMAINS, Example, generate_examples, split_of

_STEP = re.compile(r"^(\d) ([-+]) (\d) = (\d)$")


def _check_rationale(example: Example) -> int:
    """Verify every step (arithmetic modulo 10) and the chaining; return the number of steps."""
    steps = example.rationale.split(" . ")
    previous, directions = None, set()
    for step in steps:
        match = _STEP.match(step)
        assert match, f"malformed step {step!r} in {example.rationale!r}"
        left, symbol, right, result = match.groups()
        left, right, result = int(left), int(right), int(result)
        assert 1 <= right <= 9
        assert result == (left + right if symbol == "+" else left - right) % 10, step
        if previous is not None:
            assert left == previous, f"step {step!r} does not start from {previous}"
        previous = result
        directions.add(symbol)
    assert len(directions) == 1, "all moves of a problem go the same way"
    assert str(previous) == example.answer
    return len(steps)


def test_same_arguments_give_same_examples_and_prefixes_agree():
    first = generate_examples(50, seed=7)
    assert first == generate_examples(50, seed=7)
    assert generate_examples(20, seed=7) == first[:20]
    assert generate_examples(50, seed=8) != first
    assert generate_examples(10, seed=(7, 3)) == generate_examples(10, seed=[7, 3])


def test_splits_are_disjoint_whatever_the_seeds():
    questions = {
        split: {e.question for seed in (0, 1) for e in generate_examples(300, seed, split)}
        for split in ("train", "test", "public")
    }
    assert not questions["train"] & questions["test"]
    assert not questions["train"] & questions["public"]
    assert not questions["test"] & questions["public"]
    for split, texts in questions.items():
        assert all(split_of(text) == split for text in texts)


def test_rationales_are_correct_and_steps_in_range():
    examples = generate_examples(400, seed=3, split="test")
    step_counts = Counter(_check_rationale(e) for e in examples)
    assert set(step_counts) == {2, 3, 4}
    assert all(e.answer.isdigit() and len(e.answer) == 1 for e in examples)
    one_step = generate_examples(30, seed=3, min_steps=1, max_steps=1)
    assert {_check_rationale(e) for e in one_step} == {1}


def test_every_step_operand_appears_in_the_question_in_order():
    for example in generate_examples(100, seed=5):
        numbers = re.findall(r"\d", example.question)
        operands = [step.split()[2] for step in example.rationale.split(" . ")]
        first = example.rationale.split()[0]
        assert numbers == [first, *operands]


def test_no_shortcut_from_the_last_move():
    """Knowing the direction and the size of the last move says nothing about the answer."""
    by_last_move = defaultdict(Counter)
    for example in generate_examples(3000, seed=4):
        last = example.rationale.split(" . ")[-1].split()
        by_last_move[(last[1], last[2])][example.answer] += 1
    best_guess_hits = sum(counts.most_common(1)[0][1] for counts in by_last_move.values())
    assert best_guess_hits / 3000 < 0.2  # chance 0.10 plus sampling noise; bounded sums gave 0.39


def test_domains_follow_weights():
    examples = generate_examples(400, seed=1)
    assert set(Counter(e.domain for e in examples)) == set(DOMAINS)
    assert {"shopping", "travel", "cooking", "finance"} <= set(DOMAINS)
    only_travel = generate_examples(50, seed=1, domain_weights={"travel": 1.0})
    assert {e.domain for e in only_travel} == {"travel"}
    skewed = Counter(e.domain for e in generate_examples(400, 2, domain_weights={"cooking": 9, "finance": 1}))
    assert set(skewed) == {"cooking", "finance"} and skewed["cooking"] > 4 * skewed["finance"]


@pytest.mark.parametrize("kwargs, message", [
    ({"n": -1}, "n must be"),
    ({"split": "valid"}, "split must be"),
    ({"min_steps": 3, "max_steps": 2}, "min_steps"),
    ({"domain_weights": {"space": 1.0}}, "unknown domain"),
    ({"domain_weights": {"travel": -1.0}}, "domain_weights"),
    ({"domain_weights": {"travel": 0.0}}, "domain_weights"),
])
def test_bad_arguments_raise_clear_errors(kwargs, message):
    arguments = {"n": 3, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate_examples(**arguments)
