"""FDKT's client generator: condition prompts, the question-only loss mask, settings, sampling checks."""
from collections import Counter

import pytest
import torch

from fedsim.data.task import Example, generate_examples
from fedsim.models.lora import LoraSettings, attach_lora
from fedsim.models.presets import load_model
from fedsim.train.batching import IGNORE_INDEX
from fedsim.train.generator import (
    DROP_REASONS,
    Condition,
    GeneratorSettings,
    GeneratorSettingsError,
    all_conditions,
    condition_of,
    drop_reason,
    encode_generator_examples,
    render_condition,
    sample_questions,
)

REVIEW = Example(question="The soup was cold and the waiter never came back to our table.", answer="2",
                 domain="restaurants", choices=("1", "2", "3", "4", "5"))


@pytest.fixture(scope="module")
def llama():
    """The pretrained base (it ends its texts with EOS, so samples pass the checks) with a LoRA."""
    model, tokenizer = load_model("llama-0.3m-pt", seed=0)
    return attach_lora(model, LoraSettings(dropout=0.0)), tokenizer


def test_condition_names_the_domain_and_the_label_of_examples_with_choices():
    question = generate_examples(1, seed=0, domain_weights={"travel": 1.0})[0]
    assert render_condition(condition_of(question)) == "Domain: travel | Question:"
    assert condition_of(REVIEW) == Condition("restaurants", "2")
    assert render_condition(condition_of(REVIEW)) == "Domain: restaurants | Label: 2 | Question:"
    assert all_conditions(["a", "b"]) == [Condition("a"), Condition("b")]
    assert all_conditions(["a"], ["1", "2"]) == [Condition("a", "1"), Condition("a", "2")]


def test_labels_mask_exactly_the_condition_and_the_padding(tokenizer):
    examples = [*generate_examples(2, seed=1, min_steps=2, max_steps=4), REVIEW]
    encoded = encode_generator_examples(tokenizer, examples, max_len=256)
    for row, example in enumerate(examples):
        condition = tokenizer.encode(render_condition(condition_of(example)), add_special_tokens=False)
        target = tokenizer.encode(f" {example.question}", add_special_tokens=False) + [tokenizer.eos_token_id]
        length = len(condition) + len(target)
        assert encoded["input_ids"][row, :length].tolist() == condition + target
        assert encoded["attention_mask"][row].tolist() == [1] * length + [0] * (encoded["input_ids"].shape[1] - length)
        expected = [IGNORE_INDEX] * len(condition) + target
        expected += [IGNORE_INDEX] * (encoded["input_ids"].shape[1] - length)
        assert encoded["labels"][row].tolist() == expected


def test_a_long_question_is_cut_and_the_condition_kept(tokenizer):
    condition = tokenizer.encode(render_condition(condition_of(REVIEW)), add_special_tokens=False)
    encoded = encode_generator_examples(tokenizer, [REVIEW], max_len=len(condition) + 3)
    assert encoded["input_ids"][0, :len(condition)].tolist() == condition
    assert (encoded["labels"][0] != IGNORE_INDEX).sum() == 3
    assert tokenizer.eos_token_id not in encoded["input_ids"][0].tolist()
    with pytest.raises(ValueError, match="leaves no target"):
        encode_generator_examples(tokenizer, [REVIEW], max_len=len(condition))


@pytest.mark.parametrize("bad, field", [
    ({"eps": 0.0}, "eps"), ({"eps": float("nan")}, "eps"), ({"delta": 1.0}, "delta"),
    ({"steps": 0}, "steps"), ({"steps": 3, "epochs": 1.0}, "epochs"), ({"batch_size": True}, "batch_size"),
    ({"top_p": 0.0}, "top_p"), ({"top_k": -1}, "top_k"), ({"min_words": 5, "max_words": 4}, "max_words"),
    ({"min_words": "5"}, "min_words"),
    ({"max_new_tokens": 1.5}, "max_new_tokens"),
])
def test_bad_settings_raise_one_line_naming_the_field(bad, field):
    with pytest.raises(GeneratorSettingsError, match=rf"^generator\.{field} must ") as error:
        GeneratorSettings(**bad)
    assert "\n" not in str(error.value)


def test_planned_steps_come_from_steps_or_epochs():
    assert GeneratorSettings(batch_size=2).planned_steps(60) == 30  # one epoch: 1 / q
    assert GeneratorSettings(batch_size=4, epochs=2.0).planned_steps(10) == 5
    assert GeneratorSettings(batch_size=8, epochs=1.0).planned_steps(5) == 1  # q capped at 1
    assert GeneratorSettings(batch_size=8, epochs=1.0).sample_rate(5) == 1.0
    assert GeneratorSettings(steps=7).planned_steps(1000) == 7
    assert GeneratorSettings(eps=float("inf")).private is False
    with pytest.raises(GeneratorSettingsError, match="at least one training example"):
        GeneratorSettings().planned_steps(0)


@pytest.mark.parametrize("text, finished, expected", [
    (" Mia gets on at station 3. At which station is she now?", True, None),
    (" Mia gets on at station 3. At which station is she now?", False, "unfinished"),
    (" ~ ## .. ", True, "empty"),
    (" Mia rides forward. Domain: travel | Question: where is she?", True, "marker"),
    (" Where is Mia?", True, "too_short"),
    (" Mia gets on at station 3 and rides and rides and rides on?", True, "too_long"),
    (" Mia gets on at station 3. She rides forward 4 stations.", True, "no_question_mark"),
])
def test_drop_reason_names_the_first_check_failed(text, finished, expected):
    settings = GeneratorSettings(min_words=4, max_words=12, require_question_mark=True)
    assert drop_reason(text, finished, settings) == expected


def test_sampling_is_reproducible_from_the_generator_and_every_drop_is_counted(llama):
    model, tokenizer = llama
    model.train()
    settings = GeneratorSettings(samples_per_condition=5, generation_batch=3, max_new_tokens=24, min_words=2,
                                 max_words=12, temperature=2.0)
    conditions = all_conditions(["travel", "cooking"])
    global_state = torch.random.get_rng_state()
    first = sample_questions(model, tokenizer, conditions, settings, torch.Generator().manual_seed(3))
    assert torch.equal(torch.random.get_rng_state(), global_state)
    assert model.training
    again = sample_questions(model, tokenizer, conditions, settings, torch.Generator().manual_seed(3))
    other = sample_questions(model, tokenizer, conditions, settings, torch.Generator().manual_seed(4))
    assert (again.samples, again.dropped) == (first.samples, first.dropped)
    assert (other.samples, other.dropped) != (first.samples, first.dropped)
    for result in (first, other):
        assert result.generated == 10
        assert len(result.samples) + sum(result.dropped.values()) == result.generated
        assert set(result.dropped) <= set(DROP_REASONS)
        assert Counter(sample.condition for sample in result.samples).keys() <= set(conditions)
    assert first.samples and first.dropped  # the checks both keep and drop here


def test_sampling_refuses_more_new_tokens_than_the_model_has_positions(llama):
    model, tokenizer = llama
    with pytest.raises(GeneratorSettingsError, match=r"^generator\.max_new_tokens must be <= 2\d\d"):
        sample_questions(model, tokenizer, [Condition("travel")], GeneratorSettings(max_new_tokens=256),
                         torch.Generator().manual_seed(0))
