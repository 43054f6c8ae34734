"""The built-in reasoning task: seeded multi-step arithmetic word problems.

Every problem starts from a small quantity and applies 2 to 4 operations, one sentence each,
in one of several domains (shopping, travel, cooking, finance). Each single step stays in the
digits 0..9 so that a tiny model can learn it; what makes the task hard is composing the
steps, which is exactly what a step-by-step rationale spells out:

    question:  "Mia has 3 apples. She buys 4 more apples. Then she returns 2 apples.
                How many apples does Mia have now?"
    rationale: "3 + 4 = 7 . 7 - 2 = 5"
    answer:    "5"

Splits ("train", "test", "public") are disjoint by construction: a question belongs to the
split chosen by a SHA-256 hash of its text, and a draw that hashes to another split is
rejected, so the server's public data never overlaps any client's training data or the test
set, whatever seeds are used.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Split = Literal["train", "test", "public"]


@dataclass(frozen=True)
class Example:
    """One task item: a question, its gold answer, and optionally a rationale and choices."""

    question: str
    answer: str
    rationale: str | None = None
    domain: str = "general"
    choices: tuple[str, ...] | None = None


# Every intermediate value stays in 0..9; multiplications and divisions use these operands.
_MIN_VALUE, _MAX_VALUE = 0, 9
_MULTIPLIERS = (2, 3, 4)

# Buckets of the question hash (mod 10) that belong to each split.
_SPLIT_BUCKETS: dict[str, frozenset[int]] = {
    "public": frozenset({0, 1}),
    "test": frozenset({2, 3}),
    "train": frozenset({4, 5, 6, 7, 8, 9}),
}
_SPLIT_STREAM_IDS = {"train": 0, "test": 1, "public": 2}
_MAX_DRAWS_PER_EXAMPLE = 1000

_PEOPLE: tuple[tuple[str, str, str], ...] = (
    # (name, subject pronoun, object pronoun)
    ("Mia", "she", "her"), ("Ana", "she", "her"), ("Zoe", "she", "her"), ("Lea", "she", "her"),
    ("Nora", "she", "her"), ("Ella", "she", "her"), ("Tom", "he", "him"), ("Ben", "he", "him"),
    ("Sam", "he", "him"), ("Omar", "he", "him"), ("Leo", "he", "him"), ("Ivan", "he", "him"),
)


@dataclass(frozen=True)
class _Domain:
    """Sentence templates of one domain.

    Placeholders: {name}, {subj} (pronoun), {obj} (object pronoun), {a}, {b}, {items}
    (plural noun), {item_a} and {item_b} (the noun in the number agreeing with {a} or {b}).
    `start` gives the first quantity {a}; `start_product` gives {a} groups of {b}; each entry
    of `steps` maps an operation symbol to sentences with exactly one number, the operand {b}.
    """

    items: tuple[tuple[str, str], ...]  # (singular, plural)
    start: tuple[str, ...]
    start_product: tuple[str, ...]
    steps: Mapping[str, tuple[str, ...]]
    ask: tuple[str, ...]


_DOMAIN_TEMPLATES: dict[str, _Domain] = {
    "shopping": _Domain(
        items=(("apple", "apples"), ("pen", "pens"), ("book", "books"), ("shirt", "shirts"),
               ("cup", "cups"), ("candle", "candles"), ("plate", "plates"), ("sock", "socks")),
        start=("{name} has {a} {item_a}.", "{name} puts {a} {item_a} in a cart."),
        start_product=("{name} buys {a} packs of {b} {items}.",
                       "{name} picks {a} boxes with {b} {items} in each box."),
        steps={
            "+": ("{subj} buys {b} more {item_b}.", "A friend gives {obj} {b} more {item_b}."),
            "-": ("{subj} returns {b} {item_b}.", "{subj} puts back {b} {item_b}."),
            "*": ("The shop fills the order {b} times over.",),
            "/": ("{subj} splits the {items} into {b} equal bags and keeps one bag.",),
        },
        ask=("How many {items} does {name} have now?", "How many {items} are in the cart now?"),
    ),
    "travel": _Domain(
        items=(("passenger", "passengers"), ("tourist", "tourists"), ("hiker", "hikers"),
               ("student", "students")),
        start=("A bus leaves with {a} {item_a}.", "A boat starts the trip with {a} {item_a}."),
        start_product=("{a} vans each carry {b} {items} to the station.",
                       "{a} cars bring {b} {items} each to the port."),
        steps={
            "+": ("At the next stop the driver picks up {b} more {item_b}.",
                  "Then the group welcomes {b} more {item_b}."),
            "-": ("At the next stop the driver drops off {b} {item_b}.",
                  "Then the guide sends {b} {item_b} home."),
            "*": ("At the big station the group grows to {b} times its size.",),
            "/": ("The group splits into {b} equal teams and only one team stays.",),
        },
        ask=("How many {items} are on the trip now?", "How many {items} travel on now?"),
    ),
    "cooking": _Domain(
        items=(("egg", "eggs"), ("carrot", "carrots"), ("lemon", "lemons"), ("onion", "onions"),
               ("potato", "potatoes"), ("tomato", "tomatoes")),
        start=("{name} has {a} {item_a} in the bowl.", "{name} puts {a} {item_a} on the table."),
        start_product=("{name} makes {a} dishes with {b} {items} in each dish.",
                       "{name} opens {a} bags of {b} {items}."),
        steps={
            "+": ("{subj} adds {b} more {item_b}.", "A neighbor brings {obj} {b} more {item_b}."),
            "-": ("{subj} drops {b} {item_b}.", "{subj} uses {b} {item_b} for the soup."),
            "*": ("{subj} makes the recipe {b} times bigger.",),
            "/": ("{subj} splits the {items} into {b} equal piles and keeps one pile.",),
        },
        ask=("How many {items} does {name} have now?", "How many {items} are left for {name}?"),
    ),
    "finance": _Domain(
        items=(("dollar", "dollars"), ("euro", "euros"), ("coin", "coins")),
        start=("{name} has {a} {item_a}.", "{name} saves {a} {item_a}."),
        start_product=("{name} saves for {a} weeks and puts away {b} {items} each week.",
                       "{name} sells {a} drawings for {b} {items} each."),
        steps={
            "+": ("{subj} earns {b} more {item_b}.", "A friend pays {obj} back {b} {item_b}."),
            "-": ("{subj} spends {b} {item_b} on lunch.", "{subj} pays {b} {item_b} for a ticket."),
            "*": ("An investment makes the money grow {b} times.",),
            "/": ("{subj} splits the money into {b} equal parts and keeps one part.",),
        },
        ask=("How many {items} does {name} have now?", "How many {items} are left for {name}?"),
    ),
}

DOMAINS: tuple[str, ...] = tuple(_DOMAIN_TEMPLATES)
MAX_STEPS = 6
RATIONALE_STEP_SEPARATOR = " . "
_PLACEHOLDER = re.compile(r"\{\w+\}")
_WORD = re.compile(r"[A-Za-z]+|[^\sA-Za-z]")


def split_of(question: str) -> Split:
    """The split a question belongs to, from a stable SHA-256 hash of its text."""
    bucket = int.from_bytes(hashlib.sha256(question.encode("utf-8")).digest()[:8], "big") % 10
    for split, buckets in _SPLIT_BUCKETS.items():
        if bucket in buckets:
            return split  # type: ignore[return-value]
    raise AssertionError(f"bucket {bucket} has no split")


def vocabulary_words() -> list[str]:
    """Every word, digit, operator and punctuation mark the generator can write, sorted."""
    texts = [RATIONALE_STEP_SEPARATOR, "+ - * / ="]
    texts += [f"{name} {subj.capitalize()} {obj}" for name, subj, obj in _PEOPLE]
    for spec in _DOMAIN_TEMPLATES.values():
        texts += [f"{singular} {plural}" for singular, plural in spec.items]
        for group in (spec.start, spec.start_product, spec.ask, *spec.steps.values()):
            texts += [_capitalise(template) for template in group]
    words = set(map(str, range(10)))
    for text in texts:
        words.update(_WORD.findall(_PLACEHOLDER.sub(" ", text)))
    return sorted(words)


def generate_examples(
    n: int,
    seed: int | Sequence[int],
    split: Split = "train",
    domain_weights: Mapping[str, float] | None = None,
    min_steps: int = 2,
    max_steps: int = 4,
) -> list[Example]:
    """Generate `n` word problems of `split`, deterministic in all arguments.

    `seed` may be an int or a sequence of ints (e.g. (seed, client_id)). `domain_weights`
    maps domain names to non-negative weights (missing domains get 0; None = uniform).
    Each problem needs between `min_steps` and `max_steps` arithmetic operations.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if split not in _SPLIT_STREAM_IDS:
        raise ValueError(f"split must be one of {sorted(_SPLIT_STREAM_IDS)}, got {split!r}")
    if not 1 <= min_steps <= max_steps <= MAX_STEPS:
        raise ValueError(
            f"need 1 <= min_steps <= max_steps <= {MAX_STEPS}, got min_steps={min_steps}, "
            f"max_steps={max_steps}"
        )
    probabilities = _domain_probabilities(domain_weights)
    seed_words = [seed] if isinstance(seed, (int, np.integer)) else list(seed)
    rng = np.random.default_rng(np.random.SeedSequence([*seed_words, _SPLIT_STREAM_IDS[split]]))
    examples = []
    for _ in range(n):
        for _attempt in range(_MAX_DRAWS_PER_EXAMPLE):
            domain = DOMAINS[int(rng.choice(len(DOMAINS), p=probabilities))]
            example = _draw_example(rng, domain, int(rng.integers(min_steps, max_steps + 1)))
            if split_of(example.question) == split:
                examples.append(example)
                break
        else:
            raise RuntimeError(f"could not draw a {split} example in {_MAX_DRAWS_PER_EXAMPLE} tries")
    return examples


