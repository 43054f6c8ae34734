"""The built-in reasoning task: seeded multi-step arithmetic word problems on a ring of ten.

Every problem places a pointer on one of ten positions numbered zero to nine (stations of a
circle line, stalls of a round market, marks of an oven dial, digits of a safe's dial) and
moves it 2 to 4 times, one sentence each, in one of several domains (shopping, travel,
cooking, finance). All moves of a problem go the same way, forward (adding) or back
(subtracting), and the positions wrap around, so all arithmetic is modulo 10:

    question:  "A circle line has ten stations, from zero to nine. Mia gets on at station 3.
                She rides forward 8 stations. Then she travels ahead 4 stations.
                At which station is Mia now?"
    rationale: "3 + 8 = 1 . 1 + 4 = 5"
    answer:    "5"

Each single step is a lookup in a 10 x 10 table that a tiny model learns quickly. Because the
start and the moves are uniform and wrap around, the answer is uniform given any strict subset
of them: a model that answers directly gets no shortcut from, say, the last move, and has to
compose all steps at once. That is what a step-by-step rationale spells out.

The digits in a question are exactly the start and the move sizes, in order (every other
number is written in words). One direction per problem is a measured choice: when each move
had its own direction, tiny models needed several thousand more steps before they learned to
bind each move's direction word to its step.

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


RING_SIZE = 10

# Buckets of the question hash (mod 10) that belong to each split.
_SPLIT_BUCKETS: dict[str, frozenset[int]] = {
    "public": frozenset({0, 1}),
    "test": frozenset({2, 3}),
    "train": frozenset({4, 5, 6, 7, 8, 9}),
}
_SPLIT_STREAM_IDS = {"train": 0, "test": 1, "public": 2}
_MAX_DRAWS_PER_EXAMPLE = 1000

_PEOPLE: tuple[tuple[str, str], ...] = (
    # (name, subject pronoun)
    ("Mia", "she"), ("Ana", "she"), ("Zoe", "she"), ("Lea", "she"), ("Nora", "she"), ("Ella", "she"),
    ("Tom", "he"), ("Ben", "he"), ("Sam", "he"), ("Omar", "he"), ("Leo", "he"), ("Ivan", "he"),
)


@dataclass(frozen=True)
class _Domain:
    """Sentence templates of one domain.

    Placeholders: {name}, {subj} (subject pronoun), {place} and {places} (the place noun,
    singular and plural), {place_b} (the place noun agreeing with {b}), {a} (the start), {b} (a
    move). `setup` introduces the ring, `start` places the pointer at {a}, `steps` maps "+" and
    "-" to sentences moving it by {b} (the word just before {b} tells the direction), and `ask`
    is the question.
    """

    places: tuple[tuple[str, str], ...]  # (singular, plural)
    setup: tuple[str, ...]
    start: tuple[str, ...]
    steps: Mapping[str, tuple[str, ...]]
    ask: tuple[str, ...]


_DOMAIN_TEMPLATES: dict[str, _Domain] = {
    "shopping": _Domain(
        places=(("stall", "stalls"), ("shop", "shops")),
        setup=("A round market has ten {places}, from zero to nine.",
               "The {places} of a ring mall go from zero to nine."),
        start=("{name} starts at {place} {a}.", "{name} buys bread at {place} {a}."),
        steps={
            "+": ("{subj} walks clockwise {b} {place_b}.", "Then {subj} moves on {b} {place_b}."),
            "-": ("{subj} walks counterclockwise {b} {place_b}.", "Then {subj} turns back {b} {place_b}."),
        },
        ask=("At which {place} is {name} now?", "Where does {name} stop?"),
    ),
    "travel": _Domain(
        places=(("station", "stations"), ("stop", "stops")),
        setup=("A circle line has ten {places}, from zero to nine.",
               "A ring bus route has ten {places}, from zero to nine."),
        start=("{name} gets on at {place} {a}.", "{name} starts the trip at {place} {a}."),
        steps={
            "+": ("{subj} rides forward {b} {place_b}.", "Then {subj} travels ahead {b} {place_b}."),
            "-": ("{subj} rides back {b} {place_b}.", "Then {subj} goes back {b} {place_b}."),
        },
        ask=("At which {place} is {name} now?", "Where does {name} get off?"),
    ),
    "cooking": _Domain(
        places=(("mark", "marks"), ("notch", "notches")),
        setup=("The oven dial has ten {places}, from zero to nine.",
               "A round kitchen timer has ten {places}, from zero to nine."),
        start=("{name} sets it to {place} {a}.", "{name} begins to bake at {place} {a}."),
        steps={
            "+": ("{subj} turns it up {b} {place_b}.", "Then for the crust {subj} adds {b} {place_b}."),
            "-": ("{subj} turns it down {b} {place_b}.", "Then for the soup {subj} takes off {b} {place_b}."),
        },
        ask=("At which {place} is the dial now?", "Which {place} does {name} see now?"),
    ),
    "finance": _Domain(
        places=(("digit", "digits"), ("number", "numbers")),
        setup=("A safe has a round lock with ten {places}, from zero to nine.",
               "The bank vault wheel shows ten {places}, from zero to nine."),
        start=("{name} finds it at {place} {a}.", "{name} starts the code at {place} {a}."),
        steps={
            "+": ("{subj} spins it right {b} {place_b}.", "Then {subj} adds {b} {place_b} to the code."),
            "-": ("{subj} spins it left {b} {place_b}.", "Then {subj} takes away {b} {place_b}."),
        },
        ask=("At which {place} is the lock now?", "Which {place} does {name} read now?"),
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
    texts = [RATIONALE_STEP_SEPARATOR, "+ - ="]
    texts += [f"{name} {subj.capitalize()}" for name, subj in _PEOPLE]
    for spec in _DOMAIN_TEMPLATES.values():
        texts += [f"{singular} {plural}" for singular, plural in spec.places]
        for group in (spec.setup, spec.start, spec.ask, *spec.steps.values()):
            texts += [_capitalise(template) for template in group]
    words = {str(digit) for digit in range(RING_SIZE)}
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


def _draw_example(rng: np.random.Generator, domain: str, num_steps: int) -> Example:
    """Draw one problem of `domain` with exactly `num_steps` moves."""
    spec = _DOMAIN_TEMPLATES[domain]
    name, subj = _PEOPLE[int(rng.integers(len(_PEOPLE)))]
    singular, plural = spec.places[int(rng.integers(len(spec.places)))]

    def fill(template: str, **numbers: int) -> str:
        agreeing = {f"place_{key}": singular if value == 1 else plural for key, value in numbers.items()}
        return template.format(name=name, subj=subj, place=singular, places=plural, **agreeing, **numbers)

    value = int(rng.integers(RING_SIZE))
    sentences = [fill(_pick(rng, spec.setup)), fill(_pick(rng, spec.start), a=value)]
    steps = []
    symbol = "+" if rng.random() < 0.5 else "-"
    for _ in range(num_steps):
        move = int(rng.integers(1, RING_SIZE))
        result = (value + move) % RING_SIZE if symbol == "+" else (value - move) % RING_SIZE
        sentences.append(fill(_pick(rng, spec.steps[symbol]), b=move))
        steps.append(f"{value} {symbol} {move} = {result}")
        value = result
    sentences.append(fill(_pick(rng, spec.ask)))
    question = " ".join(_capitalise(sentence) for sentence in sentences)
    return Example(question=question, answer=str(value),
                   rationale=RATIONALE_STEP_SEPARATOR.join(steps), domain=domain)


def _capitalise(sentence: str) -> str:
    return sentence[0].upper() + sentence[1:]