def _domain_probabilities(domain_weights: Mapping[str, float] | None) -> np.ndarray:
    if domain_weights is None:
        return np.full(len(DOMAINS), 1.0 / len(DOMAINS))
    unknown = sorted(set(domain_weights) - set(DOMAINS))
    if unknown:
        raise ValueError(f"unknown domain(s) {unknown} in domain_weights; known: {list(DOMAINS)}")
    weights = np.array([float(domain_weights.get(d, 0.0)) for d in DOMAINS])
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"domain_weights must be finite, >= 0 and not all 0, got {dict(domain_weights)}")
    return weights / weights.sum()


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _feasible_steps(value: int) -> list[tuple[str, list[int]]]:
    """Operations (symbol, allowed operands) that keep the value in 0..9."""
    steps = []
    if value < _MAX_VALUE:
        steps.append(("+", list(range(1, _MAX_VALUE - value + 1))))
    if value > _MIN_VALUE:
        steps.append(("-", list(range(1, value + 1))))
    multipliers = [m for m in _MULTIPLIERS if value >= 1 and value * m <= _MAX_VALUE]
    if multipliers:
        steps.append(("*", multipliers))
    divisors = [d for d in _MULTIPLIERS if value >= d and value % d == 0]
    if divisors:
        steps.append(("/", divisors))
    return steps


def _apply(value: int, symbol: str, operand: int) -> int:
    if symbol == "+":
        return value + operand
    if symbol == "-":
        return value - operand
    if symbol == "*":
        return value * operand
    return value // operand


def _draw_example(rng: np.random.Generator, domain: str, num_steps: int) -> Example:
    """Draw one problem of `domain` with exactly `num_steps` operations."""
    spec = _DOMAIN_TEMPLATES[domain]
    name, subj, obj = _PEOPLE[int(rng.integers(len(_PEOPLE)))]
    singular, plural = spec.items[int(rng.integers(len(spec.items)))]
    fields = {"name": name, "subj": subj, "obj": obj, "items": plural}

    def noun(count: int) -> str:
        return singular if count == 1 else plural

    sentences, steps = [], []
    if rng.random() < 0.25:
        a = int(rng.integers(2, 5))
        factors = [m for m in range(2, _MAX_VALUE + 1) if a * m <= _MAX_VALUE]
        b = factors[int(rng.integers(len(factors)))]
        value = a * b
        sentences.append(_pick(rng, spec.start_product).format(**fields, a=a, b=b))
        steps.append(f"{a} * {b} = {value}")
    else:
        value = int(rng.integers(1, _MAX_VALUE + 1))
        sentences.append(_pick(rng, spec.start).format(**fields, a=value, item_a=noun(value)))
    while len(steps) < num_steps:
        symbol, operands = _pick_step(rng, _feasible_steps(value))
        operand = operands[int(rng.integers(len(operands)))]
        result = _apply(value, symbol, operand)
        sentences.append(_pick(rng, spec.steps[symbol]).format(**fields, b=operand, item_b=noun(operand)))
        steps.append(f"{value} {symbol} {operand} = {result}")
        value = result
    sentences.append(_pick(rng, spec.ask).format(**fields))
    question = " ".join(_capitalise(s) for s in sentences)
    return Example(question=question, answer=str(value),
                   rationale=RATIONALE_STEP_SEPARATOR.join(steps), domain=domain)


def _pick_step(rng: np.random.Generator, steps: list[tuple[str, list[int]]]) -> tuple[str, list[int]]:
    return steps[int(rng.integers(len(steps)))]


def _capitalise(sentence: str) -> str:
    return sentence[0].upper() + sentence[1:]
